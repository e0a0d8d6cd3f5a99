"""ROUGE-1/2/L F-measures exactly as rouge-score's ``RougeScorer`` (same tokens, same integer counts, so the
same floats): tokens and unigram counts memoised per text, bigram matches counted on the shared words,
the LCS length by a bit-parallel algorithm."""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

from rad3d_pipeline.evaluation.text_metrics.memo import clipped_matches, common_runs, count, on_clear, per_text
from rad3d_pipeline.evaluation.text_metrics.tokenizers import rouge_tokens

# (tokens, unigram counts, unigram total, bigram total): untracked by the garbage collector
RougeText = tuple[tuple[str, ...], dict[str, int], int, int]


@functools.cache
def library_scorer(use_stemmer: bool) -> Any:
    """rouge-score's own scorer: what ``cache=False`` uses, and the definition the cached path reproduces."""
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(["rouge1", "rouge2", "rougeL"], use_stemmer=use_stemmer)


on_clear(library_scorer.cache_clear)


def make_rouge_text(tokens: tuple[str, ...]) -> RougeText:
    return tokens, count(tokens), len(tokens), max(len(tokens) - 1, 0)


def token_masks(tokens: Sequence[str]) -> dict[str, int]:
    """Bit ``i`` set in ``masks[token]`` where ``tokens[i] == token`` (the LCS's reference side)."""
    masks: dict[str, int] = {}
    for i, token in enumerate(tokens):
        masks[token] = masks.get(token, 0) | (1 << i)
    return masks


_TEXTS = {
    stemmed: per_text(lambda text, stemmed=stemmed: make_rouge_text(rouge_tokens(text, stemmed)))  # type: ignore[misc]
    for stemmed in (False, True)
}
_MASKS = {
    stemmed: per_text(lambda text, stemmed=stemmed: token_masks(_TEXTS[stemmed](text)[0]))  # type: ignore[misc]
    for stemmed in (False, True)
}


def rouge_text(text: str, use_stemmer: bool) -> RougeText:
    return _TEXTS[use_stemmer](text)


def fmeasure(precision: float, recall: float) -> float:
    """rouge_score.scoring.fmeasure."""
    if precision + recall > 0:
        return 2 * precision * recall / (precision + recall)
    return 0.0


def _f(matched: int, target_total: int, prediction_total: int) -> float:
    """rouge_score.rouge_scorer._score_ngrams(...).fmeasure from the clipped match count and the totals."""
    return fmeasure(matched / max(prediction_total, 1), matched / max(target_total, 1))


def lcs_length(target: Sequence[str], prediction: Sequence[str]) -> int:
    """Length of the longest common subsequence (bit-parallel, Crochemore et al. 2001)."""
    return lcs_masks(token_masks(target), len(target), prediction)


def lcs_masks(masks: dict[str, int], n: int, prediction: Sequence[str]) -> int:
    """LCS length of the target behind ``masks`` (``n`` tokens) and ``prediction``.

    A prediction token the target lacks leaves the state unchanged (u = 0), so it is skipped.
    """
    full = (1 << n) - 1
    v = full
    get = masks.get
    for token in prediction:
        m = get(token)
        if m:
            u = v & m
            v = ((v + u) | (v - u)) & full
    return n - v.bit_count()


def rouge_f(reference: str, prediction: str, use_stemmer: bool = True) -> tuple[float, float, float]:
    """(rouge1, rouge2, rougeL) F-measures exactly as ``RougeScorer(..., use_stemmer).score(reference, prediction)``."""
    return rouge_scores(
        rouge_text(reference, use_stemmer), rouge_text(prediction, use_stemmer), _MASKS[use_stemmer], reference
    )


def rouge1_f(reference: str, prediction: str, use_stemmer: bool = False) -> float:
    """The ROUGE-1 F-measure of :func:`rouge_f` alone."""
    _, t_counts, t_total, _ = rouge_text(reference, use_stemmer)
    _, p_counts, p_total, _ = rouge_text(prediction, use_stemmer)
    matched = sum([min(t_counts[w], p_counts[w]) for w in t_counts.keys() & p_counts.keys()])
    return _f(matched, t_total, p_total)


def rouge_scores(
    target: RougeText, prediction: RougeText, masks: Callable[[str], dict[str, int]], reference: str
) -> tuple[float, float, float]:
    """(rouge1, rouge2, rougeL) of two records; ``masks(reference)`` gives the target's LCS bit masks.

    Words the two texts do not share match nothing: no shared word, all three are 0.
    """
    t_tokens, t_counts, t_total1, t_total2 = target
    p_tokens, p_counts, p_total1, p_total2 = prediction
    common = t_counts.keys() & p_counts.keys()
    if not common:
        return 0.0, 0.0, 0.0
    matched = sum([min(t_counts[w], p_counts[w]) for w in common])
    rouge1 = _f(matched, t_total1, p_total1)
    p_runs = common_runs(p_tokens, common) if matched > 1 else []  # a shared bigram takes two matched words
    rouge2 = _f(clipped_matches(p_runs, common_runs(t_tokens, common), 2), t_total2, p_total2) if p_runs else 0.0
    lcs = lcs_masks(masks(reference), len(t_tokens), p_tokens)
    return rouge1, rouge2, fmeasure(lcs / len(p_tokens), lcs / len(t_tokens))

"""Per-pair scorers of both protocols (what the worker pool runs): the cached paths from memoised per-text
records, and with ``cache=False`` the libraries' own functions (the benchmarks' procedures)."""

from __future__ import annotations

from collections.abc import Callable, Sequence

from rad3d_pipeline.evaluation.text_metrics.bleu import (
    BleuText,
    hf_bleu,
    make_bleu_text,
    sacrebleu_segment_stats,
    segment_stats,
)
from rad3d_pipeline.evaluation.text_metrics.memo import gc_paused, per_text
from rad3d_pipeline.evaluation.text_metrics.meteor_score import meteor_lowercase, meteor_of
from rad3d_pipeline.evaluation.text_metrics.rouge import (
    RougeText,
    library_scorer,
    make_rouge_text,
    rouge1_f,
    rouge_scores,
    token_masks,
)
from rad3d_pipeline.evaluation.text_metrics.tokenizers import rouge_tokens, word_tokenize, word_tokenize_uncached

Pair = tuple[str, str]  # (prediction, reference)


def spatial_pair(prediction: str, reference: str, cache: bool) -> tuple[float, ...]:
    """CT-SpatialVQA's per-pair values: (rouge1, rouge2, rougeL, meteor)."""
    if cache:
        return spatial_pair_with_bleu(prediction, reference, cache)[:4]
    scores = library_scorer(True).score(reference, prediction)
    rouge = (scores["rouge1"].fmeasure, scores["rouge2"].fmeasure, scores["rougeL"].fmeasure)
    return (*(float(v) for v in rouge), meteor_of(reference.split(), prediction.split(), cache))


def rad3d_pair(prediction: str, reference: str, cache: bool) -> tuple[float, ...]:
    """3D-RAD's per-pair values: (HF BLEU-1, ROUGE-1, METEOR on ``word_tokenize`` tokens)."""
    if cache:
        rouge1 = rouge1_f(reference, prediction, use_stemmer=False)
        ref_tokens, pred_tokens = word_tokenize(reference), word_tokenize(prediction)
    else:
        rouge1 = library_scorer(False).score(reference, prediction)["rouge1"].fmeasure
        ref_tokens, pred_tokens = word_tokenize_uncached(reference), word_tokenize_uncached(prediction)
    bleu = hf_bleu(prediction, reference, max_order=1, cache=cache)
    return (bleu, float(rouge1), meteor_of(ref_tokens, pred_tokens, cache))


# One text as the spatial protocol reads it: its sacreBLEU record, its rouge-score record (Porter
# stems) and METEOR's lowercase whitespace tokens, made once per distinct text.
SpatialText = tuple[BleuText, RougeText, tuple[str, ...]]
spatial_text: Callable[[str], SpatialText] = per_text(
    lambda text: (make_bleu_text(text), make_rouge_text(rouge_tokens(text, True)), tuple(text.lower().split()))
)
spatial_masks = per_text(lambda text: token_masks(spatial_text(text)[1][0]))


def spatial_pair_with_bleu(prediction: str, reference: str, cache: bool) -> tuple[float, ...]:
    """:func:`spatial_pair` and then sacreBLEU's segment statistics of the pair, from one record per text."""
    if not cache:
        return (*spatial_pair(prediction, reference, cache), *sacrebleu_segment_stats(prediction, reference))
    hyp_bleu, hyp_rouge, hyp_words = spatial_text(prediction)
    ref_bleu, ref_rouge, ref_words = spatial_text(reference)
    return (
        *rouge_scores(ref_rouge, hyp_rouge, spatial_masks, reference),
        meteor_lowercase(ref_words, hyp_words),
        *segment_stats(hyp_bleu, ref_bleu),
    )


PAIR_SCORERS: dict[str, Callable[[str, str, bool], tuple[float, ...]]] = {
    "spatial": spatial_pair,
    "3drad": rad3d_pair,
    "spatial+bleu": spatial_pair_with_bleu,  # internal: spatial_metrics's one pass over the pairs
}


def score_chunk(scorer: str, pairs: Sequence[Pair], cache: bool) -> list[tuple[float, ...]]:
    """``PAIR_SCORERS[scorer]`` of every pair, in order (what one worker runs on one chunk)."""
    score = PAIR_SCORERS[scorer]
    with gc_paused():
        return [score(p, r, cache) for p, r in pairs]

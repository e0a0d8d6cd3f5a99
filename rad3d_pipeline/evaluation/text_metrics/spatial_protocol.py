"""CT-SpatialVQA's text metrics (its ``evaluate_text_metrics.py``), reproduced to the last digit.

Lowercase (optional) and strip both texts, drop rows whose answer is empty; sacreBLEU ``corpus_bleu``
with its default 13a tokenizer (0-100 scale) -> ``bleu``; rouge-score rouge1/rouge2/rougeL F-measure
with the Porter stemmer, mean over rows -> ``rouge1_f``, ``rouge2_f``, ``rougeL_f``; NLTK
``meteor_score`` on whitespace tokens, mean over rows -> ``meteor``; cosine of L2-normalised
all-MiniLM-L6-v2 embeddings, mean over rows (float32, as the benchmark computes it) -> ``sbert_cosine``;
and ``count``. Means are ``numpy.mean``'s over the per-row values in row order (reproduced without
importing numpy, :func:`~rad3d_pipeline.evaluation.text_metrics.memo.numpy_mean`), which gives the published
numbers bit for bit. Without SBERT nothing heavy is imported (no numpy, NLTK, sacreBLEU or torch).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rad3d_pipeline.evaluation.text_metrics.bleu import bleu_from_statistics, corpus_bleu
from rad3d_pipeline.evaluation.text_metrics.memo import gc_paused, numpy_mean
from rad3d_pipeline.evaluation.text_metrics.pool import score_all, score_pairs

if TYPE_CHECKING:
    from rad3d_pipeline.evaluation.embeddings import SentenceEmbedder

SPATIAL_METRIC_NAMES = ("count", "bleu", "rouge1_f", "rouge2_f", "rougeL_f", "meteor", "sbert_cosine")
_PER_ROW = ("rouge1_f", "rouge2_f", "rougeL_f", "meteor")


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
    # The pairs, per-row tuples and per-text records are acyclic: reference counting frees them all,
    # and collector passes over them while they are being made would cost a tenth of the time.
    with gc_paused():
        pairs = list(zip(preds, refs, strict=True))
        if cache:
            # one pass over the distinct pairs (spread over the workers) gives ROUGE, METEOR and the
            # BLEU segment statistics, which are summed over the rows into sacreBLEU's corpus score
            rows = score_all("spatial+bleu", pairs, workers=workers, cache=True)
            columns = list(zip(*rows, strict=True))
            result["bleu"] = bleu_from_statistics([sum(column) for column in columns[4:]])  # integers: exact
        else:
            result["bleu"] = corpus_bleu(preds, refs, cache=False)
            columns = list(zip(*score_pairs("spatial", pairs, workers=workers, cache=False), strict=True))
        for name, column in zip(_PER_ROW, columns, strict=False):
            result[name] = numpy_mean(column)  # numpy.mean's float64 pairwise sum, in row order
    if sbert:
        import numpy as np

        from rad3d_pipeline.evaluation.embeddings import SentenceEmbedder

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

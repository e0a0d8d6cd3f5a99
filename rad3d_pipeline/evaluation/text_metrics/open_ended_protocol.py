"""3D-RAD's open-ended metrics (its M3D ``eval_3DRAD.py``), per row and averaged.

Strip both texts, skip rows whose prediction is empty; per row: Hugging Face ``evaluate`` BLEU with
``max_order=1`` (TensorFlow NMT ``compute_bleu``, ``smooth=False``, 13a tokens), ROUGE-1 F (rouge-score,
no stemmer), METEOR (NLTK, ``word_tokenize`` tokens) and BERTScore F1 (``lang="en"`` means roberta-large,
layer 17; the model is a setting, see :class:`~rad3d_pipeline.evaluation.text_metrics.bertscore.BertScoreF1`); then
the mean over rows. Plus exact-match accuracy (lowercase, punctuation removed) over all rows.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from rad3d_pipeline.evaluation.text_metrics.bertscore import BertScoreF1
from rad3d_pipeline.evaluation.text_metrics.memo import numpy_mean
from rad3d_pipeline.evaluation.text_metrics.pool import score_pairs
from rad3d_pipeline.evaluation.text_metrics.tokenizers import meteor_tokenizer_label

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
        return numpy_mean([v for v in values if v is not None])

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

"""Prediction files from anywhere, read without pandas: the columns each protocol needs, one-line errors.

The spatial protocol's whole path (read, check, score) lives here and in :mod:`text_metrics`, so that
``rad3d evaluate --protocol spatial`` starts in a fraction of a second; :mod:`metrics` builds the 3D-RAD
protocol's frames on top of :func:`read_checked_table`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from rad3d_pipeline.common.errors import InputFileError
from rad3d_pipeline.common.table_files import TableRows, read_table_rows
from rad3d_pipeline.evaluation import text_metrics as tm


class PredictionFileError(InputFileError, ValueError):
    """A predictions file that cannot be scored as it stands; the message (one line) names the file and
    the line (JSONL, CSV) or row (Parquet) where there is one."""


# Column names accepted for the release fields (the predictions asset's, the release CSVs', snake case).
_ALIASES: dict[str, tuple[str, ...]] = {
    "Question": ("Question", "question"),
    "Answer": ("Answer", "answer", "reference", "ground_truth"),
    "prediction": ("prediction", "pred", "output", "generated"),
    "Task": ("Task", "task"),
    "Subtask": ("Subtask", "subtask"),
    "subtask_name": ("subtask_name", "Subtask_name", "subtask_label"),
    "QuestionType": ("QuestionType", "question_type"),
    "AnswerChoice": ("AnswerChoice", "answer_choice", "answer_letter"),
    "VolumeName": ("VolumeName", "volume", "image_path"),
    "model": ("model",),
    "category": ("category",),
}
# Every predictions file needs these (release name -> the name an error message uses).
_REQUIRED = {"prediction": "prediction", "Answer": "answer", "Question": "question"}
_TEXT_COLUMNS = ("Question", "Answer", "prediction")


def _text(value: object) -> str:
    """``str(value or "")`` as the companion benchmark reads its JSONL (None and missing become "")."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    return str(value or "")


def read_checked_table(path: str | Path) -> tuple[TableRows, dict[str, str]]:
    """The rows of a predictions file and its column for each release column; the required ones checked."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: predictions file not found")
    table = read_table_rows(path, error=PredictionFileError)
    sources = {name: found for name in _ALIASES if (found := _source_column(name, table.columns)) is not None}
    missing = [name for name in _REQUIRED if name not in sources]
    if missing:
        accepted = "; ".join(f"{_REQUIRED[name]}: {', '.join(_ALIASES[name])}" for name in missing)
        raise PredictionFileError(
            f"{path}: no {' or '.join(repr(_REQUIRED[name]) for name in missing)} column "
            f"(columns found: {', '.join(map(str, table.columns))}; accepted names, {accepted})"
        )
    return table, sources


def _source_column(name: str, columns: Iterable[Any]) -> str | None:
    """The file's column for release column ``name``: the first of its aliases present."""
    present = set(columns)
    return next((alias for alias in _ALIASES[name] if alias in present), None)


def read_prediction_pairs(path: str | Path) -> tuple[list[str], list[str]]:
    """(predictions, answers) of a predictions file: :func:`read_rows`'s two columns, read without pandas."""
    table, sources = read_checked_table(path)
    predictions, answers = sources["prediction"], sources["Answer"]
    return [_text(r.get(predictions)) for r in table.records], [_text(r.get(answers)) for r in table.records]


def load_spatial_pairs(path: str | Path) -> tuple[list[str], list[str]]:
    """(predictions, answers) of a predictions file checked for the spatial protocol: the columns, and no
    empty answer (an empty reference is an input error naming its line)."""
    path = Path(path)
    table, sources = read_checked_table(path)
    predictions = [_text(r.get(sources["prediction"])) for r in table.records]
    answers = [_text(r.get(sources["Answer"])) for r in table.records]
    empty = [i for i, answer in enumerate(answers) if not answer.strip()]
    if empty:
        more = f" ({len(empty)} rows like this)" if len(empty) > 1 else ""
        raise PredictionFileError(f"{path}: {table.places[empty[0]]}: empty answer{more}")
    return predictions, answers


def spatial_file_metrics(
    path: str | Path,
    *,
    lowercase: bool = True,
    metrics: Sequence[str] = ("bleu", "rouge", "meteor", "sbert"),
    workers: int = 1,
    embedder: tm.SentenceEmbedder | None = None,
) -> dict[str, float]:
    """CT-SpatialVQA's metrics of one predictions file (JSONL/CSV/Parquet with ``answer`` and ``prediction``),
    checked first by :func:`load_predictions`."""
    predictions, answers = load_spatial_pairs(path)
    return spatial_metrics_of(
        predictions,
        answers,
        lowercase=lowercase,
        metrics=metrics,
        workers=workers,
        embedder=embedder,
    )


def spatial_metrics_of(
    predictions: list[str],
    answers: list[str],
    *,
    lowercase: bool = True,
    metrics: Sequence[str] = ("bleu", "rouge", "meteor", "sbert"),
    workers: int = 1,
    embedder: tm.SentenceEmbedder | None = None,
) -> dict[str, float]:
    """CT-SpatialVQA's metrics of (prediction, answer) pairs, the keys of the ``metrics`` chosen and ``count``."""
    result = tm.spatial_metrics(
        predictions,
        answers,
        lowercase=lowercase,
        sbert="sbert" in metrics,
        embedder=embedder,
        workers=workers,
    )
    keep = {"count"}
    keep |= {"bleu"} if "bleu" in metrics else set()
    keep |= {"rouge1_f", "rouge2_f", "rougeL_f"} if "rouge" in metrics else set()
    keep |= {"meteor"} if "meteor" in metrics else set()
    keep |= {"sbert_cosine"} if "sbert" in metrics else set()
    return {k: v for k, v in result.items() if k in keep}

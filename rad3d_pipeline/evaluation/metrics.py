"""The metric engine: per-sample scores and metric tables (model x task x subtask), versioned protocols.

Input is a predictions frame with the release's columns (``model``, ``Task``, ``Subtask``,
``subtask_name``, ``QuestionType``, ``Question``, ``Answer``, ``AnswerChoice``, optionally
``Choice A``-``Choice D``) and ``prediction``. Every row is scored once:

* open questions (``QuestionType == "Open"``), protocol ``3drad``: BLEU-1 (HF evaluate),
  ROUGE-1, METEOR and BERTScore F1 per sample, empty predictions skipped
  (:func:`rad3d_pipeline.evaluation.text_metrics.open_ended_samples`); exact match over all rows;
* closed questions: 3D-RAD's rule (``"<letter>."`` occurs in the output) and the stricter
  parsed-choice rule (:mod:`rad3d_pipeline.evaluation.closed_choice`);
* beside each figure that reproduces an author's quirk, the strict figure (``*_strict``): open
  text metrics with an empty prediction scored 0 instead of skipped, and the letter rule with a
  reply that names several letters wrong (:func:`rad3d_pipeline.evaluation.closed_choice.strict_correct`),
  so the inflation shows; an empty prediction is never an exact match;
* optionally, on open questions, the LLM jury's verdict (:mod:`rad3d_pipeline.evaluation.jury`) and AlignScore.

:func:`metric_table` averages per model x task x subtask; :func:`task_summary` gives the
macro average over subtasks per model x task (what the 3D-RAD paper reports). Identical
(prediction, reference) pairs across models are scored once by the text-metric layer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from rad3d_pipeline.common.table_files import TableRows
from rad3d_pipeline.evaluation import text_metrics as tm
from rad3d_pipeline.evaluation.closed_choice import LETTERS, m3d_correct, parsed_correct, strict_correct
from rad3d_pipeline.evaluation.prediction_files import (
    _TEXT_COLUMNS,
    _text,
    read_checked_table,
)
from rad3d_pipeline.evaluation.prediction_files import PredictionFileError as PredictionFileError
from rad3d_pipeline.evaluation.prediction_files import load_spatial_pairs as load_spatial_pairs
from rad3d_pipeline.evaluation.prediction_files import read_prediction_pairs as read_prediction_pairs
from rad3d_pipeline.evaluation.prediction_files import spatial_file_metrics as spatial_file_metrics
from rad3d_pipeline.evaluation.prediction_files import spatial_metrics_of as spatial_metrics_of
from rad3d_pipeline.evaluation.protocol_versions import PROTOCOL_VERSIONS as PROTOCOL_VERSIONS

GROUP_KEYS = ("model", "Task", "Subtask", "subtask_name", "QuestionType")
OPEN_METRICS = ("bleu", "rouge1", "meteor", "bertscore_f1")
CLOSED_METRICS = ("accuracy", "parsed_accuracy")
# The strict figure beside each reproduced quirk: empty open predictions score 0 (3D-RAD skips them),
# a closed reply naming several letters is wrong (3D-RAD's "<letter>." anywhere counts it correct).
STRICT_METRICS = tuple(f"{name}_strict" for name in (*OPEN_METRICS, "accuracy"))
SAMPLE_METRICS = (*OPEN_METRICS, "exact_match", *CLOSED_METRICS, *STRICT_METRICS, "jury_correct", "alignscore")
TABLE_COLUMNS = (
    *GROUP_KEYS,
    "n",
    "n_scored",
    "skipped_empty",
    *OPEN_METRICS,
    "exact_match",
    *CLOSED_METRICS,
    *STRICT_METRICS,
    "jury_accuracy",
    "alignscore",
    "bertscore_model",
    "jury",
    "alignscore_model",
    "protocol",
    "protocol_version",
)
REQUIRED_COLUMNS = ("model", "Task", "Subtask", "QuestionType", "Question", "Answer", "prediction")


@dataclass(frozen=True)
class EngineOptions:
    """What to compute. ``bertscore``: a configured scorer, True (default resolution) or False (skip)."""

    bertscore: bool | tm.BertScoreF1 = True
    workers: int = 1
    jury: Callable[[pd.DataFrame], list[bool | None]] | None = None  # per-row verdicts, see jury.Jury
    jury_label: str = ""
    alignscore: Callable[[list[str], list[str]], list[float]] | None = None  # (contexts, claims) -> scores
    alignscore_label: str = ""


def _check_columns(frame: pd.DataFrame) -> None:
    missing = [c for c in REQUIRED_COLUMNS if c not in frame.columns]
    if missing:
        raise ValueError(f"predictions table lacks column(s) {', '.join(missing)}")


def _choices(frame: pd.DataFrame) -> list[dict[str, str]]:
    columns = [f"Choice {letter}" for letter in LETTERS]
    if not all(c in frame.columns for c in columns):
        return [{} for _ in range(len(frame))]
    values = frame[columns].astype(str).to_numpy()
    return [
        {LETTERS[j]: row[j] for j in range(len(LETTERS)) if row[j] not in {"-", "", "nan", "None"}} for row in values
    ]


def sample_scores(predictions: pd.DataFrame, options: EngineOptions | None = None) -> pd.DataFrame:
    """Per-row scores aligned with ``predictions`` (same index), NaN where a metric does not apply."""
    options = options or EngineOptions()
    _check_columns(predictions)
    frame = predictions.reset_index(drop=True)
    n = len(frame)
    out = pd.DataFrame(index=range(n), columns=list(SAMPLE_METRICS), dtype=float)
    preds = frame["prediction"].fillna("").astype(str).tolist()
    refs = frame["Answer"].fillna("").astype(str).tolist()
    closed = (frame["QuestionType"].astype(str) == "Close").to_numpy()
    open_idx = np.flatnonzero(~closed)
    closed_idx = np.flatnonzero(closed)
    scorer: tm.BertScoreF1 | None = None
    if len(open_idx):
        if options.bertscore is not False:
            scorer = options.bertscore if isinstance(options.bertscore, tm.BertScoreF1) else tm.BertScoreF1()
        samples = tm.open_ended_samples(
            [preds[i] for i in open_idx],
            [refs[i] for i in open_idx],
            bertscore=scorer if scorer is not None else False,
            workers=options.workers,
        )
        columns: dict[str, Sequence[float | bool | None] | None] = {
            "bleu": samples.bleu,
            "rouge1": samples.rouge1,
            "meteor": samples.meteor,
            "bertscore_f1": samples.bert_f1,
            "exact_match": samples.exact_match,
        }
        for name, values in columns.items():
            if values is not None:
                out.loc[open_idx, name] = [np.nan if v is None else float(v) for v in values]
                if name in OPEN_METRICS:  # strict: the empty predictions the protocol skips score 0
                    out.loc[open_idx, f"{name}_strict"] = out.loc[open_idx, name].fillna(0.0)
    if len(closed_idx):
        letters = frame["AnswerChoice"].astype(str).tolist() if "AnswerChoice" in frame.columns else [""] * n
        choices = _choices(frame)
        out.loc[closed_idx, "accuracy"] = [float(m3d_correct(preds[i], letters[i])) for i in closed_idx]
        out.loc[closed_idx, "parsed_accuracy"] = [
            float(parsed_correct(preds[i], letters[i], choices=choices[i])) for i in closed_idx
        ]
        out.loc[closed_idx, "accuracy_strict"] = [float(strict_correct(preds[i], letters[i])) for i in closed_idx]
        # Exact match on closed rows: the output is the answer text or "<letter>. <answer text>".
        out.loc[closed_idx, "exact_match"] = [
            float(tm.exact_match(preds[i], refs[i]) or tm.exact_match(preds[i], f"{letters[i]}. {refs[i]}"))
            for i in closed_idx
        ]
    # An empty prediction (nothing left after normalisation) is never an exact match, whatever the reference.
    empty = [i for i in range(n) if not tm.normalize_answer(preds[i])]
    if empty:
        out.loc[empty, "exact_match"] = 0.0
    if options.jury is not None and len(open_idx):
        # Open questions only: closed ones have an exact rule, and would cost a request per row and judge.
        verdicts = options.jury(frame.iloc[open_idx])
        out.loc[open_idx, "jury_correct"] = [np.nan if v is None else float(v) for v in verdicts]
    if options.alignscore is not None and len(open_idx):
        kept = [i for i in open_idx if preds[i].strip()]
        if kept:
            out.loc[kept, "alignscore"] = options.alignscore([refs[i] for i in kept], [preds[i] for i in kept])
    out.attrs["bertscore_model"] = scorer.label if scorer is not None else ""
    out.index = predictions.index
    return out


def metric_table(
    predictions: pd.DataFrame,
    scores: pd.DataFrame,
    *,
    bertscore_model: str = "",
    jury: str = "",
    alignscore_model: str = "",
    protocol: str = "3drad",
) -> pd.DataFrame:
    """Means per model x task x subtask (NaN-skipping: empty open predictions do not count)."""
    if predictions.empty:
        return pd.DataFrame(columns=list(TABLE_COLUMNS))
    frame = predictions.copy()
    if "subtask_name" not in frame.columns:
        frame["subtask_name"] = frame["Subtask"].astype(str)
    joined = pd.concat([frame[list(GROUP_KEYS)], scores[list(SAMPLE_METRICS)]], axis=1)
    joined["_scored"] = scores["bleu"].notna() | (frame["QuestionType"].astype(str) == "Close")
    groups = joined.groupby(list(GROUP_KEYS), sort=True, dropna=False)
    table = groups[list(SAMPLE_METRICS)].mean()
    table["n"] = groups.size()
    table["n_scored"] = groups["_scored"].sum().astype(int)
    table = table.rename(columns={"jury_correct": "jury_accuracy"}).reset_index()
    table["skipped_empty"] = table["n"] - table["n_scored"]
    table["bertscore_model"] = bertscore_model
    table["jury"] = jury
    table["alignscore_model"] = alignscore_model
    table["protocol"] = protocol
    table["protocol_version"] = PROTOCOL_VERSIONS[protocol]
    table["Task"] = table["Task"].astype(int)
    table["Subtask"] = table["Subtask"].astype(int)
    return table[list(TABLE_COLUMNS)]


def evaluate_predictions(predictions: pd.DataFrame, options: EngineOptions | None = None) -> pd.DataFrame:
    """:func:`sample_scores` then :func:`metric_table`: the metric table of a predictions frame."""
    options = options or EngineOptions()
    scores = sample_scores(predictions, options)
    return metric_table(
        predictions,
        scores,
        bertscore_model=str(scores.attrs.get("bertscore_model", "")),
        jury=options.jury_label,
        alignscore_model=options.alignscore_label,
    )


def task_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Macro average over subtasks per model x task (every metric column), as the 3D-RAD paper reports."""
    names = (*OPEN_METRICS, "exact_match", *CLOSED_METRICS, *STRICT_METRICS, "jury_accuracy", "alignscore")
    metrics = [c for c in names if c in table]
    if table.empty:
        return pd.DataFrame(columns=["model", "Task", "QuestionType", "subtasks", "n", *metrics])
    groups = table.groupby(["model", "Task", "QuestionType"], sort=True)
    summary = groups[metrics].mean()
    summary["subtasks"] = groups.size()
    summary["n"] = groups["n"].sum()
    return summary.reset_index()[["model", "Task", "QuestionType", "subtasks", "n", *metrics]]


# --------------------------------------------------------------------------- prediction files from anywhere


TASKS = range(1, 7)


@dataclass(frozen=True)
class PredictionFile:
    """A checked predictions file: its rows (release column names; for protocol 3drad completed by
    :func:`as_3drad_frame`) and where each row is in the file (``"line 7"``, ``"row 7"``)."""

    path: Path
    rows: pd.DataFrame
    places: list[str]


def _frame(table: TableRows, sources: dict[str, str]) -> pd.DataFrame:
    out = pd.DataFrame(index=range(len(table.records)))
    for name, key in sources.items():
        values = [record.get(key) for record in table.records]
        # text fields as written (pandas would turn 3 into 3.0 next to a null)
        out[name] = [_text(v) for v in values] if name in _TEXT_COLUMNS else values
    return out


def read_rows(path: str | Path) -> pd.DataFrame:
    """Every row of a predictions file (``.jsonl``, ``.csv`` or ``.parquet``), nothing dropped or merged.

    Recognised columns are renamed to the release's names (``question`` -> ``Question``,
    ``answer`` -> ``Answer``, ...); a prediction, an answer and a question column are required.
    Unreadable files raise :class:`PredictionFileError` naming the file and line. The values are
    not checked: :func:`load_predictions` does that.
    """
    table, sources = read_checked_table(path)
    return _frame(table, sources)


def _whole(value: object) -> int | None:
    """``value`` as a whole number (3, 3.0, "3", " 3 ", "3.0"), else None ("four", "", 3.5, None, True)."""
    if isinstance(value, bool | np.bool_):
        return None
    if isinstance(value, int | np.integer):
        return int(value)
    if isinstance(value, float | np.floating):
        return int(value) if np.isfinite(value) and float(value).is_integer() else None
    if isinstance(value, str):
        text = value.strip()
        head, _, tail = text.partition(".")
        if head.isascii() and head.isdigit() and (not tail or set(tail) == {"0"}):
            return int(head)
    return None


def _refuse(path: Path, places: list[str], bad: Sequence[int], reason: Callable[[int], str]) -> None:
    """Stop at the first bad row: ``<file>: line 7: <reason> (12 rows like this)``."""
    if len(bad):
        more = f" ({len(bad)} rows like this)" if len(bad) > 1 else ""
        raise PredictionFileError(f"{path}: {places[bad[0]]}: {reason(bad[0])}{more}")


def _question_types(values: Sequence[object]) -> list[str]:
    return [str(v).strip().capitalize().replace("Closed", "Close") for v in values]


def _check_3drad(path: Path, rows: pd.DataFrame, places: list[str]) -> None:
    """What the 3D-RAD protocol needs of the rows: tasks 1-6, whole subtasks, Open/Close, answer letters."""
    if "Task" in rows:
        tasks = rows["Task"].tolist()
        bad = [i for i, v in enumerate(tasks) if _whole(v) not in TASKS]
        _refuse(path, places, bad, lambda i: f"Task {_text(tasks[i])!r} is not one of 1-6")
    if "Subtask" in rows:
        subtasks = rows["Subtask"].tolist()
        bad = [i for i, v in enumerate(subtasks) if (_whole(v) or 0) < 1]
        _refuse(path, places, bad, lambda i: f"Subtask {_text(subtasks[i])!r} is not a whole number from 1")
    if "QuestionType" not in rows:
        return  # inferred from the answer letter by as_3drad_frame
    raw_types = rows["QuestionType"].tolist()
    types = _question_types(raw_types)
    bad = [i for i, t in enumerate(types) if t not in ("Open", "Close")]
    _refuse(path, places, bad, lambda i: f"QuestionType {_text(raw_types[i])!r} is neither Open nor Close")
    closed = [i for i, t in enumerate(types) if t == "Close"]
    if "AnswerChoice" not in rows:
        _refuse(path, places, closed, lambda i: "a Close question, and the file has no AnswerChoice column")
        return
    letters = rows["AnswerChoice"].tolist()
    bad = [i for i in closed if _text(letters[i]).strip().upper() not in tuple(LETTERS)]
    _refuse(path, places, bad, lambda i: f"a Close question whose AnswerChoice {_text(letters[i])!r} is not A-D")


def load_predictions(path: str | Path, protocol: str, model: str | None = None) -> PredictionFile:
    """A predictions file read and checked for ``protocol`` (``spatial`` or ``3drad``) before any scoring.

    Refused with :class:`PredictionFileError` (one line naming the file and the line or row): what
    :func:`read_rows` refuses, an empty answer (the reference), and for 3drad a task that is not 1-6,
    a subtask that is not a whole number, a question type other than Open/Close and a Close question
    without an answer letter A-D. An empty prediction is allowed (it scores as wrong).
    """
    path = Path(path)
    table, sources = read_checked_table(path)
    rows = _frame(table, sources)
    answers = rows["Answer"].tolist()
    _refuse(path, table.places, [i for i, a in enumerate(answers) if not a.strip()], lambda i: "empty answer")
    if protocol == "3drad":
        _check_3drad(path, rows, table.places)
        rows = as_3drad_frame(rows, model=model or path.stem)
    elif protocol != "spatial":
        raise ValueError(f"unknown protocol {protocol!r}: spatial or 3drad")
    return PredictionFile(path, rows, table.places)


def as_3drad_frame(rows: pd.DataFrame, model: str) -> pd.DataFrame:
    """Fill in what the 3D-RAD protocol needs: a missing task/subtask becomes 0 ("all"), a missing
    question type is Close where an answer letter is given, else Open. (:func:`load_predictions`
    refuses task and subtask values that are given but not whole numbers before this.)"""
    frame = rows.copy()
    if "model" not in frame.columns:
        frame["model"] = model
    frame["model"] = frame["model"].fillna(model).astype(str)
    for name in ("Task", "Subtask"):
        frame[name] = pd.to_numeric(frame[name], errors="coerce").fillna(0).astype(int) if name in frame else 0
    if "subtask_name" not in frame.columns:
        frame["subtask_name"] = np.where(frame["Subtask"] == 0, "all", frame["Subtask"].astype(str))
    letters = (
        frame["AnswerChoice"].astype(str).str.strip().str.upper()
        if "AnswerChoice" in frame.columns
        else pd.Series("", index=frame.index)
    )
    frame["AnswerChoice"] = letters.where(letters.isin(list(LETTERS)), "")
    if "QuestionType" not in frame.columns:
        frame["QuestionType"] = np.where(frame["AnswerChoice"] != "", "Close", "Open")
    frame["QuestionType"] = _question_types(frame["QuestionType"].tolist())
    return frame


# --------------------------------------------------------------------------- AlignScore (optional)

ALIGNSCORE_UNSET = "not computed (set RAD3D_ALIGNSCORE_CKPT to an AlignScore checkpoint)"


def alignscore_scorer(
    checkpoint: str | Path, *, base_model: str = "roberta-large", device: str = "cpu", batch_size: int = 32
) -> tuple[Callable[[list[str], list[str]], list[float]], str]:
    """AlignScore (Zha et al., 2023) as the companion benchmark runs it: ``(contexts, claims) -> scores``.

    Needs the ``alignscore`` package and a checkpoint (``AlignScore-base.ckpt`` or
    ``AlignScore-large.ckpt``) on disk; the reference answer is the context, the prediction the claim.
    """
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"AlignScore checkpoint {path} not found (setting RAD3D_ALIGNSCORE_CKPT)")
    try:
        from alignscore import AlignScore
    except ImportError as exc:
        raise RuntimeError(
            "AlignScore needs the alignscore package (pip install from github.com/yuh-zha/AlignScore) "
            f"and its checkpoint; the metric is optional ({exc})"
        ) from None
    scorer = AlignScore(
        model=base_model, batch_size=batch_size, device=device, ckpt_path=str(path), evaluation_mode="nli_sp"
    )

    def score(contexts: list[str], claims: list[str]) -> list[float]:
        return [float(v) for v in scorer.score(contexts=contexts, claims=claims)]

    return score, f"AlignScore {path.name} ({base_model}, nli_sp)"

"""Evaluation stages: predictions per model x task (resumable per batch), metric and clinical tables, leaderboard.

The evaluation assets' whole logic. A partition is ``(partition key, model, task)``; each stage
returns every partition's rows so one run can write a whole range.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import SupportsInt, cast

import pandas as pd

from rad3d_pipeline.common.errors import UserFacingError
from rad3d_pipeline.common.parquet_atomic import write_parquet_atomic
from rad3d_pipeline.common.progress import Progress
from rad3d_pipeline.evaluation.clinical_metrics import RESULT_COLUMNS as CLINICAL_COLUMNS
from rad3d_pipeline.evaluation.clinical_metrics import ClinicalMetricConfig, score_open_ended, wide_table
from rad3d_pipeline.evaluation.leaderboard import LeaderboardFiles, question_key, volume_key, write_leaderboard
from rad3d_pipeline.evaluation.metrics import SAMPLE_METRICS, TABLE_COLUMNS, EngineOptions, metric_table, sample_scores
from rad3d_pipeline.evaluation.models.base import ModelAdapter, PredictionItem, items_from_release
from rad3d_pipeline.llm.client import LlmClient

# A partition of model x task: (partition key, model, task).
ModelTask = tuple[str, str, int]

PREDICTION_COLUMNS = (
    "model",
    "VolumeName",
    "Task",
    "Subtask",
    "subtask_name",
    "QuestionType",
    "Question",
    "Answer",
    "AnswerChoice",
    "prediction",
    "seconds",
)
# Per-question scores of metric_tables (aligned with the predictions partition), for the leaderboard's intervals.
SCORE_KEYS = ("model", "Task", "Subtask", "VolumeName", "Question")


def scores_path(out: Path, model: str, task: int) -> Path:
    return out / "metric_scores" / model / f"{task}.parquet"


def first_per_subtask(rows: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """``--limit N``: the first N questions of each subtask, in the release's order."""
    if limit is None:
        return rows
    return rows.groupby("Subtask", sort=False).head(limit).reset_index(drop=True)


def release_parts(release: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The release's test rows (what the models answer) and train rows (what baselines may learn from)."""
    return release[release["release_split"] == "test"], release[release["release_split"] == "train"]


def volume_paths(out: Path, profile: str | None, volumes: Sequence[str]) -> dict[str, str]:
    """VolumeName -> its ``<out>/volumes/<profile>/*.npy`` for the volumes that have one (none without a profile)."""
    if not profile:
        return {}
    folder = out / "volumes" / profile
    paths = {}
    for name in volumes:
        # The release names the test split test_<n>_..., the volumes keep CT-RATE's valid_<n>_... names.
        for stem in dict.fromkeys([name.removesuffix(".nii.gz"), volume_key(name)]):
            path = folder / f"{stem}.npy"
            if path.exists():
                paths[name] = str(path)
                break
    return paths


def _batch_file(folder: Path, batch: Sequence[PredictionItem]) -> Path:
    digest = hashlib.sha256("\x1f".join(f"{i.volume_name}|{i.question}" for i in batch).encode()).hexdigest()
    return folder / f"{digest[:20]}.parquet"


def predict_partition(
    adapter: ModelAdapter,
    rows: pd.DataFrame,
    *,
    name: str,
    task: int,
    out: Path,
    log: Callable[[str], None] = lambda _: None,
) -> pd.DataFrame:
    """The model's answers to ``rows`` (one task's test questions), batch by batch.

    Each answered batch is kept under ``<out>/predictions/<model>/<task>/`` (named by a digest of its
    questions), so a rerun answers only what is not there yet. A model that reads volumes stops with
    one line when any of the task's volumes has no preprocessed file: it never answers without its image.
    """
    if task not in adapter.tasks or rows.empty:
        return pd.DataFrame(columns=list(PREDICTION_COLUMNS))
    needed = sorted(set(rows["VolumeName"]))
    paths = volume_paths(out, adapter.input_profile, needed)
    if adapter.input_profile and len(paths) < len(needed):
        missing = [v for v in needed if v not in paths]
        raise UserFacingError(
            f"model {name} reads {out / 'volumes' / adapter.input_profile}/*.npy: {len(missing)} of "
            f"{len(needed)} Task {task} volumes missing (first {missing[0]}); build them: rad3d build --select "
            "volumes"
        )
    items = items_from_release(rows, paths)
    batches = []
    folder = out / "predictions" / name / str(task)
    shown = Progress(f"{name} task {task}", len(items), unit="questions")
    for start in range(0, len(items), adapter.batch_size):
        batch = items[start : start + adapter.batch_size]
        done = _batch_file(folder, batch)
        if done.exists():
            batches.append(pd.read_parquet(done))
            shown.advance(len(batch))
            continue
        began = time.perf_counter()
        answers = adapter.predict(batch)
        seconds = (time.perf_counter() - began) / max(len(batch), 1)
        frame = rows.iloc[start : start + len(batch)][[c for c in PREDICTION_COLUMNS if c in rows.columns]].copy()
        frame["prediction"] = answers
        frame["seconds"] = seconds
        frame["model"] = name
        write_parquet_atomic(frame, done)
        batches.append(frame)
        shown.advance(len(batch))
        log(f"{name} task {task}: {start + len(batch)}/{len(items)}")
    return pd.concat(batches, ignore_index=True)[list(PREDICTION_COLUMNS)]


def _partition_mask(frame: pd.DataFrame, model: str, task: int) -> pd.Series:
    return (frame["model"] == model) & (frame["Task"].astype(int) == task)


@dataclass
class MetricRun:
    """The metric table of the run, each partition's rows, and the seconds the scoring took."""

    table: pd.DataFrame
    parts: dict[str, pd.DataFrame]
    seconds: float


def metric_partitions(
    predictions: pd.DataFrame, options: EngineOptions, partitions: Sequence[ModelTask], out: Path
) -> MetricRun:
    """Metrics per model x task x subtask; the per-question scores of each partition go beside the table
    (``<out>/metric_scores/<model>/<task>.parquet``: same rows and order as the predictions partition)."""
    predictions = predictions.reset_index(drop=True)
    began = time.perf_counter()
    table = pd.DataFrame(columns=list(TABLE_COLUMNS))
    scores = pd.DataFrame(columns=list(SAMPLE_METRICS))
    if len(predictions):
        scores = sample_scores(predictions, options)
        table = metric_table(
            predictions,
            scores,
            bertscore_model=str(scores.attrs.get("bertscore_model", "")),
            jury=options.jury_label,
            alignscore_model=options.alignscore_label,
        )
    seconds = time.perf_counter() - began
    parts: dict[str, pd.DataFrame] = {}
    for key, model, task in partitions:
        parts[key] = table[_partition_mask(table, model, task)].reset_index(drop=True)
        if len(predictions):
            mask = _partition_mask(predictions, model, task)
            rows = pd.concat(
                [predictions.loc[mask, list(SCORE_KEYS)], scores.loc[mask, list(SAMPLE_METRICS)]], axis=1
            ).reset_index(drop=True)
        else:
            rows = pd.DataFrame(columns=[*SCORE_KEYS, *SAMPLE_METRICS])
        write_parquet_atomic(rows, scores_path(out, model, task))
    return MetricRun(table, parts, seconds)


def clinical_partitions(
    predictions: pd.DataFrame,
    config: ClinicalMetricConfig,
    client: LlmClient | None,
    partitions: Sequence[ModelTask],
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """Clinical metrics of the open-ended predictions, and each partition's rows."""
    table = score_open_ended(predictions, config, client) if len(predictions) else pd.DataFrame()
    parts: dict[str, pd.DataFrame] = {}
    for key, model, task in partitions:
        part = (
            pd.DataFrame(columns=list(CLINICAL_COLUMNS)) if table.empty else table[_partition_mask(table, model, task)]
        )
        parts[key] = part.reset_index(drop=True)
    return table, parts


def clinical_states(table: pd.DataFrame) -> list[str]:
    """``metric: status`` of every clinical metric in the table, sorted."""
    return sorted({f"{m}: {s}" for m, s in zip(table.get("metric", []), table.get("status", []), strict=True)})


def per_question_scores(out: Path, predictions: pd.DataFrame) -> tuple[pd.DataFrame | None, str]:
    """metric_tables' per-question scores aligned with ``predictions`` (same index), or None and why not."""
    parts = []
    for (model, task), group in predictions.groupby(["model", "Task"], sort=False):
        path = scores_path(out, str(model), int(cast(SupportsInt, task)))
        if not path.is_file():
            return None, f"no per-question scores at {path}"
        scores = pd.read_parquet(path)
        keys = [c for c in SCORE_KEYS if c != "Task"]
        same = len(scores) == len(group) and all(
            (scores[c].astype(str).to_numpy() == group[c].astype(str).to_numpy()).all() for c in keys
        )
        if not same:
            return None, f"{path} does not match the predictions of {model} task {task} (rebuild metric_tables)"
        parts.append(scores[list(SAMPLE_METRICS)].set_axis(group.index))
    if not parts:
        return None, "no predictions"
    return pd.concat(parts).reindex(predictions.index), ""


def spatial_categories(path: Path) -> dict[tuple[str, str], str]:
    """(volume key, question key) -> spatial category, from the spatial_qa table at ``path`` when it was built."""
    if not path.is_file():
        return {}
    frame = pd.read_parquet(path)
    if not {"VolumeName", "question", "category", "spatial"} <= set(frame.columns):
        return {}
    frame = frame[frame["spatial"].astype(bool) & (frame["category"].astype(str) != "")]
    return {
        (volume_key(v), question_key(q)): str(c)
        for v, q, c in zip(frame["VolumeName"], frame["question"], frame["category"], strict=True)
    }


@dataclass
class Leaderboard:
    """The leaderboard's files, its Table 4 (one row per model) and why intervals lack BERTScore ("" if not)."""

    files: LeaderboardFiles
    table: pd.DataFrame
    without_scores: str


def build_leaderboard(
    metric_tables: pd.DataFrame,
    predictions: pd.DataFrame,
    clinical_metrics: pd.DataFrame,
    *,
    out: Path,
    spatial_table: Path,
) -> Leaderboard:
    """Every leaderboard file under ``<out>/reports/leaderboard/``, from the metric tables, the predictions
    (with metric_tables' per-question scores for the intervals), the clinical metrics and, when built, the
    spatial categories."""
    if metric_tables.empty:
        raise ValueError("leaderboard: no metric tables; materialize predictions and metric_tables first")
    predictions = predictions.reset_index(drop=True)
    scores, why = per_question_scores(out, predictions)
    clinical = wide_table(clinical_metrics) if len(clinical_metrics) else None
    folder = out / "reports" / "leaderboard"
    categories = spatial_categories(spatial_table)
    files = write_leaderboard(metric_tables, predictions, folder, categories, scores=scores, clinical=clinical)
    return Leaderboard(files, files.table4.reset_index(), why if scores is None else "")

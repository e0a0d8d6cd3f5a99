"""Evaluation: per-model predictions on the benchmark (model x task)."""

import hashlib
import time

import pandas as pd
from dagster import AssetExecutionContext, MultiPartitionsDefinition, Output, StaticPartitionsDefinition, asset

from assets.metadata import table_metadata
from assets.partitions import single_run, task_partitions
from rad3d_pipeline.models.base import items_from_release
from rad3d_pipeline.models.registry import parse_models
from resources.llm import LlmResource
from resources.models import ModelsResource
from resources.parquet_io import write_parquet_atomic
from resources.settings import Rad3dSettings, env_models, env_models_file

GROUP = "evaluation"
MODEL_NAMES = [spec.name for spec in parse_models(env_models(), env_models_file())]
model_partitions = StaticPartitionsDefinition(MODEL_NAMES)
# Keys read "<model>|<task>".
prediction_partitions = MultiPartitionsDefinition({"model": model_partitions, "task": task_partitions})
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


def _volume_paths(settings: Rad3dSettings, profile: str | None, volumes: list[str]) -> dict[str, str]:
    if not profile:
        return {}
    folder = settings.out / "volumes" / profile
    paths = {}
    for name in volumes:
        path = folder / f"{name.removesuffix('.nii.gz')}.npy"
        if path.exists():
            paths[name] = str(path)
    return paths


@asset(
    group_name=GROUP,
    code_version="1",
    partitions_def=prediction_partitions,
    backfill_policy=single_run,
    pool="gpu",
    description="Each model's answer to every benchmark question (the release's test split), per model x task; "
    "resumable per batch.",
)
def predictions(
    context: AssetExecutionContext,
    release_export: pd.DataFrame,
    settings: Rad3dSettings,
    llm: LlmResource,
    models: ModelsResource,
) -> Output[dict[str, pd.DataFrame]]:
    test = release_export[release_export["release_split"] == "test"]
    training = release_export[release_export["release_split"] == "train"]
    out: dict[str, pd.DataFrame] = {}
    for key in context.partition_keys:
        dims = prediction_partitions.get_partition_key_from_str(key).keys_by_dimension
        name, task = dims["model"], int(dims["task"])
        adapter = models.adapter(name, training, llm, settings.out, settings.seed)
        rows = test[test["Task"] == task].reset_index(drop=True)
        if task not in adapter.tasks or rows.empty:
            out[key] = pd.DataFrame(columns=list(PREDICTION_COLUMNS))
            continue
        paths = _volume_paths(settings, adapter.input_profile, sorted(set(rows["VolumeName"])))
        items = items_from_release(rows, paths)
        batches = []
        progress = settings.out / "predictions" / name / str(task)
        for start in range(0, len(items), adapter.batch_size):
            batch = items[start : start + adapter.batch_size]
            digest = hashlib.sha256("\x1f".join(f"{i.volume_name}|{i.question}" for i in batch).encode()).hexdigest()
            done = progress / f"{digest[:20]}.parquet"
            if done.exists():
                batches.append(pd.read_parquet(done))
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
            context.log.info(f"{name} task {task}: {start + len(batch)}/{len(items)}")
        out[key] = pd.concat(batches, ignore_index=True)[list(PREDICTION_COLUMNS)]
    combined = pd.concat(out.values(), ignore_index=True) if out else pd.DataFrame()
    return Output(out, metadata={**table_metadata(combined), "models": ", ".join(MODEL_NAMES)})

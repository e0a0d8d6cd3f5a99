"""Evaluation: per-model predictions on the benchmark (model x task)."""

import hashlib
import time

import pandas as pd
from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetIn,
    MetadataValue,
    MultiPartitionsDefinition,
    Output,
    StaticPartitionsDefinition,
    asset,
)

from assets.metadata import table_metadata
from assets.partitions import GPU_OP_TAGS, GPU_POOL, single_run, task_partitions
from assets.quality import png_markdown
from rad3d_pipeline.judges import parse_judges
from rad3d_pipeline.jury import OFFLINE_JUDGE, Jury
from rad3d_pipeline.leaderboard import question_key, volume_key, write_leaderboard
from rad3d_pipeline.llm.client import LlmClient
from rad3d_pipeline.metrics import (
    ALIGNSCORE_UNSET,
    PROTOCOL_VERSIONS,
    TABLE_COLUMNS,
    EngineOptions,
    alignscore_scorer,
    evaluate_predictions,
)
from rad3d_pipeline.models.base import items_from_release
from rad3d_pipeline.models.registry import parse_models
from rad3d_pipeline.text_metrics import BertScoreF1
from resources.llm import LlmResource
from resources.models import ModelsResource
from resources.parquet_io import UNPARTITIONED_FILE, table_dir, write_parquet_atomic
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
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    # Adapters with an input profile read <out>/volumes/<profile>/*.npy: every shard of `volumes`.
    deps=[AssetDep("volumes", partition_mapping=AllPartitionMapping())],
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


def engine_options(settings: Rad3dSettings, llm: LlmResource) -> EngineOptions:
    """Metric-engine options from the settings."""
    bertscore: bool | BertScoreF1 = BertScoreF1(model_path=settings.bertscore_model) if settings.bertscore else False
    specs = parse_judges(settings.jury_judges) if settings.jury_judges.strip() else llm.judge_specs()
    clients: dict[str, LlmClient | None] = {}
    for spec in specs:
        if spec.offline or spec.name == OFFLINE_JUDGE:
            clients[OFFLINE_JUDGE] = None  # the offline judges all stand in as the one rules judge
        else:
            clients[spec.name] = llm.judge_client(spec, settings.out)
    if not clients:
        clients[OFFLINE_JUDGE] = None
    jury = Jury(clients)
    alignscore = None
    alignscore_label = ALIGNSCORE_UNSET
    if settings.alignscore_ckpt:
        alignscore, alignscore_label = alignscore_scorer(settings.alignscore_ckpt)
    return EngineOptions(
        bertscore=bertscore,
        workers=settings.metric_workers,
        jury=jury,
        jury_label=jury.label,
        alignscore=alignscore,
        alignscore_label=alignscore_label,
    )


@asset(
    group_name=GROUP,
    code_version="2",
    partitions_def=prediction_partitions,
    backfill_policy=single_run,
    description="Metrics per model x task x subtask (protocol 3drad, versioned): BLEU-1, ROUGE-1, METEOR, "
    "BERTScore F1 (open tasks), the letter rule and parsed-choice accuracy (closed tasks), exact match, "
    "LLM-jury accuracy and optional AlignScore.",
)
def metric_tables(
    context: AssetExecutionContext, predictions: pd.DataFrame, settings: Rad3dSettings, llm: LlmResource
) -> Output[dict[str, pd.DataFrame]]:
    options = engine_options(settings, llm)
    began = time.perf_counter()
    table = (
        evaluate_predictions(predictions, options) if len(predictions) else pd.DataFrame(columns=list(TABLE_COLUMNS))
    )
    seconds = time.perf_counter() - began
    out: dict[str, pd.DataFrame] = {}
    for key in context.partition_keys:
        dims = prediction_partitions.get_partition_key_from_str(key).keys_by_dimension
        part = table[(table["model"] == dims["model"]) & (table["Task"].astype(str) == dims["task"])]
        out[key] = part.reset_index(drop=True)
    jury = options.jury
    accounting = jury.accounting.as_dict() if isinstance(jury, Jury) else {}
    return Output(
        out,
        metadata={
            **table_metadata(table),
            "protocol_version": PROTOCOL_VERSIONS["3drad"],
            "bertscore_model": str(table["bertscore_model"].iloc[0]) if len(table) else "",
            "jury": options.jury_label,
            "alignscore": options.alignscore_label,
            "seconds": round(seconds, 2),
            "jury_llm_use": str(accounting),
        },
    )


def _spatial_categories(settings: Rad3dSettings) -> dict[tuple[str, str], str]:
    """(volume key, question key) -> spatial category, from the spatial_qa table when it was built."""
    path = table_dir(settings.out, "spatial_qa") / f"{UNPARTITIONED_FILE}.parquet"
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


@asset(
    group_name=GROUP,
    code_version="1",
    ins={
        "metric_tables": AssetIn(metadata={"allow_missing_partitions": True}),
        "predictions": AssetIn(metadata={"allow_missing_partitions": True}),
    },
    deps=["spatial_qa"],
    description="The leaderboard under <out>/reports/leaderboard/: the paper's Table 4 layout (CSV, Markdown), "
    "bar charts per task and subtask, the correctness matrix, per-category accuracy, answer lengths.",
)
def leaderboard(
    metric_tables: pd.DataFrame, predictions: pd.DataFrame, settings: Rad3dSettings
) -> Output[pd.DataFrame]:
    if metric_tables.empty:
        raise ValueError("leaderboard: no metric tables; materialize predictions and metric_tables first")
    folder = settings.out / "reports" / "leaderboard"
    files = write_leaderboard(metric_tables, predictions, folder, _spatial_categories(settings))
    table = files.table4.reset_index()
    inline = [name for name in files.pngs if name.startswith("bars_task") or name == "correctness_matrix.png"]
    meta = {
        **table_metadata(table),
        "table4": MetadataValue.md(files.files["table4.md"].read_text(encoding="utf-8")),
        "folder": MetadataValue.path(str(folder)),
        "charts": MetadataValue.md(
            "\n\n".join(
                png_markdown(files.pngs[name].read_bytes(), name.removesuffix(".png")) for name in sorted(inline)
            )
        ),
    }
    for name, path in files.pngs.items():
        if name not in inline:
            meta[name.removesuffix(".png")] = MetadataValue.path(str(path))
    return Output(table, metadata=meta)

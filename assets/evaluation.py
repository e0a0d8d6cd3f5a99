"""Evaluation: per-model predictions on the benchmark (model x task), metrics, clinical metrics, leaderboard.

The models are a dynamic partitions definition (``models``): ``rad3d build`` and ``rad3d eval`` add
the configured and registered models to the instance, so a new model shows in the UI without a restart.
"""

import hashlib
import time
from pathlib import Path

import pandas as pd
from dagster import (
    AllPartitionMapping,
    AssetDep,
    AssetExecutionContext,
    AssetIn,
    DynamicPartitionsDefinition,
    MetadataValue,
    MultiPartitionsDefinition,
    Output,
    asset,
)

from assets.metadata import table_metadata
from assets.partitions import GPU_OP_TAGS, GPU_POOL, single_run, task_partitions
from assets.quality import png_markdown
from rad3d_pipeline.clinical_metrics import RESULT_COLUMNS as CLINICAL_COLUMNS
from rad3d_pipeline.clinical_metrics import ClinicalMetricConfig, score_open_ended, wide_table
from rad3d_pipeline.errors import UserFacingError
from rad3d_pipeline.judges import parse_judges
from rad3d_pipeline.jury import OFFLINE_JUDGE, Jury
from rad3d_pipeline.leaderboard import question_key, volume_key, write_leaderboard
from rad3d_pipeline.llm.client import LlmClient
from rad3d_pipeline.metrics import (
    ALIGNSCORE_UNSET,
    PROTOCOL_VERSIONS,
    SAMPLE_METRICS,
    TABLE_COLUMNS,
    EngineOptions,
    alignscore_scorer,
    metric_table,
    sample_scores,
)
from rad3d_pipeline.models.base import items_from_release
from rad3d_pipeline.progress import Progress
from rad3d_pipeline.text_metrics import BertScoreF1
from resources.llm import LlmResource
from resources.models import MODELS_PARTITIONS, ModelsResource
from resources.parquet_io import UNPARTITIONED_FILE, table_dir, write_parquet_atomic
from resources.settings import Rad3dSettings

GROUP = "evaluation"
# The models: added to the instance by `rad3d build` / `rad3d eval` (ModelsResource.partition_keys()).
model_partitions = DynamicPartitionsDefinition(name=MODELS_PARTITIONS)
# Keys read "<model>|<task>".
prediction_partitions = MultiPartitionsDefinition({"model": model_partitions, "task": task_partitions})
# Per-question scores of metric_tables (aligned with the predictions partition), for the leaderboard's intervals.
SCORE_KEYS = ("model", "Task", "Subtask", "VolumeName", "Question")


def split_prediction_key(key: str) -> tuple[str, int]:
    """(model, task) of a ``prediction_partitions`` key."""
    dims = prediction_partitions.get_partition_key_from_str(key).keys_by_dimension
    return dims["model"], int(dims["task"])


def scores_path(out: Path, model: str, task: int) -> Path:
    return out / "metric_scores" / model / f"{task}.parquet"


def first_per_subtask(rows: pd.DataFrame, limit: int | None) -> pd.DataFrame:
    """``--limit N``: the first N questions of each subtask, in the release's order."""
    if limit is None:
        return rows
    return rows.groupby("Subtask", sort=False).head(limit).reset_index(drop=True)


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
        # The release names the test split test_<n>_..., the volumes keep CT-RATE's valid_<n>_... names.
        for stem in dict.fromkeys([name.removesuffix(".nii.gz"), volume_key(name)]):
            path = folder / f"{stem}.npy"
            if path.exists():
                paths[name] = str(path)
                break
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
        name, task = split_prediction_key(key)
        adapter = models.adapter(name, training, llm, settings.out, settings.seed)
        rows = first_per_subtask(test[test["Task"] == task].reset_index(drop=True), models.limit(name))
        if task not in adapter.tasks or rows.empty:
            out[key] = pd.DataFrame(columns=list(PREDICTION_COLUMNS))
            continue
        needed = sorted(set(rows["VolumeName"]))
        paths = _volume_paths(settings, adapter.input_profile, needed)
        if adapter.input_profile and len(paths) < len(needed):
            # A vision model never silently answers without its images.
            missing = [v for v in needed if v not in paths]
            raise UserFacingError(
                f"model {name} reads {settings.out / 'volumes' / adapter.input_profile}/*.npy: {len(missing)} of "
                f"{len(needed)} Task {task} volumes missing (first {missing[0]}); build them: rad3d build --select "
                "volumes"
            )
        items = items_from_release(rows, paths)
        batches = []
        progress = settings.out / "predictions" / name / str(task)
        shown = Progress(f"{name} task {task}", len(items), unit="questions")
        for start in range(0, len(items), adapter.batch_size):
            batch = items[start : start + adapter.batch_size]
            digest = hashlib.sha256("\x1f".join(f"{i.volume_name}|{i.question}" for i in batch).encode()).hexdigest()
            done = progress / f"{digest[:20]}.parquet"
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
            context.log.info(f"{name} task {task}: {start + len(batch)}/{len(items)}")
        out[key] = pd.concat(batches, ignore_index=True)[list(PREDICTION_COLUMNS)]
    combined = pd.concat(out.values(), ignore_index=True) if out else pd.DataFrame()
    names = dict.fromkeys(split_prediction_key(k)[0] for k in context.partition_keys)
    return Output(out, metadata={**table_metadata(combined), "models": ", ".join(names)})


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
    code_version="3",
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
    out: dict[str, pd.DataFrame] = {}
    for key in context.partition_keys:
        model, task = split_prediction_key(key)
        part = table[(table["model"] == model) & (table["Task"].astype(int) == task)]
        out[key] = part.reset_index(drop=True)
        # The per-question scores beside the table (same rows and order as the predictions partition).
        mask = (
            (predictions["model"] == model) & (predictions["Task"].astype(int) == task)
            if len(predictions)
            else pd.Series(dtype=bool)
        )
        rows = (
            pd.concat(
                [predictions.loc[mask, list(SCORE_KEYS)], scores.loc[mask, list(SAMPLE_METRICS)]], axis=1
            ).reset_index(drop=True)
            if len(predictions)
            else pd.DataFrame(columns=[*SCORE_KEYS, *SAMPLE_METRICS])
        )
        write_parquet_atomic(rows, scores_path(settings.out, model, task))
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


def clinical_config(settings: Rad3dSettings) -> ClinicalMetricConfig:
    """The clinical metrics' settings (read once in the composition root into Rad3dSettings)."""

    def folder(value: str | None) -> Path | None:
        return Path(value).expanduser() if value else None

    return ClinicalMetricConfig(
        label_classifier=folder(settings.label_classifier),
        ratescore_ner_model=folder(settings.ratescore_ner),
        ratescore_eval_model=folder(settings.ratescore_encoder),
        radgraph_model_dir=folder(settings.radgraph_dir),
        radgraph_model_type=settings.radgraph_model_type,
        green_judge=settings.green_judge,
    )


@asset(
    group_name=GROUP,
    code_version="1",
    partitions_def=prediction_partitions,
    backfill_policy=single_run,
    kinds={"pytorch", "parquet"},
    description="Clinical metrics of the open-ended answers (Tasks 1-3) per model x task: abnormality-label F1, "
    "RaTEScore, RadGraph F1 and a GREEN-style LLM judge, each 'not computed: <reason>' (NaN, never 0) unless "
    "configured (RAD3D_LABEL_CLASSIFIER, RAD3D_RATESCORE_NER + RAD3D_RATESCORE_ENCODER, RAD3D_RADGRAPH_DIR, "
    "RAD3D_GREEN_JUDGE=1); see docs/clinical-metrics.md.",
)
def clinical_metrics(
    context: AssetExecutionContext, predictions: pd.DataFrame, settings: Rad3dSettings, llm: LlmResource
) -> Output[dict[str, pd.DataFrame]]:
    config = clinical_config(settings)
    client = LlmClient(llm.endpoint(llm.scorer_model), llm.cache(settings.out)) if config.green_judge else None
    table = score_open_ended(predictions, config, client) if len(predictions) else pd.DataFrame()
    out: dict[str, pd.DataFrame] = {}
    for key in context.partition_keys:
        model, task = split_prediction_key(key)
        if table.empty:
            part = pd.DataFrame(columns=list(CLINICAL_COLUMNS))
        else:
            part = table[(table["model"] == model) & (table["Task"].astype(int) == task)]
        out[key] = part.reset_index(drop=True)
    states = sorted({f"{m}: {s}" for m, s in zip(table.get("metric", []), table.get("status", []), strict=True)})
    return Output(
        out, metadata={**table_metadata(table), "status": MetadataValue.md("\n".join(f"- {s}" for s in states))}
    )


def per_question_scores(out: Path, predictions: pd.DataFrame) -> tuple[pd.DataFrame | None, str]:
    """metric_tables' per-question scores aligned with ``predictions`` (same index), or None and why not."""
    parts = []
    for (model, task), group in predictions.groupby(["model", "Task"], sort=False):
        path = scores_path(out, str(model), int(task))
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


@asset(
    group_name=GROUP,
    code_version="2",
    ins={
        "metric_tables": AssetIn(metadata={"allow_missing_partitions": True}),
        "predictions": AssetIn(metadata={"allow_missing_partitions": True}),
        "clinical_metrics": AssetIn(metadata={"allow_missing_partitions": True}),
    },
    deps=["spatial_qa"],
    description="The leaderboard under `<out>/reports/leaderboard/`: the paper's Table 4 layout (CSV, Markdown) "
    "with 95% bootstrap intervals, strict figures, clinical metrics (or 'not computed'), pairwise tests, "
    "bar charts per task and subtask, the correctness matrix, per-category accuracy, answer lengths.",
)
def leaderboard(
    context: AssetExecutionContext,
    metric_tables: pd.DataFrame,
    predictions: pd.DataFrame,
    clinical_metrics: pd.DataFrame,
    settings: Rad3dSettings,
) -> Output[pd.DataFrame]:
    if metric_tables.empty:
        raise ValueError("leaderboard: no metric tables; materialize predictions and metric_tables first")
    folder = settings.out / "reports" / "leaderboard"
    predictions = predictions.reset_index(drop=True)
    scores, why = per_question_scores(settings.out, predictions)
    if scores is None:
        context.log.warning(f"leaderboard: intervals without BERTScore ({why})")
    clinical = wide_table(clinical_metrics) if len(clinical_metrics) else None
    files = write_leaderboard(
        metric_tables, predictions, folder, _spatial_categories(settings), scores=scores, clinical=clinical
    )
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

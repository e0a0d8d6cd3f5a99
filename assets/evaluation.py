"""Evaluation: per-model predictions on the benchmark (model x task), metrics, clinical metrics, leaderboard.

The models are a dynamic partitions definition (``models``): ``rad3d build`` and ``rad3d eval`` add
the configured and registered models to the instance, so a new model shows in the UI without a restart.
The logic is the core's (:mod:`rad3d_pipeline.evaluation.stage`); these assets wire it.
"""

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
from rad3d_pipeline.evaluation.clinical_metrics import ClinicalMetricConfig
from rad3d_pipeline.evaluation.jury import OFFLINE_JUDGE, Jury
from rad3d_pipeline.evaluation.metrics import ALIGNSCORE_UNSET, PROTOCOL_VERSIONS, EngineOptions, alignscore_scorer
from rad3d_pipeline.evaluation.stage import (
    SCORE_KEYS as SCORE_KEYS,
)
from rad3d_pipeline.evaluation.stage import (
    ModelTask,
    build_leaderboard,
    clinical_partitions,
    clinical_states,
    first_per_subtask,
    metric_partitions,
    predict_partition,
    release_parts,
)
from rad3d_pipeline.evaluation.stage import (
    per_question_scores as per_question_scores,
)
from rad3d_pipeline.evaluation.stage import (
    scores_path as scores_path,
)
from rad3d_pipeline.evaluation.text_metrics import BertScoreF1
from rad3d_pipeline.llm.client import LlmClient
from rad3d_pipeline.quality.judges import parse_judges
from resources.llm import LlmResource
from resources.models import MODELS_PARTITIONS, ModelsResource
from resources.parquet_io import IGNORES_KEY, UNPARTITIONED_FILE, table_dir
from resources.settings import Rad3dSettings

GROUP = "evaluation"
# The models: added to the instance by `rad3d build` / `rad3d eval` (ModelsResource.partition_keys()).
model_partitions = DynamicPartitionsDefinition(name=MODELS_PARTITIONS)
# Keys read "<model>|<task>".
prediction_partitions = MultiPartitionsDefinition({"model": model_partitions, "task": task_partitions})
ALLOW_MISSING = {"allow_missing_partitions": True}


def split_prediction_key(key: str) -> tuple[str, int]:
    """(model, task) of a ``prediction_partitions`` key."""
    dims = prediction_partitions.get_partition_key_from_str(key).keys_by_dimension
    return dims["model"], int(dims["task"])


def model_tasks(keys: list[str]) -> list[ModelTask]:
    """(key, model, task) of ``prediction_partitions`` keys."""
    return [(key, *split_prediction_key(key)) for key in keys]


@asset(
    group_name=GROUP,
    code_version="1",
    partitions_def=prediction_partitions,
    backfill_policy=single_run,
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    # Adapters with an input profile read <out>/volumes/<profile>/*.npy: every shard of `volumes`.
    deps=[AssetDep("volumes", partition_mapping=AllPartitionMapping())],
    metadata={IGNORES_KEY: ["seconds"]},  # the time an answer took is not its content
    description="Each model's answer to every benchmark question (the release's test split), per model x task; "
    "resumable per batch (answered batches kept under `<out>/predictions/<model>/<task>/`).",
)
def predictions(
    context: AssetExecutionContext,
    release_export: pd.DataFrame,
    settings: Rad3dSettings,
    llm: LlmResource,
    models: ModelsResource,
) -> Output[dict[str, pd.DataFrame]]:
    test, training = release_parts(release_export)
    out: dict[str, pd.DataFrame] = {}
    for key, name, task in model_tasks(list(context.partition_keys)):
        adapter = models.adapter(name, training, llm, settings.out, settings.seed)
        rows = first_per_subtask(test[test["Task"] == task].reset_index(drop=True), models.limit(name))
        out[key] = predict_partition(adapter, rows, name=name, task=task, out=settings.out, log=context.log.info)
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
    run = metric_partitions(predictions, options, model_tasks(list(context.partition_keys)), settings.out)
    jury = options.jury
    accounting = jury.accounting.as_dict() if isinstance(jury, Jury) else {}
    table = run.table
    meta = {
        **table_metadata(table),
        "protocol_version": PROTOCOL_VERSIONS["3drad"],
        "bertscore_model": str(table["bertscore_model"].iloc[0]) if len(table) else "",
        "jury": options.jury_label,
        "alignscore": options.alignscore_label,
        "seconds": round(run.seconds, 2),
        "jury_llm_use": str(accounting),
    }
    return Output(run.parts, metadata=meta)


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
    "RaTEScore, RadGraph F1 and a GREEN-style LLM judge, each `not computed: <reason>` (NaN, never 0) unless "
    "configured (RAD3D_LABEL_CLASSIFIER, RAD3D_RATESCORE_NER + RAD3D_RATESCORE_ENCODER, RAD3D_RADGRAPH_DIR, "
    "RAD3D_GREEN_JUDGE=1); see docs/clinical-metrics.md.",
)
def clinical_metrics(
    context: AssetExecutionContext, predictions: pd.DataFrame, settings: Rad3dSettings, llm: LlmResource
) -> Output[dict[str, pd.DataFrame]]:
    config = clinical_config(settings)
    client = LlmClient(llm.endpoint(llm.scorer_model), llm.cache(settings.out)) if config.green_judge else None
    table, out = clinical_partitions(predictions, config, client, model_tasks(list(context.partition_keys)))
    states = clinical_states(table)
    return Output(
        out, metadata={**table_metadata(table), "status": MetadataValue.md("\n".join(f"- {s}" for s in states))}
    )


def _charts(pngs: dict[str, Path], names: list[str]) -> MetadataValue:
    """Leaderboard charts shown as images in the metadata panel."""
    return MetadataValue.md(
        "\n\n".join(png_markdown(pngs[name].read_bytes(), name.removesuffix(".png")) for name in sorted(names))
    )


@asset(
    group_name=GROUP,
    code_version="2",
    ins={
        "metric_tables": AssetIn(metadata=ALLOW_MISSING),
        "predictions": AssetIn(metadata=ALLOW_MISSING),
        "clinical_metrics": AssetIn(metadata=ALLOW_MISSING),
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
    # The spatial categories come from spatial_qa's table, when it was built (an optional dependency).
    spatial_table = table_dir(settings.out, "spatial_qa") / f"{UNPARTITIONED_FILE}.parquet"
    board = build_leaderboard(
        metric_tables, predictions, clinical_metrics, out=settings.out, spatial_table=spatial_table
    )
    if board.without_scores:
        context.log.warning(f"leaderboard: intervals without BERTScore ({board.without_scores})")
    files = board.files
    inline = [name for name in files.pngs if name.startswith("bars_task") or name == "correctness_matrix.png"]
    others = [name for name in files.pngs if name not in inline]
    meta = {
        **table_metadata(board.table),
        "table4": MetadataValue.md(files.files["table4.md"].read_text(encoding="utf-8")),
        "folder": MetadataValue.path(str(files.folder.resolve())),
        "charts": _charts(files.pngs, inline),
        "more_charts": _charts(files.pngs, others),
    }
    for name in others:
        meta[name.removesuffix(".png")] = MetadataValue.path(str(files.pngs[name].resolve()))
    return Output(board.table, metadata=meta)

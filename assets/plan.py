"""The LLM plan as an asset: what the LLM stages of a full build would send and cost, sending nothing.

``llm_plan`` runs the core planner (``rad3d_pipeline.llm.plan``) over every partition of the LLM
stages (qa_candidates, qa_scores, scoring_consistency, spatial_qa) and shows the figures as asset
metadata (``<stage>/requests``, ``<stage>/cached``, ``<stage>/prompt_tokens``, ...), the table in the
UI, and ``<out>/reports/plan.json``. ``rad3d build --plan`` computes the same plan for its own
selection (``rad3d/plan_command.py``).

It sits after ``ctrate_reports`` and ``report_sentences`` (ordering only), so in a full build it
reads their tables and plans right before the first LLM stage runs: cheap (no request, no model,
the cache read-only), and with the rules backend it only says that nothing is sent.
"""

import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, MetadataValue, Output, asset

from assets.metadata import table_metadata
from assets.partitions import open_qa_partitions, split_open_key
from rad3d_pipeline.llm.cache import ResponseCache
from rad3d_pipeline.llm.client import EndpointConfig
from rad3d_pipeline.llm.plan import STAGES, LlmPlan, PlanConfig, PlanInputs, plan_llm, write_plan
from rad3d_pipeline.open_qa.curation import CurationSettings
from rad3d_pipeline.sentences.segmentation import SentenceSplitter
from rad3d_pipeline.sentences.segmentation import report_sentences as split_reports
from resources.ctrate_source import CtrateSource
from resources.llm import LlmResource
from resources.plan_settings import PlanSettings
from resources.settings import Rad3dSettings

GROUP = "plan"
LINE_COLUMNS = (
    "stage",
    "backend",
    "model",
    "requests",
    "cached",
    "shared_with_earlier_stage",
    "prompt_tokens",
    "completion_tokens",
    "cost_usd",
    "cost_usd_batch",
    "estimate",
)


def plan_config(llm: LlmResource, settings: Rad3dSettings, plan_settings: PlanSettings) -> PlanConfig:
    """The planner's settings from the same resources the LLM stages read."""
    backend = llm.resolved_backend()
    judges: list[tuple[str, EndpointConfig]] = []
    offline: list[str] = []
    for spec in llm.judge_specs():
        if spec.offline:
            offline.append(spec.name)
        else:  # the judge's own base URL (judges file) is not part of a cache key
            judges.append((spec.name, llm.endpoint(spec.model)))
    return PlanConfig(
        backend=backend,
        generator=llm.endpoint(llm.generator_model),
        scorer=llm.endpoint(llm.scorer_model),
        spatial=llm.endpoint(llm.spatial_model),
        judges=tuple(judges),
        offline_judges=tuple(offline),
        task3_stage1=llm.task3_stage1,
        seed=settings.seed,
        n_shards=settings.n_shards,
        consistency_sample=settings.consistency_sample,
        curation=CurationSettings(settings.min_dimension_score, settings.min_mean_score, settings.cap),
        tokenizer=plan_settings.tokenizer,
    )


@contextmanager
def plan_cache(llm: LlmResource, out: Path) -> Iterator[ResponseCache]:
    """The build's response cache, read only; an empty stand-in when there is none (the plan creates no file)."""
    path = (Path(llm.cache_dir) if llm.cache_dir else out / "llm") / "cache.sqlite"
    with tempfile.TemporaryDirectory(prefix="rad3d-plan-") as empty:
        yield ResponseCache(path if path.is_file() else Path(empty) / "cache.sqlite")


def read_table(out: Path, asset_name: str) -> pd.DataFrame | None:
    """Every partition of a built table under ``out`` (None when it was never built)."""
    folder = out / "tables" / asset_name
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return None
    return pd.concat([pd.read_parquet(f) for f in files], ignore_index=True)


def plan_inputs(
    settings: Rad3dSettings,
    ctrate: CtrateSource,
    rebuilt: set[str],
    generation_runs: list[tuple[set[int], set[str]]],
    scoring_runs: list[tuple[set[int], set[str]]],
    consistency: bool,
    spatial: bool,
) -> PlanInputs:
    """The stages' inputs: the tables the build will not rebuild, else computed in memory from CT-RATE
    (the reports as ``ctrate_reports`` reads them, the sentences with ``report_sentences``' function)."""
    out = settings.out
    notes = []
    reports = None if "ctrate_reports" in rebuilt else read_table(out, "ctrate_reports")
    if reports is None:
        reports = ctrate.reports(settings.split_tuple()).table
        notes.append("reports read from the CT-RATE files (ctrate_reports is not built or is rebuilt)")
    sentences = None if "report_sentences" in rebuilt else read_table(out, "report_sentences")
    needed = reports
    if generation_runs:
        if sentences is not None:
            needed = reports.loc[~reports["VolumeName"].isin(set(sentences["VolumeName"]))]
        if len(needed):
            computed = split_reports(needed.reset_index(drop=True), SentenceSplitter())
            sentences = computed if sentences is None else pd.concat([sentences, computed], ignore_index=True)
            notes.append(f"sentences of {len(needed)} report(s) split in memory (report_sentences not built)")
    if sentences is None:
        sentences = pd.DataFrame(columns=["VolumeName", "section", "text", "has_measurement"])
    return PlanInputs(
        reports=reports,
        sentences=sentences,
        generation_runs=generation_runs,
        scoring_runs=scoring_runs,
        consistency=consistency,
        spatial=spatial,
        candidates_table=read_table(out, "qa_candidates"),
        scores_table=read_table(out, "qa_scores"),
        curated_table=None if "curated_qa" in rebuilt else read_table(out, "curated_qa"),
        notes=notes,
    )


def runs_of(partition_keys: list[str]) -> tuple[set[int], set[str]]:
    """(tasks, shards) of a range of ``open_qa_partitions`` keys."""
    pairs = [split_open_key(k) for k in partition_keys]
    return {int(t) for t, _ in pairs}, {s for _, s in pairs}


def plan_frame(plan: LlmPlan) -> pd.DataFrame:
    rows = [{"stage": line.stage, **line.as_dict()} for line in plan.lines]
    frame = pd.DataFrame(rows, columns=[*LINE_COLUMNS, "notes"])
    frame["notes"] = frame["notes"].map(lambda n: "; ".join(n) if isinstance(n, list) else "")
    return frame


def plan_metadata(plan: LlmPlan) -> dict[str, object]:
    data = plan.as_dict()
    meta: dict[str, object] = {"backend": plan.backend}
    for stage, figures in data["stages"].items():
        for key in ("requests", "cached", "prompt_tokens", "completion_tokens"):
            meta[f"{stage}/{key}"] = MetadataValue.int(int(figures[key]))
        meta[f"{stage}/cost_usd"] = MetadataValue.float(float(figures["cost_usd"]))
        meta[f"{stage}/cost_usd_batch"] = MetadataValue.float(float(figures["cost_usd_batch"]))
        meta[f"{stage}/estimate"] = MetadataValue.bool(bool(figures["estimate"]))
    meta["total_cost_usd"] = MetadataValue.float(float(data["total"]["cost_usd"]))
    meta["total_cost_usd_batch"] = MetadataValue.float(float(data["total"]["cost_usd_batch"]))
    meta["plan"] = MetadataValue.md(f"```\n{plan.table()}\n```")
    return meta


@asset(
    group_name=GROUP,
    code_version="1",
    deps=["ctrate_reports", "report_sentences"],
    kinds={"openai", "json"},
    description="What the LLM stages of a full build (every partition) would send and cost, sending nothing: "
    "requests to send and cached per stage and model, estimated prompt and completion tokens, cost at the "
    "configured and Batch prices (estimates marked). Also `<out>/reports/plan.json`; see docs/plan.md.",
)
def llm_plan(
    context: AssetExecutionContext,
    settings: Rad3dSettings,
    llm: LlmResource,
    ctrate: CtrateSource,
    plan_settings: PlanSettings,
) -> Output[pd.DataFrame]:
    keys = open_qa_partitions.get_partition_keys()
    everything = [runs_of(keys)]
    config = plan_config(llm, settings, plan_settings)
    if config.backend == "openai":
        # Every LLM stage and curated_qa are planned as rebuilt; reports and sentences are read as built.
        rebuilt = {*STAGES, "curated_qa"}
        inputs = plan_inputs(settings, ctrate, rebuilt, everything, everything, True, True)
    else:  # the rules backend sends nothing: no input to read
        inputs = PlanInputs(reports=pd.DataFrame(), sentences=pd.DataFrame())
    with plan_cache(llm, settings.out) as cache:
        plan = plan_llm(config, cache, inputs, STAGES)
    path = write_plan(plan, settings.out / "reports" / "plan.json")
    context.log.info("\n" + plan.table())
    frame = plan_frame(plan)
    meta = {**table_metadata(frame, preview_rows=20), **plan_metadata(plan), "plan_json": MetadataValue.path(str(path))}
    return Output(frame, metadata=meta)

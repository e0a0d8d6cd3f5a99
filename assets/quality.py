"""Quality: cross-judge scoring consistency, spatial questions, benchmark statistics.

The logic is the core's (:mod:`rad3d_pipeline.quality.stage`, :mod:`rad3d_pipeline.quality.benchmark_statistics`);
these assets wire it and show its figures and charts.
"""

import base64
from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    MetadataValue,
    Output,
    asset,
)

from assets.metadata import table_metadata
from assets.open_qa import NO_FAILED_LLM_REQUESTS, failures_check, finish_llm_stage
from rad3d_pipeline.llm.client import Accounting
from rad3d_pipeline.quality.judges import sample_for_consistency
from rad3d_pipeline.quality.stage import (
    judge_spatial,
    llm_spatial,
    no_pairs,
    score_with_judges,
    spatial_subset,
    unscored,
    write_consistency,
)
from resources.ctrate_source import CtrateSource
from resources.llm import LlmResource
from resources.settings import Rad3dSettings

GROUP = "quality"
ALLOW_MISSING = {"allow_missing_partitions": True}
_llm_spatial = llm_spatial  # moved to the core; the name the spatial-judge tests import


def png_markdown(png: bytes, alt: str) -> str:
    """A PNG shown inline in the Dagster UI's metadata panel."""
    return f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})"


def pngs_markdown(paths: list[Path]) -> MetadataValue:
    """PNG files shown as images in the metadata panel (alt text: the file's stem)."""
    return MetadataValue.md("\n\n".join(png_markdown(p.read_bytes(), p.stem) for p in paths))


def _without_judges(
    context: AssetExecutionContext, sample: pd.DataFrame
) -> Iterator[Output[pd.DataFrame] | AssetCheckResult]:
    context.log.warning("no judges configured (RAD3D_JUDGES / RAD3D_JUDGES_FILE): nothing to compare")
    yield Output(no_pairs(), metadata={"judges": "none configured (set RAD3D_JUDGES)", "sample": len(sample)})
    yield AssetCheckResult(
        check_name="every_judge_scored_the_sample", passed=True, metadata={"unscored": "no judges configured"}
    )
    yield failures_check("no_failed_llm_requests", "scoring_consistency", Accounting(), {})


@asset(
    group_name=GROUP,
    code_version="1",
    ins={"qa_candidates": AssetIn(metadata=ALLOW_MISSING)},
    pool="llm",
    check_specs=[
        AssetCheckSpec(
            "every_judge_scored_the_sample",
            asset="scoring_consistency",
            description="Fails when a judge left rows of the sample unscored (how many per judge); its pairs "
            "then compare fewer rows than the sample.",
        ),
        AssetCheckSpec("no_failed_llm_requests", asset="scoring_consistency", description=NO_FAILED_LLM_REQUESTS),
    ],
    description="Several judges score the same seeded, task-proportional sample (600 by default) with the "
    "Figure 17 rubric; pairwise Top-100 overlap, NDCG@100, Spearman, Kendall, MAE; judge ranking; heatmaps "
    "(images in the UI, PNG and CSV under `<out>/reports/`).",
)
def scoring_consistency(
    context: AssetExecutionContext, qa_candidates: pd.DataFrame, settings: Rad3dSettings, llm: LlmResource
) -> Iterator[Output[pd.DataFrame] | AssetCheckResult]:
    if qa_candidates.empty:
        raise ValueError("scoring_consistency: no candidates; materialize qa_candidates first")
    sample = sample_for_consistency(qa_candidates, settings.consistency_sample, settings.seed)
    judges = llm.judge_specs()
    if not judges:
        yield from _without_judges(context, sample)
        return
    names = [j.name for j in judges]
    judge_scores, run = score_with_judges(sample, judges, lambda spec: llm.judge_client(spec, settings.out))
    llm_meta = finish_llm_stage(settings, "scoring_consistency", [], run, llm)
    result = write_consistency(judge_scores, names, settings.out / "reports")
    meta: dict[str, object] = {
        "judges": ", ".join(names),
        "sample": len(sample),
        "report_folder": MetadataValue.path(str(result.folder.resolve())),
        **llm_meta,
    }
    if result.heatmaps:
        meta["heatmaps"] = pngs_markdown(result.heatmaps)
        meta["ranking"] = MetadataValue.md(result.ranking.to_markdown(index=False))
    yield Output(result.pairs, metadata={**table_metadata(result.pairs), **meta})
    missing = unscored(judge_scores, names, len(sample))
    yield AssetCheckResult(
        check_name="every_judge_scored_the_sample", passed=not missing, metadata={"unscored": str(missing)}
    )
    yield failures_check("no_failed_llm_requests", "scoring_consistency", run.accounting, llm_meta)


@asset(
    group_name=GROUP,
    code_version="1",
    ins={"curated_qa": AssetIn(metadata=ALLOW_MISSING)},
    pool="llm",
    check_specs=[AssetCheckSpec("no_failed_llm_requests", asset="spatial_qa", description=NO_FAILED_LLM_REQUESTS)],
    description="Which curated QA pairs need spatial reasoning, and their category (the companion benchmark); "
    "the spatial subset as JSONL (image_path, question, answer, category) under `<out>/reports/`. A verdict the "
    "judge failed to give is a recorded failure (spatial missing), never 'not spatial'.",
)
def spatial_qa(
    curated_qa: pd.DataFrame, settings: Rad3dSettings, llm: LlmResource, ctrate: CtrateSource
) -> Iterator[Output[pd.DataFrame] | AssetCheckResult]:
    if curated_qa.empty:
        raise ValueError("spatial_qa: no curated QA; materialize curated_qa first")
    frame = curated_qa.rename(columns={"Question": "question", "Answer": "answer"})
    backend = llm.resolved_backend()
    judged, run = judge_spatial(frame, backend, lambda: llm.client(llm.spatial_model, settings.out))
    llm_meta = finish_llm_stage(settings, "spatial_qa", [], run, llm)
    layout = ctrate.layout()
    subset = spatial_subset(
        frame, judged, lambda v: str(layout.volume_path(v)), settings.out / "reports" / "spatial_qa.jsonl"
    )
    meta = {
        **table_metadata(subset.table),
        "spatial_rows": subset.written,
        "jsonl": MetadataValue.path(str(subset.jsonl.resolve())),
        "judge": subset.judge,
        "unjudged_rows": subset.unjudged,
        "per_category": MetadataValue.md(subset.per_category.rename("rows").to_frame().to_markdown()),
        **llm_meta,
    }
    yield Output(subset.table, metadata=meta)
    yield failures_check("no_failed_llm_requests", "spatial_qa", run.accounting, llm_meta)


@asset(
    group_name=GROUP,
    code_version="1",
    description="The paper's Table 2 (images, patients, QA pairs per task and split) and Figure 5: biomedical "
    "entities in the QA, organ distribution chart and per-task word clouds (PNG in the UI and `<out>/reports/`).",
)
def benchmark_statistics(release_export: pd.DataFrame, settings: Rad3dSettings) -> Output[pd.DataFrame]:
    from rad3d_pipeline.quality.benchmark_statistics import compute_statistics

    stats = compute_statistics(release_export, settings.seed)
    stats.write(settings.out / "reports")
    clouds = [png_markdown(png, f"wordcloud_task{task}") for task, png in stats.word_clouds.items()]
    meta = {
        **table_metadata(stats.table2, preview_rows=20),
        "entity_extractor": stats.extractor,
        "entities": len(stats.mentions),
        "organ_distribution": MetadataValue.md(png_markdown(stats.organ_png, "organs")),
        "word_clouds": MetadataValue.md("\n\n".join(clouds)),
    }
    return Output(stats.table2, metadata=meta)

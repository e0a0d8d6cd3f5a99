"""Tasks 1-3 (open-ended): LLM or rules generation and scoring per task x shard, curation per task.

The logic is the core's (:mod:`rad3d_pipeline.open_qa.stage`); these assets wire its inputs,
resources and partitions, and turn its figures into metadata and checks.
"""

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MetadataValue,
    Output,
    asset,
)

from assets.metadata import table_metadata
from assets.partitions import open_qa_partitions, open_task_partitions, single_run, split_open_key
from rad3d_pipeline.llm.client import Accounting
from rad3d_pipeline.llm.failures import check_failure_budget, describe_kinds
from rad3d_pipeline.llm.stage import LlmRecord, LlmRun, write_llm_record
from rad3d_pipeline.open_qa.curation import CurationSettings
from rad3d_pipeline.open_qa.stage import (
    OpenPartition,
    curate_partitions,
    generate_candidates,
    max_repeats,
    score_partitions,
    ungrounded_task3,
)
from resources.llm import LlmResource
from resources.settings import Rad3dSettings

GROUP = "open_qa"
NO_FAILED_LLM_REQUESTS = (
    "Warns when LLM requests of the run ended without an answer (within the failure budget): how many, of "
    "which kinds, and the failure records under `<out>/llm/failures/`; past the budget the stage stops instead."
)


def llm_metadata(record: LlmRecord) -> dict[str, Any]:
    """The run's LLM accounting (``llm_*``) and where its rejects and failure records are (absolute paths)."""
    meta: dict[str, Any] = {}
    for k, v in record.accounting.items():
        meta[f"llm_{k}"] = (
            round(v, 6) if isinstance(v, float) else (MetadataValue.json(v) if isinstance(v, dict) else v)
        )
    meta["rejects_file"] = MetadataValue.path(str(record.rejects_file))
    if record.failures_file is not None:
        meta["failures_file"] = MetadataValue.path(str(record.failures_file))
    return meta


def finish_llm_stage(
    settings: Rad3dSettings, stage: str, keys: Sequence[str], run: LlmRun, llm: LlmResource
) -> dict[str, Any]:
    """Keep the run's records under `<out>/llm/`, then stop (one line) when its endpoint was unusable or
    more requests failed than the budget; returns the metadata of the records."""
    record = write_llm_record(settings.out, stage, keys, run)
    details = record.failures_file or Path("<no failure records>").resolve()
    check_failure_budget(stage, run.accounting, llm.failure_budget(), details, run.clients)
    return llm_metadata(record)


def failures_check(check_name: str, stage: str, accounting: Accounting, meta: dict[str, Any]) -> AssetCheckResult:
    """WARN when requests failed within the budget: how many rows are missing, and where the records are."""
    failed = int(accounting.failures)
    metadata: dict[str, Any] = {"failed_requests": failed, "requests": int(accounting.prompts)}
    if failed:
        metadata["failures_by_kind"] = describe_kinds(accounting.failures_by_kind)
        metadata["failures_file"] = meta.get("failures_file")
        metadata["note"] = f"{stage}: the answers of {failed} request(s) are left out; rerun to retry only these"
    return AssetCheckResult(
        check_name=check_name, passed=failed == 0, severity=AssetCheckSeverity.WARN, metadata=metadata
    )


def open_partitions(keys: Sequence[str]) -> list[OpenPartition]:
    """(key, task, shard) of ``open_qa_partitions`` keys."""
    return [(key, *split_open_key(key)) for key in keys]


@asset(
    group_name=GROUP,
    code_version="1",
    partitions_def=open_qa_partitions,
    backfill_policy=single_run,
    pool="llm",
    check_specs=[AssetCheckSpec("no_failed_llm_requests", asset="qa_candidates", description=NO_FAILED_LLM_REQUESTS)],
    description="Candidate QA of Tasks 1-3 (before scoring): Figures 11-13 through the LLM, or the offline "
    "rules backend. Partitioned by task x shard; every reply cached, unparsable replies kept as rejects, "
    "requests without an answer recorded as failures (the stage stops past its failure budget).",
)
def qa_candidates(
    context: AssetExecutionContext,
    ctrate_reports: pd.DataFrame,
    report_sentences: pd.DataFrame,
    settings: Rad3dSettings,
    llm: LlmResource,
) -> Iterator[Output[dict[str, pd.DataFrame]] | AssetCheckResult]:
    keys = list(context.partition_keys)
    backend = llm.resolved_backend()
    run = generate_candidates(
        ctrate_reports,
        report_sentences,
        open_partitions(keys),
        n_shards=settings.n_shards,
        seed=settings.seed,
        backend=backend,
        make_client=lambda: llm.client(llm.generator_model, settings.out),
        task3_stage1=llm.task3_stage1,
    )
    accounting = run.llm.accounting
    context.log.info(f"{backend}: {len(run.frame)} candidates for {len(keys)} partition(s); {accounting.as_dict()}")
    meta = {**table_metadata(run.frame), "backend": backend}
    meta.update(finish_llm_stage(settings, "qa_candidates", keys, run.llm, llm))
    yield Output(run.parts, metadata=meta)
    yield failures_check("no_failed_llm_requests", "qa_candidates", accounting, meta)


@asset(
    group_name=GROUP,
    code_version="1",
    partitions_def=open_qa_partitions,
    backfill_policy=single_run,
    pool="llm",
    check_specs=[AssetCheckSpec("no_failed_llm_requests", asset="qa_scores", description=NO_FAILED_LLM_REQUESTS)],
    description="Five-dimension quality scores (Figure 17 rubric, 1-5) of every candidate, and their mean.",
)
def qa_scores(
    context: AssetExecutionContext, qa_candidates: pd.DataFrame, settings: Rad3dSettings, llm: LlmResource
) -> Iterator[Output[dict[str, pd.DataFrame]] | AssetCheckResult]:
    keys = list(context.partition_keys)
    backend = llm.resolved_backend()
    run = score_partitions(
        qa_candidates,
        open_partitions(keys),
        n_shards=settings.n_shards,
        backend=backend,
        make_client=lambda: llm.client(llm.scorer_model, settings.out),
    )
    meta: dict[str, Any] = {**table_metadata(run.frame), "backend": backend}
    meta.update(finish_llm_stage(settings, "qa_scores", keys, run.llm, llm))
    yield Output(run.parts, metadata=meta)
    yield failures_check("no_failed_llm_requests", "qa_scores", run.llm.accounting, meta)


@asset(
    group_name=GROUP,
    code_version="1",
    partitions_def=open_task_partitions,
    backfill_policy=single_run,
    check_specs=[
        AssetCheckSpec(
            "cap_holds",
            asset="curated_qa",
            blocking=True,
            description="Blocking: no question and no answer string occurs more than the repeat cap (10 by "
            "default) in any release file (split x task x subtask); a failure stops the release export.",
        ),
        AssetCheckSpec(
            "task3_answers_grounded",
            asset="curated_qa",
            description="Fails when a curated Task 3 answer holds a number that is not in its source sentence.",
        ),
    ],
    description="Curated Tasks 1-3 in release columns: every dimension >= 3 and mean >= 3, ranked by mean, "
    "no question or answer string more than 10 times per release file.",
)
def curated_qa(
    context: AssetExecutionContext, qa_candidates: pd.DataFrame, qa_scores: pd.DataFrame, settings: Rad3dSettings
) -> Iterator[Output[dict[str, pd.DataFrame]] | AssetCheckResult]:
    curation = CurationSettings(settings.min_dimension_score, settings.min_mean_score, settings.cap)
    rows, out = curate_partitions(qa_candidates, qa_scores, curation, list(context.partition_keys))
    per_task = {f"rows_task{k}": len(v) for k, v in out.items()}
    yield Output(out, metadata={**table_metadata(rows), **per_task, "candidates": len(qa_candidates)})
    worst = max_repeats(rows)
    yield AssetCheckResult(check_name="cap_holds", passed=worst <= settings.cap, metadata={"max_repeats": worst})
    ungrounded = ungrounded_task3(rows)
    yield AssetCheckResult(
        check_name="task3_answers_grounded", passed=not ungrounded, metadata={"ungrounded": len(ungrounded)}
    )

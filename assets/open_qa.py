"""Tasks 1-3 (open-ended): LLM or rules generation and scoring per task x shard, curation per task."""

import json
from collections.abc import Iterator
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
    PathMetadataValue,
    asset,
)

from assets.metadata import table_metadata
from assets.partitions import open_qa_partitions, open_task_partitions, single_run, split_open_key
from rad3d_pipeline.curation import CurationSettings, curate
from rad3d_pipeline.llm.client import Accounting, LlmClient
from rad3d_pipeline.llm.failures import check_failure_budget, describe_kinds, write_failures
from rad3d_pipeline.llm.prompts import starters_for
from rad3d_pipeline.open_qa import OPEN_SUBTASK_NUMBERS, answer_grounded, candidates_frame
from rad3d_pipeline.open_qa_llm import (
    StageResult,
    generate_task3,
    generate_task12,
    rejects_frame,
    score_candidates,
    score_row,
    scores_frame,
    stage1_sentences_llm,
)
from rad3d_pipeline.patients import shard_column
from rad3d_pipeline.qa_rows import NO_CHOICE, QA_COLUMNS
from rad3d_pipeline.rules_backend import MODEL as RULES_MODEL
from rad3d_pipeline.rules_backend import generate_rules, heuristic_scores
from resources.llm import LlmResource
from resources.parquet_io import write_parquet_atomic
from resources.settings import Rad3dSettings

GROUP = "open_qa"


def record_llm_stage(
    settings: Rad3dSettings,
    stage: str,
    keys: list[str],
    accounting: Accounting,
    rejects: pd.DataFrame,
    backend: str,
    failures: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Rejects, failure records and accounting of one run, kept under <out>/llm/ (per partition range).

    Returns the asset metadata; the accounting JSON is what the build summary prints.
    """
    folder = settings.out / "llm"
    name = f"{keys[0]}..{keys[-1]}".replace("|", "_") if keys else "all"
    write_parquet_atomic(rejects, folder / "rejects" / stage / f"{name}.parquet")
    failures_path = folder / "failures" / stage / f"{name}.jsonl"
    failed = write_failures(failures or [], failures_path)
    (folder / "accounting").mkdir(parents=True, exist_ok=True)
    record = {
        "backend": backend,
        "partitions": f"{keys[0]}..{keys[-1]}" if keys else "",
        **accounting.as_dict(),
        "failure_records": failed,
        "failures_file": str(failures_path.resolve()) if failed else "",
    }
    (folder / "accounting" / f"{stage}.json").write_text(json.dumps(record, indent=2))
    meta: dict[str, Any] = {}
    for k, v in accounting.as_dict().items():
        meta[f"llm_{k}"] = (
            round(v, 6) if isinstance(v, float) else (MetadataValue.json(v) if isinstance(v, dict) else v)
        )
    meta["rejects_file"] = MetadataValue.path(str(folder / "rejects" / stage / f"{name}.parquet"))
    if failed:
        meta["failures_file"] = MetadataValue.path(str(failures_path))
    return meta


def enforce_failure_budget(
    stage: str, accounting: Accounting, llm: LlmResource, meta: dict[str, Any], clients: list[LlmClient]
) -> None:
    """Stop the stage (one line) when its endpoint is unusable or more requests failed than the budget."""
    path = meta.get("failures_file")
    details = Path(path.value) if isinstance(path, PathMetadataValue) else Path("<no failure records>")
    check_failure_budget(stage, accounting, llm.failure_budget(), details.resolve(), clients)


def failures_check(check_name: str, stage: str, accounting: Accounting, meta: dict[str, Any]) -> AssetCheckResult:
    """WARN when requests failed within the budget: how many rows are missing, and where the records are."""
    failed = int(accounting.failures)
    path = meta.get("failures_file")
    metadata: dict[str, Any] = {"failed_requests": failed, "requests": int(accounting.prompts)}
    if failed:
        metadata["failures_by_kind"] = describe_kinds(accounting.failures_by_kind)
        metadata["failures_file"] = path
        metadata["note"] = f"{stage}: the answers of {failed} request(s) are left out; rerun to retry only these"
    return AssetCheckResult(
        check_name=check_name, passed=failed == 0, severity=AssetCheckSeverity.WARN, metadata=metadata
    )


def _split_by_key(frame: pd.DataFrame, keys: list[str], shard_of_volume: dict[str, str]) -> dict[str, pd.DataFrame]:
    shards = frame["VolumeName"].map(shard_of_volume)
    out = {}
    for key in keys:
        task, shard = split_open_key(key)
        mask = (shards == shard) & (frame["task"].astype(str) == task)
        out[key] = frame.loc[mask].reset_index(drop=True)
    return out


@asset(
    group_name=GROUP,
    code_version="1",
    partitions_def=open_qa_partitions,
    backfill_policy=single_run,
    pool="llm",
    check_specs=[AssetCheckSpec("no_failed_llm_requests", asset="qa_candidates")],
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
    wanted = {split_open_key(k) for k in keys}
    tasks = {int(t) for t, _ in wanted}
    shards = {s for _, s in wanted}
    report_shards = shard_column(ctrate_reports["patient_id"], settings.n_shards)
    reports = ctrate_reports.loc[report_shards.isin(shards)].reset_index(drop=True)
    shard_of_volume = dict(zip(ctrate_reports["VolumeName"], report_shards, strict=True))
    sentences = report_sentences.loc[report_sentences["VolumeName"].isin(set(reports["VolumeName"]))]
    backend = llm.resolved_backend()
    accounting = Accounting()
    result = StageResult()
    clients: list[LlmClient] = []
    if backend == "rules":
        starters = {str(v): starters_for(settings.seed, str(v)) for v in reports["VolumeName"]}
        result.candidates = generate_rules(sentences, reports, starters, tasks)
    else:
        generator = llm.client(llm.generator_model, settings.out)
        clients.append(generator)
        if tasks & {1, 2}:
            result.extend(generate_task12(generator, reports, tasks, settings.seed))
        if 3 in tasks and not generator.fatal:
            if llm.task3_stage1 == "llm":
                measured, stage1 = stage1_sentences_llm(generator, reports)
                result.rejects += stage1.rejects
                result.failures += stage1.failures
            else:
                measured = sentences.loc[
                    sentences["has_measurement"].astype(bool) & (sentences["section"] == "findings")
                ]
            result.extend(generate_task3(generator, measured, reports))
        accounting.add(generator.accounting)
    frame = candidates_frame(result.candidates).drop_duplicates("qa_id").reset_index(drop=True)
    out = _split_by_key(frame, keys, shard_of_volume)
    meta: dict[str, Any] = {**table_metadata(frame), "backend": backend}
    stage = "qa_candidates"
    meta.update(
        record_llm_stage(settings, stage, keys, accounting, rejects_frame(result.rejects), backend, result.failures)
    )
    context.log.info(f"{backend}: {len(frame)} candidates for {len(keys)} partition(s); {accounting.as_dict()}")
    enforce_failure_budget(stage, accounting, llm, meta, clients)
    yield Output(out, metadata=meta)
    yield failures_check("no_failed_llm_requests", stage, accounting, meta)


@asset(
    group_name=GROUP,
    code_version="1",
    partitions_def=open_qa_partitions,
    backfill_policy=single_run,
    pool="llm",
    check_specs=[AssetCheckSpec("no_failed_llm_requests", asset="qa_scores")],
    description="Five-dimension quality scores (Figure 17 rubric, 1-5) of every candidate, and their mean.",
)
def qa_scores(
    context: AssetExecutionContext, qa_candidates: pd.DataFrame, settings: Rad3dSettings, llm: LlmResource
) -> Iterator[Output[dict[str, pd.DataFrame]] | AssetCheckResult]:
    keys = list(context.partition_keys)
    backend = llm.resolved_backend()
    accounting = Accounting()
    rejects = rejects_frame([])
    failures: list[dict[str, Any]] = []
    clients: list[LlmClient] = []
    if qa_candidates.empty:
        scores = scores_frame([])
    elif backend == "rules":
        rows = [
            score_row(str(i), heuristic_scores(str(q), str(a)), RULES_MODEL, "rules")
            for i, q, a in zip(qa_candidates["qa_id"], qa_candidates["question"], qa_candidates["answer"], strict=True)
        ]
        scores = scores_frame(rows)
    else:
        scorer = llm.client(llm.scorer_model, settings.out)
        clients.append(scorer)
        scores, result = score_candidates(scorer, qa_candidates)
        accounting.add(scorer.accounting)
        rejects = rejects_frame(result.rejects)
        failures = result.failures
    partition_of = {}
    for key in keys:
        task, shard = split_open_key(key)
        partition_of[(task, shard)] = key
    lookup = qa_candidates.set_index("qa_id") if len(qa_candidates) else None
    out: dict[str, pd.DataFrame] = {k: scores.iloc[0:0] for k in keys}
    if lookup is not None and len(scores):
        shards = shard_column(lookup.loc[scores["qa_id"], "patient_id"].reset_index(drop=True), settings.n_shards)
        tasks = lookup.loc[scores["qa_id"], "task"].astype(str).reset_index(drop=True)
        for key in keys:
            task, shard = split_open_key(key)
            out[key] = scores.loc[((tasks == task) & (shards == shard)).to_numpy()].reset_index(drop=True)
    meta: dict[str, Any] = {**table_metadata(scores), "backend": backend}
    meta.update(record_llm_stage(settings, "qa_scores", keys, accounting, rejects, backend, failures))
    enforce_failure_budget("qa_scores", accounting, llm, meta, clients)
    yield Output(out, metadata=meta)
    yield failures_check("no_failed_llm_requests", "qa_scores", accounting, meta)


def _release_rows(curated: pd.DataFrame) -> pd.DataFrame:
    frame = pd.DataFrame(
        {
            "Task": curated["task"].astype("int64"),
            "Subtask": [
                OPEN_SUBTASK_NUMBERS[(int(t), str(s))]
                for t, s in zip(curated["task"], curated["subtask_name"], strict=True)
            ],
            "VolumeName": curated["VolumeName"],
            "Question": curated["question"],
            "Answer": curated["answer"],
            "QuestionType": "Open",
            "AnswerChoice": NO_CHOICE,
            "Choice A": NO_CHOICE,
            "Choice B": NO_CHOICE,
            "Choice C": NO_CHOICE,
            "Choice D": NO_CHOICE,
            "split": curated["split"],
            "patient_id": curated["patient_id"],
            "subtask_name": curated["subtask_name"],
            "label": "",
        }
    )
    frame = frame[list(QA_COLUMNS)]
    frame["qa_id"] = curated["qa_id"].to_numpy()
    frame["mean_score"] = curated["mean"].to_numpy()
    frame["backend"] = curated["backend_x"].to_numpy() if "backend_x" in curated else curated.get("backend", "")
    frame["source_text"] = curated["source_text"].to_numpy()
    return frame


@asset(
    group_name=GROUP,
    code_version="1",
    partitions_def=open_task_partitions,
    backfill_policy=single_run,
    check_specs=[
        AssetCheckSpec("cap_holds", asset="curated_qa"),
        AssetCheckSpec("task3_answers_grounded", asset="curated_qa"),
    ],
    description="Curated Tasks 1-3 in release columns: every dimension >= 3 and mean >= 3, ranked by mean, "
    "no question or answer string more than 10 times per release file.",
)
def curated_qa(
    context: AssetExecutionContext, qa_candidates: pd.DataFrame, qa_scores: pd.DataFrame, settings: Rad3dSettings
) -> Iterator[Output[dict[str, pd.DataFrame]] | AssetCheckResult]:
    keys = list(context.partition_keys)
    curation = CurationSettings(settings.min_dimension_score, settings.min_mean_score, settings.cap)
    if qa_candidates.empty or qa_scores.empty:
        curated = candidates_frame([]).assign(mean=pd.Series(dtype="float64"))
    else:
        curated = curate(qa_candidates, qa_scores, curation)
    rows = (
        _release_rows(curated) if len(curated) else _release_rows(curated.assign(backend_x=pd.Series(dtype="object")))
    )
    out = {k: rows.loc[rows["Task"].astype(str) == k].reset_index(drop=True) for k in keys}
    per_task = {f"rows_task{k}": len(v) for k, v in out.items()}
    yield Output(out, metadata={**table_metadata(rows), **per_task, "candidates": len(qa_candidates)})
    worst = 0
    for _, group in rows.groupby(["split", "Task", "subtask_name"]):
        worst = max(worst, int(group["Question"].value_counts().max()), int(group["Answer"].value_counts().max()))
    yield AssetCheckResult(check_name="cap_holds", passed=worst <= settings.cap, metadata={"max_repeats": worst})
    task3 = rows[rows["Task"] == 3]
    ungrounded = [a for a, s in zip(task3["Answer"], task3["source_text"], strict=True) if answer_grounded(a, s)]
    yield AssetCheckResult(
        check_name="task3_answers_grounded", passed=not ungrounded, metadata={"ungrounded": len(ungrounded)}
    )

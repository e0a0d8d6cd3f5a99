"""Tasks 1-3 per task x shard: candidate generation, scoring and curation of a partition range.

The open-QA assets' whole logic: which reports and sentences a range of (task, shard) partitions
needs, the rules backend or the LLM, every candidate and score assigned to its own partition, and the
curated release rows with the figures of their checks. An LLM client is made only when a stage
actually sends requests (``make_client``), so its accounting covers exactly this run.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import pandas as pd

from rad3d_pipeline.ingest.patients import shard_column
from rad3d_pipeline.llm.client import LlmClient
from rad3d_pipeline.llm.prompts import starters_for
from rad3d_pipeline.llm.stage import LlmRun
from rad3d_pipeline.open_qa.curation import CurationSettings, curate
from rad3d_pipeline.open_qa.llm_generation import (
    generate_task3,
    generate_task12,
    score_candidates,
    score_row,
    scores_frame,
    stage1_sentences_llm,
)
from rad3d_pipeline.open_qa.qa_rows import NO_CHOICE, QA_COLUMNS
from rad3d_pipeline.open_qa.rules_backend import MODEL as RULES_MODEL
from rad3d_pipeline.open_qa.rules_backend import generate_rules, heuristic_scores
from rad3d_pipeline.open_qa.tasks_open import OPEN_SUBTASK_NUMBERS, answer_grounded, candidates_frame

# A partition of task x shard: (partition key, task, shard).
OpenPartition = tuple[str, str, str]

__all__ = [
    "OpenPartition",
    "curate_partitions",
    "generate_candidates",
    "max_repeats",
    "release_rows",
    "score_partitions",
    "ungrounded_task3",
]


def _by_partition(
    frame: pd.DataFrame, tasks: pd.Series, shards: pd.Series, partitions: Sequence[OpenPartition]
) -> dict[str, pd.DataFrame]:
    """The rows of each partition (``tasks`` and ``shards`` aligned with ``frame``'s rows)."""
    return {
        key: frame.loc[((tasks == task) & (shards == shard)).to_numpy()].reset_index(drop=True)
        for key, task, shard in partitions
    }


@dataclass
class Candidates:
    """Every candidate of the run (one row per qa_id), each partition's rows, and the LLM use."""

    frame: pd.DataFrame
    parts: dict[str, pd.DataFrame]
    llm: LlmRun


def generate_candidates(
    ctrate_reports: pd.DataFrame,
    report_sentences: pd.DataFrame,
    partitions: Sequence[OpenPartition],
    *,
    n_shards: int,
    seed: int,
    backend: str,
    make_client: Callable[[], LlmClient],
    task3_stage1: str = "sentences",
) -> Candidates:
    """Candidate QA of the partitions' tasks and shards: the rules backend, or Figures 11-13 via the LLM.

    Task 3's measured sentences come from ``report_sentences`` (``task3_stage1="sentences"``) or from
    the LLM's stage 1 (``"llm"``); a generator whose endpoint proved unusable sends no Task 3 request.
    """
    tasks = {int(task) for _, task, _ in partitions}
    shards = {shard for _, _, shard in partitions}
    report_shards = shard_column(ctrate_reports["patient_id"], n_shards)
    reports = ctrate_reports.loc[report_shards.isin(shards)].reset_index(drop=True)
    shard_of_volume = dict(zip(ctrate_reports["VolumeName"], report_shards, strict=True))
    sentences = report_sentences.loc[report_sentences["VolumeName"].isin(set(reports["VolumeName"]))]
    run = LlmRun(backend)
    if backend == "rules":
        starters = {str(v): starters_for(seed, str(v)) for v in reports["VolumeName"]}
        run.result.candidates = generate_rules(sentences, reports, starters, tasks)
    else:
        generator = make_client()
        run.clients.append(generator)
        if tasks & {1, 2}:
            run.result.extend(generate_task12(generator, reports, tasks, seed))
        if 3 in tasks and not generator.fatal:
            if task3_stage1 == "llm":
                measured, stage1 = stage1_sentences_llm(generator, reports)
                run.result.rejects += stage1.rejects
                run.result.failures += stage1.failures
            else:
                measured = sentences.loc[
                    sentences["has_measurement"].astype(bool) & (sentences["section"] == "findings")
                ]
            run.result.extend(generate_task3(generator, measured, reports))
        run.used(generator)
    frame = candidates_frame(run.result.candidates).drop_duplicates("qa_id").reset_index(drop=True)
    parts = _by_partition(frame, frame["task"].astype(str), frame["VolumeName"].map(shard_of_volume), partitions)
    return Candidates(frame, parts, run)


@dataclass
class Scores:
    """Every score of the run, each partition's rows, and the LLM use."""

    frame: pd.DataFrame
    parts: dict[str, pd.DataFrame]
    llm: LlmRun


def score_partitions(
    candidates: pd.DataFrame,
    partitions: Sequence[OpenPartition],
    *,
    n_shards: int,
    backend: str,
    make_client: Callable[[], LlmClient],
) -> Scores:
    """Five-dimension scores of every candidate (the rules heuristics or the Figure 17 rubric via the LLM)."""
    run = LlmRun(backend)
    if candidates.empty:
        scores = scores_frame([])
    elif backend == "rules":
        rows = [
            score_row(str(i), heuristic_scores(str(q), str(a)), RULES_MODEL, "rules")
            for i, q, a in zip(candidates["qa_id"], candidates["question"], candidates["answer"], strict=True)
        ]
        scores = scores_frame(rows)
    else:
        scorer = make_client()
        run.clients.append(scorer)
        scores, result = score_candidates(scorer, candidates)
        run.result.extend(result)
        run.used(scorer)
    parts: dict[str, pd.DataFrame] = {key: scores.iloc[0:0] for key, _, _ in partitions}
    if len(candidates) and len(scores):
        of = candidates.set_index("qa_id").loc[scores["qa_id"]].reset_index(drop=True)
        parts = _by_partition(scores, of["task"].astype(str), shard_column(of["patient_id"], n_shards), partitions)
    return Scores(scores, parts, run)


def release_rows(curated: pd.DataFrame) -> pd.DataFrame:
    """Curated candidates in the release columns, plus qa_id, mean_score, backend and source_text."""
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


def curate_partitions(
    candidates: pd.DataFrame, scores: pd.DataFrame, settings: CurationSettings, task_keys: Sequence[str]
) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """The curated release rows of every task, and each task partition's (keys are the task numbers)."""
    if candidates.empty or scores.empty:
        curated = candidates_frame([]).assign(mean=pd.Series(dtype="float64"))
    else:
        curated = curate(candidates, scores, settings)
    rows = release_rows(curated if len(curated) else curated.assign(backend_x=pd.Series(dtype="object")))
    parts = {key: rows.loc[rows["Task"].astype(str) == key].reset_index(drop=True) for key in task_keys}
    return rows, parts


def max_repeats(rows: pd.DataFrame) -> int:
    """The most often any question or answer string occurs in one release file (split x task x subtask)."""
    worst = 0
    for _, group in rows.groupby(["split", "Task", "subtask_name"]):
        worst = max(worst, int(group["Question"].value_counts().max()), int(group["Answer"].value_counts().max()))
    return worst


def ungrounded_task3(rows: pd.DataFrame) -> list[str]:
    """Task 3 answers with a number that is not in their source sentence."""
    task3 = rows[rows["Task"] == 3]
    return [str(a) for a, s in zip(task3["Answer"], task3["source_text"], strict=True) if answer_grounded(a, s)]

"""Tasks 1-3 through an LLM: requests per distinct report or sentence, parsed, grounded, scored.

Identical reports (the reconstructions of a scan) and identical sentences share one
request: the prompt is the same, so the cache answers the second.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import pandas as pd

from rad3d_pipeline.llm.batch import BatchRequest, run_batch
from rad3d_pipeline.llm.client import LlmClient, Outcome, Reject, run_all
from rad3d_pipeline.llm.failures import failure_record
from rad3d_pipeline.llm.parsers import (
    SCORE_DIMENSIONS,
    GeneratedQA,
    ParseError,
    parse_scores,
    parse_task3_stage1,
    parse_task3_stage2,
    parse_task12,
)
from rad3d_pipeline.llm.prompts import load_template, starters_for
from rad3d_pipeline.open_qa.tasks_open import TASK12_ASPECTS, Candidate, answer_grounded, report_key

REJECT_COLUMNS: tuple[str, ...] = ("stage", "subject", "request_key", "attempt", "model", "raw_text", "reason")
SCORE_COLUMNS: tuple[str, ...] = ("qa_id", *SCORE_DIMENSIONS, "mean", "scorer", "backend")


@dataclass
class StageResult:
    candidates: list[Candidate] = field(default_factory=list)
    rejects: list[dict[str, Any]] = field(default_factory=list)
    failures: list[dict[str, Any]] = field(default_factory=list)  # requests that ended without an answer

    def add_rejects(self, stage: str, subject: str, outcome: Outcome[Any], model: str = "") -> None:
        """The outcome's rejects, and a failure record when it ended without an answer."""
        for r in outcome.rejects:
            self.rejects.append(_reject_row(stage, subject, r))
        if outcome.value is None:
            self.failures.append(failure_record(stage, subject, model, outcome))

    def extend(self, other: StageResult) -> None:
        self.candidates += other.candidates
        self.rejects += other.rejects
        self.failures += other.failures


def _reject_row(stage: str, subject: str, r: Reject) -> dict[str, Any]:
    return {
        "stage": stage,
        "subject": subject,
        "request_key": r.key,
        "attempt": r.attempt,
        "model": r.model,
        "raw_text": r.raw_text,
        "reason": r.reason,
    }


def rejects_frame(rows: Iterable[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(list(rows), columns=list(REJECT_COLUMNS))
    return frame.astype({"attempt": "int64"}) if len(frame) else frame


def _run(
    client: LlmClient, specs: Sequence[tuple[list[dict[str, Any]], Callable[[str], Any], str]]
) -> list[Outcome[Any]]:
    """Run (messages, parser, template version) requests; in batch mode first through the Batch API."""
    if client.endpoint.batch and specs:
        run_batch(
            client.endpoint,
            client.cache,
            [BatchRequest(m, v) for m, _, v in specs],
            purpose=specs[0][2],
            poll_s=client.endpoint.batch_poll_s,
        )
    return run_all([_job(client, m, p, v) for m, p, v in specs], [client])


def _job(
    client: LlmClient, messages: list[dict[str, Any]], parse: Callable[[str], Any], version: str
) -> Callable[[], Awaitable[Outcome[Any]]]:
    return partial(client.complete_parsed, messages, parse, template_version=version)


def generate_task12(client: LlmClient, reports: pd.DataFrame, tasks: set[int], seed: int) -> StageResult:
    """One request per distinct report; six pairs mapped to the release's Task 1/2 subtasks."""
    template = load_template("task12")
    result = StageResult()
    groups: dict[str, list[tuple[str, str, str]]] = {}
    texts: dict[str, tuple[str, str]] = {}
    for volume, split, patient, findings, impressions in zip(
        reports["VolumeName"],
        reports["split"],
        reports["patient_id"],
        reports["Findings_EN"],
        reports["Impressions_EN"],
        strict=True,
    ):
        key = report_key(str(findings), str(impressions))
        groups.setdefault(key, []).append((str(volume), str(split), str(patient)))
        texts[key] = (str(findings), str(impressions))
    keys = list(groups)
    specs = []
    for key in keys:
        findings, impressions = texts[key]
        starters = starters_for(seed, key)
        values = {"Findings": findings, "Impressions": impressions}
        values.update({f"Starter{i + 1}": s for i, s in enumerate(starters)})
        specs.append((template.messages(**values), parse_task12, template.template_version))
    outcomes = _run(client, specs)
    for key, outcome in zip(keys, outcomes, strict=True):
        result.add_rejects("task12", groups[key][0][0], outcome, client.endpoint.model)
        if outcome.value is None:
            continue
        pairs: list[GeneratedQA] = outcome.value
        source = texts[key][0]
        for volume, split, patient in groups[key]:
            for pair in pairs:
                task, subtask = TASK12_ASPECTS[pair.index]
                if task in tasks:
                    src = texts[key][1] if pair.index == 6 else source
                    result.candidates.append(
                        Candidate(
                            volume,
                            split,
                            patient,
                            task,
                            subtask,
                            pair.question,
                            pair.answer,
                            src,
                            "openai",
                            client.endpoint.model,
                            outcome.key,
                        )
                    )
    return result


def stage1_sentences_llm(client: LlmClient, reports: pd.DataFrame) -> tuple[pd.DataFrame, StageResult]:
    """Figure 12: the LLM extracts the measurement sentences of each distinct Findings text."""
    template = load_template("task3_stage1")
    result = StageResult()
    distinct = sorted(set(reports["Findings_EN"].astype(str)))
    jobs = [
        _job(client, template.messages(Findings=f), parse_task3_stage1, template.template_version) for f in distinct
    ]
    outcomes = run_all(jobs, [client])
    found = dict(zip(distinct, outcomes, strict=True))
    rows = []
    for volume, findings in zip(reports["VolumeName"], reports["Findings_EN"].astype(str), strict=True):
        outcome = found[findings]
        result.add_rejects("task3_stage1", str(volume), outcome, client.endpoint.model)
        for sentence in outcome.value or []:
            rows.append({"VolumeName": volume, "text": sentence})
    return pd.DataFrame(rows, columns=["VolumeName", "text"]), result


def _stage2_parser(sentence: str) -> Callable[[str], GeneratedQA]:
    def parse(text: str) -> GeneratedQA:
        qa = parse_task3_stage2(text)
        problem = answer_grounded(qa.answer, sentence)
        if problem is not None:
            raise ParseError(f"Task 3 answer {qa.answer!r}: {problem}")
        return qa

    return parse


def generate_task3(client: LlmClient, sentences: pd.DataFrame, volumes: pd.DataFrame) -> StageResult:
    """Figure 13: one request per distinct measurement sentence; answers must be grounded in it."""
    template = load_template("task3_stage2")
    result = StageResult()
    info = {
        str(v): (str(s), str(p))
        for v, s, p in zip(volumes["VolumeName"], volumes["split"], volumes["patient_id"], strict=True)
    }
    distinct = sorted(set(sentences["text"].astype(str)))
    jobs = [_job(client, template.messages(Sentence=s), _stage2_parser(s), template.template_version) for s in distinct]
    outcomes = dict(zip(distinct, run_all(jobs, [client]), strict=True))
    for volume, text in zip(sentences["VolumeName"].astype(str), sentences["text"].astype(str), strict=True):
        if volume not in info:
            continue
        outcome = outcomes[text]
        result.add_rejects("task3_stage2", volume, outcome, client.endpoint.model)
        if outcome.value is None:
            continue
        qa: GeneratedQA = outcome.value
        split, patient = info[volume]
        result.candidates.append(
            Candidate(
                volume,
                split,
                patient,
                3,
                qa.aspect,
                qa.question,
                qa.answer,
                text,
                "openai",
                client.endpoint.model,
                outcome.key,
            )
        )
    return result


def score_candidates(client: LlmClient, candidates: pd.DataFrame) -> tuple[pd.DataFrame, StageResult]:
    """Figure 17 scores; each distinct (question, answer) is asked once."""
    template = load_template("scoring")
    result = StageResult()
    pairs = sorted(set(zip(candidates["question"].astype(str), candidates["answer"].astype(str), strict=True)))
    specs = [(template.messages(Question=q, Answer=a), parse_scores, template.template_version) for q, a in pairs]
    outcomes = dict(zip(pairs, _run(client, specs), strict=True))
    rows = []
    for qa_id, q, a in zip(candidates["qa_id"], candidates["question"], candidates["answer"], strict=True):
        outcome = outcomes[(str(q), str(a))]
        result.add_rejects("scoring", str(qa_id), outcome, client.endpoint.model)
        if outcome.value is None:
            continue
        rows.append(score_row(str(qa_id), outcome.value, client.endpoint.model, "openai"))
    return scores_frame(rows), result


def score_row(qa_id: str, scores: dict[str, int], scorer: str, backend: str) -> dict[str, Any]:
    row: dict[str, Any] = {"qa_id": qa_id, **scores}
    row["mean"] = sum(scores[d] for d in SCORE_DIMENSIONS) / len(SCORE_DIMENSIONS)
    row["scorer"] = scorer
    row["backend"] = backend
    return row


def scores_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(SCORE_COLUMNS))
    if frame.empty:
        return frame.astype({d: "int64" for d in SCORE_DIMENSIONS} | {"mean": "float64"})
    return frame

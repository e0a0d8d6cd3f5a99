"""Tasks 1-3 (open-ended): the release's subtasks, candidate rows, and the Task 3 grounding rule."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import pandas as pd

# Figure 11's six aspects -> (release task, release file). The release swaps the paper's
# Task 1 and 2: Image Observation is Task 1, Anomaly Detection Task 2.
TASK12_ASPECTS: dict[int, tuple[int, str]] = {
    1: (1, "Anatomical_observation"),
    2: (1, "Pathological_observation"),
    3: (2, "Abnormality_type"),
    4: (2, "Abnormality_feature"),
    5: (2, "Abnormality_position"),
    6: (2, "Diagnosis"),
}
TASK3_FILES: dict[str, str] = {"Size": "Size", "Diameter": "Diameter", "Thickness": "Thickness"}

# Release subtask numbers: alphabetical order of the file names within each task.
OPEN_SUBTASK_NUMBERS: dict[tuple[int, str], int] = {
    (1, "Anatomical_observation"): 1,
    (1, "Pathological_observation"): 2,
    (2, "Abnormality_feature"): 1,
    (2, "Abnormality_position"): 2,
    (2, "Abnormality_type"): 3,
    (2, "Diagnosis"): 4,
    (3, "Diameter"): 1,
    (3, "Size"): 2,
    (3, "Thickness"): 3,
}

CANDIDATE_COLUMNS: tuple[str, ...] = (
    "qa_id",
    "VolumeName",
    "split",
    "patient_id",
    "task",
    "subtask_name",
    "question",
    "answer",
    "source_text",
    "backend",
    "model",
    "request_key",
)


@dataclass(frozen=True)
class Candidate:
    volume_name: str
    split: str
    patient_id: str
    task: int
    subtask_name: str
    question: str
    answer: str
    source_text: str
    backend: str
    model: str
    request_key: str = ""

    @property
    def qa_id(self) -> str:
        blob = "\x1f".join((self.volume_name, str(self.task), self.subtask_name, self.question, self.answer))
        return hashlib.sha1(blob.encode("utf-8")).hexdigest()[:16]


def candidates_frame(candidates: list[Candidate]) -> pd.DataFrame:
    if not candidates:
        frame = pd.DataFrame({c: pd.Series(dtype="object") for c in CANDIDATE_COLUMNS})
        return frame.astype({"task": "int64"})
    return pd.DataFrame(
        {
            "qa_id": [c.qa_id for c in candidates],
            "VolumeName": [c.volume_name for c in candidates],
            "split": [c.split for c in candidates],
            "patient_id": [c.patient_id for c in candidates],
            "task": pd.Series([c.task for c in candidates], dtype="int64"),
            "subtask_name": [c.subtask_name for c in candidates],
            "question": [c.question for c in candidates],
            "answer": [c.answer for c in candidates],
            "source_text": [c.source_text for c in candidates],
            "backend": [c.backend for c in candidates],
            "model": [c.model for c in candidates],
            "request_key": [c.request_key for c in candidates],
        }
    )


_NUMBER_RE = re.compile(r"\d+(?:[.,]\d+)?")


def numbers_in(text: str) -> list[str]:
    """Numbers as written, with a decimal comma read as a point and trailing zeros dropped."""
    out = []
    for raw in _NUMBER_RE.findall(text):
        value = float(raw.replace(",", "."))
        out.append(f"{value:g}")
    return out


def answer_grounded(answer: str, sentence: str) -> str | None:
    """None when every number of a Task 3 answer occurs in its source sentence, else the reason."""
    answer_numbers = numbers_in(answer)
    if not answer_numbers:
        return "answer has no number"
    available = set(numbers_in(sentence))
    missing = [n for n in answer_numbers if n not in available]
    if missing:
        return f"number(s) {', '.join(missing)} not in the source sentence"
    return None


def report_key(findings: str, impressions: str) -> str:
    """Content hash of a report: reconstructions with the same report share requests."""
    return hashlib.sha1(f"{findings}\x1f{impressions}".encode()).hexdigest()[:16]

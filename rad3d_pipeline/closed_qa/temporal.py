"""Temporal sequences and Tasks 5 (static) and 6 (longitudinal) temporal diagnosis.

The rule (reference-facts.md), for each of the 17 temporal labels of a patient's current
(last) scan given the earlier scans in time order:

- A Refractory: some earlier scan 1, now 1;  B Resolved: some earlier scan 1, now 0;
- C New: every earlier scan 0, now 1;        D No abnormality: every earlier scan 0, now 0.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from rad3d_pipeline.closed_qa.question_templates import (
    TASK5_TEMPLATES,
    TASK6_FLUCTUATION_PREFIXES,
    TASK6_NOTE,
    TASK6_QUESTION_PATTERNS,
    TASK6_SEQUENCE_PREFIXES,
    TEMPORAL_CHOICES,
)
from rad3d_pipeline.ingest.labels import TEMPORAL_LABELS
from rad3d_pipeline.ingest.patients import first_reconstructions
from rad3d_pipeline.open_qa.qa_rows import QA_COLUMNS, empty_qa_frame, seeded_rng, shuffled_indices

SEQUENCE_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "split",
    "VolumeName",
    "scan",
    "label",
    "history",
    "current",
    "temporal_class",
)


def temporal_class(history: list[int] | tuple[int, ...], current: int) -> str:
    """The class letter (A-D) of one label given its earlier values and its current value."""
    seen = any(v == 1 for v in history)
    if current == 1:
        return "A" if seen else "C"
    return "B" if seen else "D"


def temporal_classes(any_earlier: np.ndarray, current: np.ndarray) -> np.ndarray:
    """Vectorised :func:`temporal_class` over arrays of booleans and 0/1 values."""
    now = current == 1
    return np.where(now, np.where(any_earlier, "A", "C"), np.where(any_earlier, "B", "D"))


def build_sequences(labels: pd.DataFrame) -> pd.DataFrame:
    """Per multi-scan patient, the label history over scans and the current scan's class.

    Scans are ordered by their letter; each scan's labels come from its first
    reconstruction; the current scan is the last one and its volume is its first
    reconstruction.
    """
    scans = first_reconstructions(labels)  # sorted by patient_id, scan
    n_scans = scans.groupby("patient_id", sort=False)["scan"].transform("size")
    scans = scans.loc[n_scans >= 2].reset_index(drop=True)
    if scans.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in SEQUENCE_COLUMNS})
    values = scans[list(TEMPORAL_LABELS)].to_numpy(dtype=np.int8)
    patient = scans["patient_id"].to_numpy()
    is_last = np.append(patient[1:] != patient[:-1], True)
    last_rows = np.flatnonzero(is_last)
    # Earlier scans of each patient form a contiguous block ending just before its last row.
    starts = np.concatenate(([0], last_rows[:-1] + 1))
    earlier = values[~is_last]
    bounds = np.cumsum(last_rows - starts)[:-1]
    blocks = np.split(earlier, bounds)
    any_earlier = np.stack([block.any(axis=0) for block in blocks])
    current = values[last_rows]
    classes = temporal_classes(any_earlier, current)
    n_labels = len(TEMPORAL_LABELS)
    histories: list[list[int]] = []
    for block in blocks:
        histories.extend(block.T.tolist())
    last = scans.iloc[last_rows]
    return pd.DataFrame(
        {
            "patient_id": np.repeat(last["patient_id"].to_numpy(), n_labels),
            "split": np.repeat(last["split"].to_numpy(), n_labels),
            "VolumeName": np.repeat(last["VolumeName"].to_numpy(), n_labels),
            "scan": np.repeat(last["scan"].to_numpy(), n_labels),
            "label": np.tile(np.array(TEMPORAL_LABELS, dtype=object), len(last_rows)),
            "history": histories,
            "current": current.reshape(-1).astype(np.int64),
            "temporal_class": classes.reshape(-1).astype(object),
        }
    )[list(SEQUENCE_COLUMNS)]


def subtask_of_scan(scan: str) -> int:
    """Subtask number of a current scan: b = 1 (one earlier scan), c = 2, ..."""
    return ord(scan) - ord("a")


def format_history(history: list[int] | tuple[int, ...]) -> str:
    return "[" + ", ".join(str(int(v)) for v in history) + "]"


def _temporal_rows(sequences: pd.DataFrame, task: int, questions: list[str]) -> pd.DataFrame:
    letters = sequences["temporal_class"].to_numpy()
    frame = pd.DataFrame(
        {
            "Task": task,
            "Subtask": sequences["scan"].map(subtask_of_scan).astype("int64").to_numpy(),
            "VolumeName": sequences["VolumeName"].to_numpy(),
            "Question": questions,
            "Answer": [TEMPORAL_CHOICES[letter] for letter in letters],
            "QuestionType": "Close",
            "AnswerChoice": letters,
            "Choice A": TEMPORAL_CHOICES["A"],
            "Choice B": TEMPORAL_CHOICES["B"],
            "Choice C": TEMPORAL_CHOICES["C"],
            "Choice D": TEMPORAL_CHOICES["D"],
            "split": sequences["split"].to_numpy(),
            "patient_id": sequences["patient_id"].to_numpy(),
            "subtask_name": sequences["scan"].to_numpy(),
            "label": sequences["label"].to_numpy(),
        }
    )
    return frame[list(QA_COLUMNS)]


def _pool_positions(sequences: pd.DataFrame, seed: int, purpose: str, sizes: tuple[int, ...]) -> list[np.ndarray]:
    """Per pool, each row's template index: its volume's seeded shuffle of the pool at the row's position.

    A pool's shuffle depends only on its length and the generator (seeded by seed, purpose and
    volume), so shuffling the indices gives the same order as shuffling the strings.
    """
    volumes = sequences["VolumeName"].astype(str)
    codes, distinct = pd.factorize(volumes, sort=False)
    perms = [np.empty((len(distinct), n), dtype=np.int64) for n in sizes]
    for i, volume in enumerate(distinct.tolist()):
        rng = seeded_rng(seed, purpose, volume)
        for perm, n in zip(perms, sizes, strict=True):
            perm[i] = shuffled_indices(n, rng)
    position = sequences.groupby(codes, sort=False).cumcount().to_numpy()
    return [perm[codes, position % n] for perm, n in zip(perms, sizes, strict=True)]


def build_task5(sequences: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Task 5: the current scan alone, one static question per temporal label."""
    if sequences.empty:
        return empty_qa_frame()
    (template,) = _pool_positions(sequences, seed, "task5", (len(TASK5_TEMPLATES),))
    labels = sequences["label"].astype(str).tolist()
    questions = [
        TASK5_TEMPLATES[t].format(aspect=label.lower()) for t, label in zip(template.tolist(), labels, strict=True)
    ]
    return _temporal_rows(sequences, 5, questions)


def task6_question(label: str, history: list[int] | tuple[int, ...], prefix: str, fluct: str, pattern: str) -> str:
    aspect = label.lower()
    seq = prefix.format(aspect=aspect, seq=format_history(history))
    return f"{seq} {TASK6_NOTE} {fluct} {pattern.format(aspect=aspect)}"


def build_task6(sequences: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Task 6: the history embedded as ``[0, 1]`` plus the note, Figure 16's three pools."""
    if sequences.empty:
        return empty_qa_frame()
    pools = (TASK6_SEQUENCE_PREFIXES, TASK6_FLUCTUATION_PREFIXES, TASK6_QUESTION_PATTERNS)
    prefix, fluct, pattern = _pool_positions(sequences, seed, "task6", tuple(len(p) for p in pools))
    histories = [format_history(h) for h in sequences["history"].tolist()]
    aspects = [label.lower() for label in sequences["label"].astype(str).tolist()]
    questions = [
        f"{TASK6_SEQUENCE_PREFIXES[p].format(aspect=a, seq=h)} {TASK6_NOTE} {TASK6_FLUCTUATION_PREFIXES[f]} "
        f"{TASK6_QUESTION_PATTERNS[q].format(aspect=a)}"
        for p, f, q, a, h in zip(prefix.tolist(), fluct.tolist(), pattern.tolist(), aspects, histories, strict=True)
    ]
    return _temporal_rows(sequences, 6, questions)


def check_temporal_rule(qa: pd.DataFrame, sequences: pd.DataFrame) -> list[str]:
    """Violations of the temporal rule in Task 5/6 rows, as messages in row order (empty when all hold).

    The expected letter comes from :func:`temporal_class` on each distinct (history, current).
    """
    histories = [tuple(int(v) for v in h) for h in sequences["history"].tolist()]
    currents = [int(c) for c in sequences["current"].tolist()]
    rule = {key: temporal_class(list(key[0]), key[1]) for key in set(zip(histories, currents, strict=True))}
    expected = pd.DataFrame(
        {
            "VolumeName": sequences["VolumeName"].astype(str).to_numpy(dtype=object),
            "label": sequences["label"].astype(str).to_numpy(dtype=object),
            "expected": [rule[key] for key in zip(histories, currents, strict=True)],
        }
    ).drop_duplicates(["VolumeName", "label"], keep="last")
    got = pd.DataFrame(
        {
            "VolumeName": qa["VolumeName"].astype(str).to_numpy(dtype=object),
            "label": qa["label"].astype(str).to_numpy(dtype=object),
            "letter": qa["AnswerChoice"].astype(str).to_numpy(dtype=object),
        }
    )
    joined = got.merge(expected, on=["VolumeName", "label"], how="left", sort=False)
    bad = joined[joined["expected"].isna() | (joined["letter"] != joined["expected"])]
    problems: list[str] = []
    for volume, label, letter, want in bad.itertuples(index=False, name=None):
        if not isinstance(want, str):
            problems.append(f"{volume} {label}: no temporal sequence")
        else:
            problems.append(f"{volume} {label}: answer {letter}, rule gives {want}")
    return problems

"""The release's row schema, shared by every task's QA table."""

from __future__ import annotations

import random

import pandas as pd

RELEASE_COLUMNS: tuple[str, ...] = (
    "Task",
    "Subtask",
    "VolumeName",
    "Question",
    "Answer",
    "QuestionType",
    "AnswerChoice",
    "Choice A",
    "Choice B",
    "Choice C",
    "Choice D",
)
# Columns every QA table carries besides the release's: where the row comes from and
# which release file (``subtask_name``) it goes to.
QA_EXTRA_COLUMNS: tuple[str, ...] = ("split", "patient_id", "subtask_name", "label")
QA_COLUMNS: tuple[str, ...] = (*RELEASE_COLUMNS, *QA_EXTRA_COLUMNS)
NO_CHOICE = "-"


def seeded_rng(seed: int, purpose: str, key: str) -> random.Random:
    """A generator that depends only on (seed, purpose, key): stable across runs and partitions."""
    return random.Random(f"{seed}:{purpose}:{key}")


def shuffled(pool: tuple[str, ...], rng: random.Random) -> list[str]:
    items = list(pool)
    rng.shuffle(items)
    return items


def shuffled_indices(n: int, rng: random.Random) -> list[int]:
    """The order :func:`shuffled` gives a pool of ``n`` items, as indices (same generator, same draws)."""
    items = list(range(n))
    rng.shuffle(items)
    return items


def empty_qa_frame() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="object") for c in QA_COLUMNS})
    return frame.astype({"Task": "int64", "Subtask": "int64"})

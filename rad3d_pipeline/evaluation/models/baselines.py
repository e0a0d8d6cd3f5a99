"""Baselines that give every leaderboard a floor: the training prior and a uniform random choice."""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import pandas as pd

from rad3d_pipeline.evaluation.models.base import ALL_TASKS, LETTERS, PredictionItem


@dataclass
class PriorAdapter:
    """The most frequent training answer per (task, subtask); for closed tasks as ``<letter>. <choice>``."""

    training: pd.DataFrame  # release rows of the training split
    name: str = "prior"
    tasks: frozenset[int] = ALL_TASKS
    input_profile: str | None = None
    batch_size: int = 1024
    _answers: dict[tuple[int, int], str] = field(default_factory=dict, init=False)
    _letters: dict[tuple[int, int], str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        for (task, subtask), group in self.training.groupby(["Task", "Subtask"], sort=True):
            key = (int(str(task)), int(str(subtask)))
            counts = group["Answer"].astype(str).value_counts()
            self._answers[key] = str(counts.sort_index().sort_values(ascending=False, kind="stable").index[0])
            letters = group["AnswerChoice"].astype(str)
            letters = letters[letters.isin(LETTERS)]
            if len(letters):
                ordered = letters.value_counts().sort_index().sort_values(ascending=False, kind="stable")
                self._letters[key] = str(ordered.index[0])
        overall = self.training["Answer"].astype(str).value_counts()
        self._fallback = str(overall.index[0]) if len(overall) else ""

    def predict(self, items: list[PredictionItem]) -> list[str]:
        out = []
        for item in items:
            key = (item.task, item.subtask)
            if item.closed and item.choices:
                letter = self._letters.get(key, "A")
                index = min(LETTERS.index(letter), len(item.choices) - 1)
                out.append(f"{LETTERS[index]}. {item.choices[index]}")
            else:
                out.append(self._answers.get(key, self._fallback))
        return out


@dataclass
class RandomAdapter:
    """A uniform choice among the choices (closed) or among the subtask's training answers (open); seeded."""

    training: pd.DataFrame
    seed: int = 0
    name: str = "random"
    tasks: frozenset[int] = ALL_TASKS
    input_profile: str | None = None
    batch_size: int = 1024

    def __post_init__(self) -> None:
        self._pools: dict[tuple[int, int], list[str]] = {
            (int(str(t)), int(str(s))): sorted(set(g["Answer"].astype(str)))
            for (t, s), g in self.training.groupby(["Task", "Subtask"], sort=True)
        }

    def predict(self, items: list[PredictionItem]) -> list[str]:
        out = []
        for item in items:
            rng = random.Random(f"{self.seed}:{item.volume_name}:{item.question}")
            if item.closed and item.choices:
                index = rng.randrange(len(item.choices))
                out.append(f"{LETTERS[index]}. {item.choices[index]}")
            else:
                pool = self._pools.get((item.task, item.subtask)) or [""]
                out.append(rng.choice(pool))
        return out

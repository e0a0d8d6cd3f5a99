"""The model-adapter protocol and the 3D-RAD prompt format."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import pandas as pd

LETTERS = ("A", "B", "C", "D")


@dataclass(frozen=True)
class PredictionItem:
    """One question to answer: the release row plus where its preprocessed volume is."""

    volume_name: str
    task: int
    subtask: int
    subtask_name: str
    question: str
    answer: str
    question_type: str  # "Open" | "Close"
    choices: tuple[str, ...] = ()  # the used choices, in letter order
    answer_choice: str = ""
    image_path: str = ""  # a preprocessed .npy for the adapter's input profile, "" when none

    @property
    def closed(self) -> bool:
        return self.question_type == "Close"


def format_3drad_prompt(item: PredictionItem) -> str:
    """The 3D-RAD evaluation prompt: the question, and for closed tasks the choices and 'Answer:'."""
    if not item.closed:
        return item.question
    choices = " ".join(f"{letter}. {text}" for letter, text in zip(LETTERS, item.choices, strict=False))
    return f"{item.question}\nChoices: {choices}\nAnswer:"


def items_from_release(rows: pd.DataFrame, image_paths: dict[str, str] | None = None) -> list[PredictionItem]:
    """Prediction items from release rows (release columns plus subtask_name)."""
    paths = image_paths or {}
    items = []
    for record in rows.to_dict("records"):
        values = {str(k): str(v) for k, v in record.items()}
        choices = tuple(
            values[f"Choice {letter}"]
            for letter in LETTERS
            if values.get(f"Choice {letter}", "-") not in {"-", "", "nan", "None"}
        )
        items.append(
            PredictionItem(
                volume_name=values["VolumeName"],
                task=int(values["Task"]),
                subtask=int(values["Subtask"]),
                subtask_name=values["subtask_name"],
                question=values["Question"],
                answer=values["Answer"],
                question_type=values["QuestionType"],
                choices=choices,
                answer_choice=values["AnswerChoice"] if values["AnswerChoice"] in LETTERS else "",
                image_path=paths.get(values["VolumeName"], ""),
            )
        )
    return items


class ModelAdapter(Protocol):
    """What the predictions asset needs of a model."""

    name: str
    tasks: frozenset[int]
    input_profile: str | None  # the volume profile it reads (issue 5), None for text-only
    batch_size: int

    def predict(self, items: list[PredictionItem]) -> list[str]: ...


@dataclass
class Registry:
    """Adapter factories by kind; a model setting names a kind and its options."""

    factories: dict[str, Callable[..., ModelAdapter]] = field(default_factory=dict)

    def register(self, kind: str, factory: Callable[..., ModelAdapter]) -> None:
        self.factories[kind] = factory

    def create(self, kind: str, **options: Any) -> ModelAdapter:
        if kind not in self.factories:
            raise ValueError(f"unknown model kind {kind!r}: known {', '.join(sorted(self.factories))}")
        return self.factories[kind](**options)


ALL_TASKS = frozenset(range(1, 7))

"""Predictions from other harnesses (JSONL or CSV with question/answer/prediction), joined to the release.

Rows are matched by volume and question: the volume comes from ``VolumeName`` or from the
file name in ``image_path`` (``.../valid_1000_a_1.npy`` is ``valid_1000_a_1.nii.gz``), in
either CT-RATE's (``valid_``) or the release's (``test_``) spelling.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from rad3d_pipeline.common.table_files import read_table_file
from rad3d_pipeline.evaluation.models.base import ALL_TASKS, PredictionItem


class ImportError_(ValueError):
    """A prediction file that cannot be read; the message names the file, line and reason."""


def _volume_key(name: str) -> str:
    stem = Path(name).name
    stem = re.sub(r"\.(nii\.gz|nii|npy|npz|pt)$", "", stem)
    return re.sub(r"^(test|valid)_", "valid_", stem)


def _question_key(question: str) -> str:
    return re.sub(r"\s+", " ", question.strip().lower())


def read_prediction_file(path: Path) -> pd.DataFrame:
    """question, answer, prediction and volume from a JSONL or CSV file."""
    if not path.is_file():
        raise ImportError_(f"{path}: file not found")
    frame = read_table_file(path, (".jsonl", ".csv"), ImportError_)
    missing = [c for c in ("question", "prediction") if c not in frame.columns]
    if missing:
        raise ImportError_(f"{path}: missing field(s) {', '.join(missing)}")
    if "VolumeName" in frame.columns:
        volumes = frame["VolumeName"].astype(str)
    elif "image_path" in frame.columns:
        volumes = frame["image_path"].astype(str)
    else:
        raise ImportError_(f"{path}: needs VolumeName or image_path to join on the volume")
    out = pd.DataFrame(
        {
            "volume_key": volumes.map(_volume_key),
            "question_key": frame["question"].astype(str).map(_question_key),
            "prediction": frame["prediction"].fillna("").astype(str),
        }
    )
    if "answer" in frame.columns:
        out["answer"] = frame["answer"].astype(str)
    return out.drop_duplicates(["volume_key", "question_key"], keep="last")


@dataclass
class ImportedAdapter:
    """Looks answers up in a prediction file; items it does not cover get an empty prediction."""

    path: Path
    name: str = "import"
    tasks: frozenset[int] = ALL_TASKS
    input_profile: str | None = None
    batch_size: int = 100_000
    _lookup: dict[tuple[str, str], str] = field(default_factory=dict, init=False)

    def __post_init__(self) -> None:
        table = read_prediction_file(Path(self.path))
        self._lookup = {
            (v, q): p for v, q, p in zip(table["volume_key"], table["question_key"], table["prediction"], strict=True)
        }

    def predict(self, items: list[PredictionItem]) -> list[str]:
        return [self._lookup.get((_volume_key(i.volume_name), _question_key(i.question)), "") for i in items]

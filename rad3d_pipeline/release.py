"""The 3D-RAD release layout: ``3DRAD/{test,train}/<TaskFolder>/<Subtask>.csv``.

Each split folder is written into a temporary sibling and swapped in by rename, so a
failed export never leaves a half-written release.
"""

from __future__ import annotations

import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from rad3d_pipeline.qa_rows import RELEASE_COLUMNS

TASK_FOLDERS: dict[int, str] = {
    1: "Task1_Image_Observation",
    2: "Task2_Anomaly_Detection",
    3: "Task3_Medical_Computation",
    4: "Task4_Existence_Detection",
    5: "Task5_Static_Temporal_Diagnosis",
    6: "Task6_Longitudinal_Temporal_Diagnosis",
}
RELEASE_FOLDER = "3DRAD"
DEFAULT_TRAIN_FRACTIONS: tuple[float, ...] = (0.01, 0.10)


def release_split(split: str, rename_valid_to_test: bool = True) -> str:
    """Folder name of a CT-RATE split in the release (``valid`` is published as ``test``)."""
    if split == "valid":
        return "test" if rename_valid_to_test else "valid"
    return split


def release_volume_names(names: pd.Series, rename_valid_to_test: bool = True) -> pd.Series:
    if not rename_valid_to_test:
        return names
    return names.str.replace(r"^valid_", "test_", regex=True)


def fraction_folder(fraction: float) -> str:
    """``train_1pct`` for 0.01, ``train_10pct`` for 0.1, ``train_2.5pct`` for 0.025."""
    pct = round(fraction * 100, 6)
    text = f"{pct:g}"
    return f"train_{text}pct"


def release_rows(qa: pd.DataFrame, rename_valid_to_test: bool = True) -> pd.DataFrame:
    """QA rows in release order with release VolumeNames and a ``release_split`` column.

    Order: split, task, subtask, VolumeName (as a string, as the release sorts), then the
    rows' own order.
    """
    rows = qa.copy()
    rows["release_split"] = rows["split"].map(lambda s: release_split(s, rename_valid_to_test))
    rows["VolumeName"] = release_volume_names(rows["VolumeName"].astype(str), rename_valid_to_test)
    rows["_order"] = range(len(rows))
    rows = rows.sort_values(["release_split", "Task", "Subtask", "VolumeName", "_order"], kind="stable")
    return rows.drop(columns="_order").reset_index(drop=True)


def sample_fraction(rows: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """A seeded per-task sample of the rows (at least one row of every non-empty task)."""
    parts = []
    for task, group in rows.groupby("Task", sort=True):
        n = max(1, round(len(group) * fraction))
        parts.append(group.sample(n=n, random_state=(seed * 1000 + int(str(task))) % (2**32)).sort_index())
    if not parts:
        return rows.iloc[0:0]
    return pd.concat(parts)


@dataclass
class ExportSummary:
    root: Path
    files: dict[str, int] = field(default_factory=dict)  # relative path -> rows

    @property
    def rows(self) -> int:
        return sum(self.files.values())


def _write_split_folder(rows: pd.DataFrame, folder: Path, summary: ExportSummary, split_name: str) -> None:
    for (task, name), group in rows.groupby(["Task", "subtask_name"], sort=True):
        relative = Path(TASK_FOLDERS[int(str(task))]) / f"{name}.csv"
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        group[list(RELEASE_COLUMNS)].to_csv(target, index=False)
        summary.files[f"{split_name}/{relative.as_posix()}"] = len(group)


def _swap_in(tmp: Path, final: Path) -> None:
    """Replace ``final`` by ``tmp`` with renames only (the old folder is removed last)."""
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def write_release(
    rows: pd.DataFrame,
    out: Path,
    *,
    train_fractions: tuple[float, ...] = DEFAULT_TRAIN_FRACTIONS,
    seed: int = 0,
) -> ExportSummary:
    """Write release rows (from :func:`release_rows`) under ``out/3DRAD``.

    Every split folder present in ``rows`` is replaced as a whole; split folders of
    other splits already on disk are left alone. Seeded per-task fractions of the
    training rows go to ``train_<p>pct`` folders.
    """
    root = Path(out) / RELEASE_FOLDER
    root.mkdir(parents=True, exist_ok=True)
    summary = ExportSummary(root)
    folders: dict[str, pd.DataFrame] = {str(split): group for split, group in rows.groupby("release_split", sort=True)}
    if "train" in folders:
        for fraction in train_fractions:
            folders[fraction_folder(fraction)] = sample_fraction(folders["train"], fraction, seed)
    staged: list[tuple[Path, Path]] = []
    try:
        for name, group in folders.items():
            tmp = root / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            staged.append((tmp, root / name))
            _write_split_folder(group, tmp, summary, name)
        for tmp, final in staged:
            _swap_in(tmp, final)
    finally:
        for tmp, _ in staged:
            if tmp.exists():
                shutil.rmtree(tmp)
    return summary


def read_release(root: Path) -> pd.DataFrame:
    """Read a release folder (``.../3DRAD/test``) back into one table with ``subtask_name``."""
    frames = []
    for task, folder in TASK_FOLDERS.items():
        for path in sorted((root / folder).glob("*.csv")):
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            frame["subtask_name"] = path.stem
            frame["Task"] = frame["Task"].astype(int)
            frame["Subtask"] = frame["Subtask"].astype(int)
            if not (frame["Task"] == task).all():
                raise ValueError(f"{path}: rows with a Task other than {task}")
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*RELEASE_COLUMNS, "subtask_name"])
    return pd.concat(frames, ignore_index=True)

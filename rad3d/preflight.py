"""Checks of ``rad3d build``'s arguments and paths, made before anything is created.

Each check raises :class:`UsageError` with one line that says what is wrong and what was found;
the CLI prints it and exits 2. Nothing here writes to the disk.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from rad3d_pipeline.common.errors import UserFacingError
from rad3d_pipeline.ingest.ctrate import CtrateLayout, Split, parse_splits

# The ingest assets and the CT-RATE file each one reads, per split.
INGEST_FILES = {
    "ctrate_labels": ("labels", CtrateLayout.labels_csv),
    "ctrate_reports": ("reports", CtrateLayout.reports_csv),
    "ctrate_metadata": ("metadata", CtrateLayout.metadata_csv),
}
ALL_TASKS = ("1", "2", "3", "4", "5", "6")


class UsageError(UserFacingError):
    """A wrong argument, path or option value (exit 2, nothing written)."""


def parse_tasks(value: str | None) -> list[str] | None:
    """``--tasks 4,5,6`` as sorted task names; None when not given."""
    if value is None:
        return None
    tasks = sorted({t.strip() for t in value.split(",") if t.strip()})
    if not tasks:
        raise UsageError(f"--tasks {value!r}: no task given; use task numbers 1-6 such as 4,5,6")
    unknown = [t for t in tasks if t not in ALL_TASKS]
    if unknown:
        raise UsageError(f"--tasks {value!r}: unknown or unavailable task(s) {', '.join(unknown)}; available: 1-6")
    return tasks


def check_out_dir(out: Path) -> None:
    """``--out`` is a folder, or can be created, and is writable (checked without writing)."""
    if out.exists() and not out.is_dir():
        raise UsageError(f"--out {out}: exists and is not a folder")
    existing = out
    while not existing.exists():
        if existing.parent == existing:
            break
        existing = existing.parent
    if existing.exists() and not existing.is_dir():
        raise UsageError(f"--out {out}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        where = "" if existing == out else f" ({existing} is the nearest existing folder)"
        raise UsageError(f"--out {out}: not writable{where}")


def check_ctrate_root(root: Path, splits: str, needed_assets: Iterable[str]) -> None:
    """The CT-RATE root exists and holds the CSVs the selected ingest assets read, for the chosen splits."""
    if not root.exists():
        raise UsageError(f"--ctrate-root {root}: folder not found")
    if not root.is_dir():
        raise UsageError(f"--ctrate-root {root}: not a folder")
    layout = CtrateLayout.resolve(root)
    split_tuple: tuple[Split, ...] = parse_splits(splits)
    found: list[str] = []
    missing: list[str] = []
    for asset in sorted(needed_assets):
        if asset not in INGEST_FILES:
            continue
        _, path_of = INGEST_FILES[asset]
        for split in split_tuple:
            path = path_of(layout, split)
            rel = str(path.relative_to(layout.base))
            (found if path.is_file() else missing).append(rel)
    if missing:
        have = ", ".join(found) if found else "none of them"
        raise UsageError(f"--ctrate-root {root}: missing {', '.join(missing)} (under {layout.base}); found: {have}")

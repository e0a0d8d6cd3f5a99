"""The volumes' output folders: leftover temporary files and outputs that no longer belong.

``<out>/volumes/<profile>/<stem>.npy`` is written through ``.<stem>.npy.tmp-<hex>`` and a rename
(:func:`rad3d_pipeline.volumes.io.save_npy_atomic`); a killed worker leaves the temporary file.
A shard's run removes those of its own volumes that are older than the run (another shard's run
may be writing its own right now, and a file of this run is never older than its start).

A shard's outputs are exactly its manifest: every other ``.npy`` of one of its volumes (a profile
dropped from the setting, a volume whose source vanished or is now quarantined, a split no longer
built) is moved aside to ``<out>/volumes/.stale/<timestamp>/<profile>/``, never deleted, so that an
output that took an hour of GPU time can be moved back by hand. Files whose name is not a CT-RATE
volume's, or whose volume belongs to another shard, are not touched.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from pathlib import Path

from rad3d_pipeline.ingest.ctrate import VOLUME_NAME_RE
from rad3d_pipeline.ingest.patients import shard_key

STALE_DIR = ".stale"
TEMP_RE = re.compile(r"^\.(?P<stem>.+)\.npy\.tmp-[0-9a-f]+$")
NOT_PROFILES = frozenset({"quarantine", STALE_DIR})


def volumes_dir(out: str | Path) -> Path:
    return Path(out) / "volumes"


def stem_shard(stem: str, n_shards: int) -> str | None:
    """The shard of the volume an output stem (``valid_12_a_1``) was made from; None for other names."""
    match = VOLUME_NAME_RE.match(f"{stem}.nii.gz")
    if match is None:
        return None
    return shard_key(f"{match.group(1)}_{match.group(2)}", n_shards)


def _profile_dirs(out: str | Path) -> Iterator[Path]:
    root = volumes_dir(out)
    if not root.is_dir():
        return
    for entry in sorted(os.scandir(root), key=lambda e: e.name):
        if entry.name not in NOT_PROFILES and entry.is_dir(follow_symlinks=False):
            yield Path(entry.path)


def remove_temp_files(out: str | Path, shards: Iterable[str], n_shards: int, older_than: float) -> list[Path]:
    """Remove ``.<stem>.npy.tmp-*`` of the shards' volumes last modified before ``older_than`` (epoch s)."""
    wanted = set(shards)
    removed: list[Path] = []
    for folder in _profile_dirs(out):
        for entry in os.scandir(folder):
            match = TEMP_RE.match(entry.name)
            if match is None or stem_shard(match.group("stem"), n_shards) not in wanted:
                continue
            try:
                if not entry.is_file(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_mtime >= older_than:
                    continue
                os.unlink(entry.path)
            except FileNotFoundError:  # removed meanwhile
                continue
            removed.append(Path(entry.path))
    return sorted(removed)


def stale_stamp(now: datetime | None = None) -> str:
    return (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S.%fZ")


def move_aside_stale(
    out: str | Path, shards: Iterable[str], n_shards: int, current: Iterable[str | Path], stamp: str | None = None
) -> list[tuple[Path, Path]]:
    """Move every ``.npy`` of the shards' volumes that is not in ``current`` to ``.stale/<stamp>/<profile>/``;
    return ``(from, to)`` per moved file."""
    wanted = set(shards)
    keep = {os.path.normcase(os.path.abspath(p)) for p in current}
    target_root = volumes_dir(out) / STALE_DIR / (stamp or stale_stamp())
    moved: list[tuple[Path, Path]] = []
    for folder in _profile_dirs(out):
        for entry in sorted(os.scandir(folder), key=lambda e: e.name):
            if not entry.name.endswith(".npy") or entry.name.startswith("."):
                continue
            if stem_shard(entry.name.removesuffix(".npy"), n_shards) not in wanted:
                continue
            if os.path.normcase(os.path.abspath(entry.path)) in keep:
                continue
            if entry.is_dir(follow_symlinks=False):
                continue
            target = target_root / folder.name / entry.name
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.replace(entry.path, target)
            except FileNotFoundError:
                continue
            moved.append((Path(entry.path), target))
    return moved

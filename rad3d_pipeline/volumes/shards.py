"""One run of the volumes stage over a range of patient shards (the ``volumes`` asset's whole logic).

Plan (discover the shards' volumes, skip unchanged outputs from the previous manifests), run the
jobs, make the shards' ``.npy`` files exactly their manifest (others moved aside), write the
per-shard and merged quarantine files, and return the figures the asset shows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rad3d_pipeline.common.progress import Progress
from rad3d_pipeline.ingest.ctrate import CtrateInputError, CtrateLayout, Split, read_metadata
from rad3d_pipeline.volumes.outputs import move_aside_stale, remove_temp_files
from rad3d_pipeline.volumes.profiles import Profile
from rad3d_pipeline.volumes.runner import (
    QUARANTINE_COLUMNS,
    RunOptions,
    VolumeResult,
    discover_volumes,
    manifest_frame,
    metadata_lookup,
    output_path,
    plan_jobs,
    quarantine_frame,
    run_jobs,
)
from rad3d_pipeline.volumes.version import VersionSetting

log = logging.getLogger("rad3d.volumes")


def quarantine_dir(out: Path) -> Path:
    return out / "volumes" / "quarantine"


def merge_quarantine(out: Path) -> Path:
    """Rewrite ``<out>/volumes/quarantine.csv`` from the per-shard files."""
    files = sorted(quarantine_dir(out).glob("*.csv"))
    frames = [pd.read_csv(f, dtype=str, keep_default_na=False) for f in files]
    merged = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(QUARANTINE_COLUMNS))
    path = out / "volumes" / "quarantine.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    merged.to_csv(path, index=False)
    return path


@dataclass
class ShardRun:
    """What one run of the stage produced, per shard, and its figures."""

    manifests: dict[str, pd.DataFrame]
    manifest: pd.DataFrame
    quarantine: pd.DataFrame
    quarantine_file: Path
    stale: list[tuple[Path, Path]] = field(default_factory=list)
    leftovers: list[Path] = field(default_factory=list)

    def figures(self) -> dict[str, Any]:
        """Plain values for the asset's metadata (the run's, over all its shards)."""
        manifest = self.manifest
        written = manifest[manifest["status"] == "written"]
        per_volume = written.groupby("VolumeName")[["seconds"]].sum()
        reads = written.groupby("VolumeName")["read_seconds"].first()
        seconds = (per_volume["seconds"] + reads).mean() if len(written) else 0.0
        return {
            "volumes": int(manifest["VolumeName"].nunique()),
            "outputs_written": len(written),
            "outputs_skipped": int((manifest["status"] == "skipped").sum()),
            "quarantined": len(self.quarantine),
            "seconds_per_volume": round(float(seconds), 3),
            "peak_mb_max": float(written["peak_mb"].max()) if len(written) else 0.0,
            "peak_ratio_max": float(written["peak_ratio"].max()) if len(written) else 0.0,
            "rescale_applied": ", ".join(f"{k}={v}" for k, v in manifest["rescale_applied"].value_counts().items()),
            "stale_moved_aside": len(self.stale),
            "leftover_temp_files_removed": len(self.leftovers),
        }

    def quarantine_reasons(self, top: int = 10) -> pd.Series:
        return self.quarantine["reason"].str.split(" \\(", regex=True).str[0].value_counts().head(top)

    def check_figures(self) -> dict[str, Any]:
        """The quarantine check's figures: count, file, the commonest reasons and the first volumes (Markdown)."""
        reasons = self.quarantine_reasons()
        first = self.quarantine.head(10)[["VolumeName", "reason"]]
        return {
            "quarantined": len(self.quarantine),
            "quarantine_file": self.quarantine_file.resolve(),
            "reasons": "\n".join(f"- {r}: {n}" for r, n in reasons.items()) or "(none)",
            "first": first.to_markdown(index=False) if len(first) else "(none)",
        }


def build_shards(
    layout: CtrateLayout,
    out: Path,
    shards: Sequence[str],
    n_shards: int,
    splits: tuple[Split, ...],
    profiles: list[Profile],
    version_setting: VersionSetting,
    device: str,
    workers: int,
    previous: pd.DataFrame,
    warn: Callable[[str], None] = log.warning,
) -> ShardRun:
    """Build the volumes of ``shards``; ``previous`` is their last manifest (unchanged outputs are kept)."""
    started = time.time()
    # A killed worker's half-written .npy of these shards: gone before anything is planned (never counted).
    leftovers = remove_temp_files(out, shards, n_shards, older_than=started)
    tables = []
    for split in splits:
        try:
            tables.append(read_metadata(layout, split).table)
        except CtrateInputError as exc:  # its volumes are quarantined as "missing metadata row"
            warn(f"volumes: {exc}")
    lookup = metadata_lookup(pd.concat(tables, ignore_index=True) if tables else pd.DataFrame())
    found, bad_names = discover_volumes(layout, splits, set(shards), n_shards)
    jobs, kept = plan_jobs(found, lookup, profiles, previous, version_setting)
    log.info(
        f"volumes: {len(found)} volume(s) in {len(shards)} shard(s) of {', '.join(splits) or 'no split'}; "
        f"{len(jobs)} to (re)build, {len(kept)} output(s) unchanged; profiles "
        f"{', '.join(p.name for p in profiles)}; device {device}; {workers} worker(s)"
    )
    counter = Progress(f"volumes [{shards[0]}..{shards[-1]}]" if shards else "volumes", len(jobs), unit="volumes")

    def progress(i: int, total: int, result: VolumeResult) -> None:
        counter.advance()
        for row in result.quarantine:
            warn(f"quarantined {row['VolumeName']}: {row['reason']}")

    rows = list(kept)
    quarantined = list(bad_names)
    for result in run_jobs(jobs, profiles, RunOptions(str(out), version_setting, device), workers, progress):
        rows.extend(result.rows)
        quarantined.extend(result.quarantine)
    # The shards' outputs are exactly the manifest: a now-broken (volume, profile), a profile no longer
    # set, a volume gone from the tree or a split no longer built must not be read downstream.
    current = [output_path(out, str(r["profile"]), str(r["VolumeName"])) for r in rows]
    stale = move_aside_stale(out, shards, n_shards, current)
    if stale:
        where = stale[0][1].parent.parent
        warn(f"volumes: moved {len(stale)} output(s) that no longer belong to these shards to {where}")
    manifest = manifest_frame(rows)
    quarantine = quarantine_frame(quarantined)
    qdir = quarantine_dir(out)
    qdir.mkdir(parents=True, exist_ok=True)
    for shard in shards:
        quarantine[quarantine["shard"] == shard].to_csv(qdir / f"{shard}.csv", index=False)
    manifests = {shard: manifest[manifest["shard"] == shard].reset_index(drop=True) for shard in shards}
    return ShardRun(manifests, manifest, quarantine, merge_quarantine(out), stale, leftovers)


def previous_manifest(folder: Path, shards: Sequence[str]) -> pd.DataFrame:
    """The last manifest of ``shards`` (``<out>/tables/volumes/<shard>.parquet``), empty when never built."""
    files = [path for shard in shards if (path := folder / f"{shard}.parquet").exists()]
    return pd.concat([pd.read_parquet(p) for p in files], ignore_index=True) if files else pd.DataFrame()


def run_metadata(
    run: ShardRun, out: Path, profiles: list[Profile], splits: tuple[str, ...], device: str, workers: int
) -> dict[str, Any]:
    """The run's figures (``run_*``, over all its shards), its settings and its folders (as paths)."""
    meta: dict[str, Any] = {f"run_{name}": value for name, value in run.figures().items()}
    meta.update(
        {
            "quarantine_file": run.quarantine_file.resolve(),
            "profiles": ", ".join(f"{p.name} ({p.describe()})" for p in profiles),
            "splits": ", ".join(splits),
            "device": device,
            "workers": workers,
            "output_dir": out.resolve() / "volumes",
        }
    )
    if run.stale:
        meta["stale_dir"] = run.stale[0][1].parent.parent.resolve()
    return meta

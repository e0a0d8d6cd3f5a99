"""Running profiles over volumes: discovery, validation, quarantine, skip-on-rerun, workers.

One volume is in flight per worker: it is read once, validated, and every wanted profile
runs on it before the next volume is read. ``workers > 1`` uses a process pool (spawn),
each worker with ``cpu_count // workers`` torch threads. Outputs go to
``<out>/volumes/<profile>/<VolumeName without .nii.gz>.npy``, written atomically.

Bad input never stops the run: a missing metadata row, zero or absurd spacing, a
truncated or non-gzip file, a non-NIfTI file, 4-D or 2-D data, NaN or a constant volume,
a listed file that is gone at read time, a dangling link, a directory or FIFO named like a
volume, permission denied, a scan folder that cannot be listed, and a VolumeName found in two
places (two scan folders, or ``dataset/<split>`` and ``<split>`` at the root: quarantined once,
every path in ``source_path`` joined by `` | ``) becomes a quarantine record
``(VolumeName, shard, source_path, reason)``. Only an unreadable split folder stops the run.

Skip on rerun: a (volume, profile) is skipped when its source file has the recorded size
and mtime, the profile version is unchanged, and the output exists with the recorded sha256.
"""

from __future__ import annotations

import math
import os
import re
import time
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rad3d_pipeline.common.cpus import usable_cpus
from rad3d_pipeline.common.errors import InputFileError
from rad3d_pipeline.ingest.ctrate import VOLUME_NAME_RE, CtrateLayout, Split
from rad3d_pipeline.ingest.patients import shard_key
from rad3d_pipeline.volumes.io import (
    BadVolume,
    RawVolume,
    file_sha256,
    header_scaling,
    os_error_reason,
    read_volume,
    save_npy_atomic,
)
from rad3d_pipeline.volumes.memory import PeakMemory, release_free_memory
from rad3d_pipeline.volumes.profiles import Profile
from rad3d_pipeline.volumes.steps import StepContext, float32_bytes, volume_from_array
from rad3d_pipeline.volumes.version import VersionSetting, decide_rescale

MANIFEST_COLUMNS: tuple[str, ...] = (
    "VolumeName",
    "shard",
    "split",
    "profile",
    "profile_version",
    "path",
    "shape",
    "dtype",
    "spacing_in",
    "spacing_out",
    "source_path",
    "source_size",
    "source_mtime_ns",
    "sha256",
    "seconds",
    "read_seconds",
    "peak_mb",
    "peak_ratio",
    "rescale_applied",
    "ctrate_version",
    "inputs_key",
    "device",
    "status",
)
QUARANTINE_COLUMNS: tuple[str, ...] = ("VolumeName", "shard", "source_path", "reason")
XY_SPACING_MM = (0.05, 10.0)
Z_SPACING_MM = (0.05, 20.0)
PATIENT_DIR_RE = re.compile(r"^(train|valid)_(\d+)$")
VOLUME_SUFFIXES = (".nii.gz", ".nii")


@dataclass(frozen=True)
class ScanMetadata:
    """The metadata CSV row of a volume: spacings in mm and the DICOM rescale."""

    xy_spacing: float
    z_spacing: float
    slope: float
    intercept: float


@dataclass(frozen=True)
class VolumeJob:
    volume_name: str
    source_path: str
    shard: str
    split: str
    metadata: ScanMetadata | None
    profiles: tuple[str, ...]  # the names still to build for this volume


@dataclass(frozen=True)
class RunOptions:
    out_dir: str
    version: VersionSetting = "auto"
    device: str = "cpu"


@dataclass
class VolumeResult:
    rows: list[dict[str, Any]] = field(default_factory=list)
    quarantine: list[dict[str, Any]] = field(default_factory=list)


def output_path(out_dir: str | Path, profile: str, volume_name: str) -> Path:
    """``<out>/volumes/<profile>/<VolumeName without .nii.gz>.npy`` (the path evaluation reads)."""
    stem = volume_name.removesuffix(".nii.gz").removesuffix(".nii")
    return Path(out_dir) / "volumes" / profile / f"{stem}.npy"


def resolve_device(setting: str) -> str:
    """``auto`` -> ``cuda`` when torch sees a GPU, else ``cpu``; ``cuda`` without a GPU is an error."""
    import torch

    if setting == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if setting.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"device {setting!r} requested but torch sees no CUDA device")
    if setting != "cpu" and not setting.startswith("cuda"):
        raise ValueError(f"unknown device {setting!r}: use auto, cpu or cuda")
    return setting


def split_roots(layout: CtrateLayout, split: str) -> list[Path]:
    """The folders a split's patient folders may sit in: ``<base>/<split>``, and, when the base is the
    ``dataset/`` level, the CT-RATE root's own ``<split>`` too (a tree half moved into ``dataset/``)."""
    roots = [layout.base / split]
    if layout.base.name == "dataset":
        roots.append(layout.base.parent / split)
    return [root for root in roots if root.is_dir()]


def _listed_volumes(
    root: Path, split: str, shards: set[str], n_shards: int, unlisted: list[dict[str, Any]]
) -> Iterator[tuple[str, str, Path]]:
    """``(name, shard, path)`` of every volume-named entry under the patient folders of ``root`` (files,
    links, and anything else named like a volume, which the read then quarantines with what it is).
    A folder that cannot be listed goes to ``unlisted`` as a quarantine record: its volumes are not lost
    silently."""
    try:
        patients = sorted(os.scandir(root), key=lambda e: e.name)
    except OSError as exc:  # the whole split's folder: a file-level fault, not one volume's
        raise InputFileError(f"{root}: volume folder not readable ({os_error_reason(root, exc)})") from exc
    for patient_dir in patients:
        match = PATIENT_DIR_RE.match(patient_dir.name)
        if match is None or match.group(1) != split or not patient_dir.is_dir():
            continue
        shard = shard_key(patient_dir.name, n_shards)
        if shard not in shards:
            continue

        def not_listed(exc: OSError, shard: str = shard, top: str = patient_dir.path) -> None:
            folder = Path(exc.filename or top)
            reason = f"folder not listed ({os_error_reason(folder, exc)}): its volumes are missing from the build"
            record = {"VolumeName": f"{folder.name}/", "shard": shard, "source_path": str(folder), "reason": reason}
            unlisted.append(record)

        for folder, dirs, files in os.walk(patient_dir.path, onerror=not_listed):
            dirs.sort()
            # A folder named like a volume (an unpacked archive, a botched copy) is listed as a volume, not entered.
            named = [d for d in dirs if d.endswith(VOLUME_SUFFIXES) and not d.startswith(".")]
            dirs[:] = [d for d in dirs if d not in named]
            for name in sorted([*files, *named]):
                if name.endswith(VOLUME_SUFFIXES) and not name.startswith("."):
                    yield name, shard, Path(folder) / name


def discover_volumes(
    layout: CtrateLayout, splits: Iterable[Split], shards: set[str], n_shards: int
) -> tuple[list[tuple[str, str, str, Path]], list[dict[str, Any]]]:
    """``(VolumeName, split, shard, path)`` of every .nii.gz of the wanted shards, and quarantine
    records for names that are not a CT-RATE VolumeName of their patient folder and for a VolumeName
    found in more than one place (quarantined once, with every path: which copy is right is not ours
    to guess). What an entry is (a dangling link, a directory, a FIFO) is decided when it is read."""
    places: dict[str, list[tuple[str, str, Path]]] = {}
    bad: list[dict[str, Any]] = []
    for split in splits:
        for root in split_roots(layout, split):
            for name, shard, path in _listed_volumes(root, split, shards, n_shards, bad):
                vid = VOLUME_NAME_RE.match(name)
                patient = path.relative_to(root).parts[0]
                if vid is None or f"{vid.group(1)}_{vid.group(2)}" != patient:
                    reason = f"malformed VolumeName {name!r} in {patient}/"
                    bad.append({"VolumeName": name, "shard": shard, "source_path": str(path), "reason": reason})
                    continue
                places.setdefault(name, []).append((split, shard, path))
    found: list[tuple[str, str, str, Path]] = []
    for name, where in sorted(places.items()):
        first_split, shard, first_path = where[0]
        if len(where) == 1:
            found.append((name, first_split, shard, first_path))
            continue
        paths = [str(p) for _, _, p in where]
        reason = f"found in {len(paths)} places ({'; '.join(paths)}): keep one copy"
        bad.append({"VolumeName": name, "shard": shard, "source_path": " | ".join(paths), "reason": reason})
    return found, bad


def metadata_lookup(metadata: pd.DataFrame) -> dict[str, ScanMetadata]:
    if metadata.empty:
        return {}
    cols = ["VolumeName", "XYSpacing", "ZSpacing", "RescaleSlope", "RescaleIntercept"]
    return {
        str(name): ScanMetadata(float(xy), float(z), float(slope), float(inter))
        for name, xy, z, slope, inter in metadata[cols].itertuples(index=False)
    }


def inputs_key(meta: ScanMetadata | None, version_setting: str) -> str:
    """What besides the file and the profile decides an output: the metadata row and the version setting."""
    if meta is None:
        return f"no-metadata|{version_setting}"
    return f"{meta.xy_spacing!r}|{meta.z_spacing!r}|{meta.slope!r}|{meta.intercept!r}|{version_setting}"


def _previous_ok(row: dict[str, Any], size: int, mtime_ns: int, profile: Profile, key: str) -> bool:
    if row.get("profile_version") != profile.version or row.get("inputs_key") != key:
        return False
    if int(row.get("source_size", -1)) != size or int(row.get("source_mtime_ns", -1)) != mtime_ns:
        return False
    path = Path(str(row.get("path", "")))
    try:
        return path.is_file() and file_sha256(path) == row.get("sha256")
    except OSError:  # an output that cannot be read back is rebuilt
        return False


def plan_jobs(
    volumes: list[tuple[str, str, str, Path]],
    metadata: dict[str, ScanMetadata],
    profiles: list[Profile],
    previous: pd.DataFrame,
    version_setting: str = "auto",
) -> tuple[list[VolumeJob], list[dict[str, Any]]]:
    """The jobs to run and the manifest rows carried over unchanged (status ``skipped``).

    An output is kept only when its source file (size, mtime), profile version, metadata row
    (spacing, slope, intercept) and dataset-version setting are all as recorded.
    """
    prev: dict[tuple[str, str], dict[str, Any]] = {}
    if not previous.empty and {"VolumeName", "profile"} <= set(previous.columns):
        for record in previous.to_dict("records"):
            row = {str(k): v for k, v in record.items()}
            prev[(str(row["VolumeName"]), str(row["profile"]))] = row
    jobs: list[VolumeJob] = []
    kept: list[dict[str, Any]] = []
    for name, split, shard, path in volumes:
        try:
            stat = path.stat()
            size, mtime_ns = stat.st_size, stat.st_mtime_ns
        except OSError:  # dangling, vanished, unreadable: no skip; the read quarantines it with the reason
            size, mtime_ns = -1, -1
        key = inputs_key(metadata.get(name), version_setting)
        todo = []
        for profile in profiles:
            before = prev.get((name, profile.name))
            if size >= 0 and before is not None and _previous_ok(before, size, mtime_ns, profile, key):
                kept.append({**before, "shard": shard, "status": "skipped"})
            else:
                todo.append(profile.name)
        if todo:
            jobs.append(VolumeJob(name, str(path), shard, split, metadata.get(name), tuple(todo)))
    return jobs, kept


def _check_metadata(meta: ScanMetadata | None) -> ScanMetadata:
    if meta is None:
        raise BadVolume("missing metadata row (no valid row for this VolumeName in the metadata CSV)")
    lo, hi = XY_SPACING_MM
    if not (math.isfinite(meta.xy_spacing) and lo <= meta.xy_spacing <= hi):
        raise BadVolume(f"absurd XYSpacing {meta.xy_spacing} mm (expected {lo}-{hi})")
    lo, hi = Z_SPACING_MM
    if not (math.isfinite(meta.z_spacing) and lo <= meta.z_spacing <= hi):
        raise BadVolume(f"absurd ZSpacing {meta.z_spacing} mm (expected {lo}-{hi})")
    if not (math.isfinite(meta.slope) and meta.slope > 0 and math.isfinite(meta.intercept)):
        raise BadVolume(f"unusable rescale: RescaleSlope {meta.slope}, RescaleIntercept {meta.intercept}")
    return meta


def _check_values(raw: RawVolume) -> None:
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a read-only buffer; only read here
        data = torch.from_numpy(np.asarray(raw.data))
    if data.is_floating_point():
        nan = int(torch.isnan(data).sum())
        if nan:
            raise BadVolume(f"{nan} NaN voxel(s)")
        if not bool(torch.isfinite(data).all()):
            raise BadVolume("infinite voxel values")
    lo, hi = (float(v) for v in torch.aminmax(data))
    if lo == hi:
        raise BadVolume(f"constant volume (every voxel is {lo:g})")


def _quarantine(job: VolumeJob, reason: str) -> dict[str, Any]:
    return {"VolumeName": job.volume_name, "shard": job.shard, "source_path": job.source_path, "reason": reason}


def process_volume(job: VolumeJob, profiles: dict[str, Profile], options: RunOptions) -> VolumeResult:
    """Read one volume once, validate it, run every profile it still needs; never raises on bad input."""
    result = VolumeResult()
    wanted = [profiles[name] for name in job.profiles]
    path = Path(job.source_path)
    try:
        stat = path.stat()
        meta = _check_metadata(job.metadata)
    except OSError as exc:  # missing, a dangling link, permission denied on the way
        result.quarantine.append(_quarantine(job, os_error_reason(path, exc)))
        return result
    except BadVolume as exc:
        result.quarantine.append(_quarantine(job, str(exc)))
        return result
    with PeakMemory() as peak:
        began = time.perf_counter()
        raws: dict[str, RawVolume] = {}
        try:
            for reader in dict.fromkeys(p.reader for p in wanted):
                raws[reader] = read_volume(path, reader)
                _check_values(raws[reader])
            first = raws.get("nibabel") or next(iter(raws.values()))
            # nibabel sees the header's own scaling; with SimpleITK alone it is read from the header.
            scaling = first.header_scaling if "nibabel" in raws else header_scaling(path)
        except BadVolume as exc:
            result.quarantine.append(_quarantine(job, str(exc)))
            return result
        except Exception as exc:  # anything else a broken file can provoke; the run goes on
            result.quarantine.append(_quarantine(job, f"unreadable ({type(exc).__name__}: {exc})"))
            return result
        read_seconds = time.perf_counter() - began
        rescale, version = decide_rescale(options.version, scaling, first.data, meta.slope, meta.intercept)
        release_free_memory()  # the validation's temporaries: back to the OS before the big output buffer
        spacing = (meta.z_spacing, meta.xy_spacing, meta.xy_spacing)
        ctx = StepContext(meta.slope, meta.intercept, rescale, scaling)
        for profile in wanted:
            started = time.perf_counter()
            raw = raws[profile.reader]
            vol = volume_from_array(raw.data, spacing, options.device)
            # SimpleITK applies header scaling while reading: its data is then already rescaled.
            own = ctx if rescale != "header" or raw.header_scaling is not None else replace(ctx, rescale="none")
            try:
                array, spacing_out = profile.run(vol, own)
            except Exception as exc:
                reason = f"profile {profile.name} failed ({type(exc).__name__}: {exc})"
                result.quarantine.append(_quarantine(job, reason))
                continue
            target = output_path(options.out_dir, profile.name, job.volume_name)
            sha = save_npy_atomic(array, target)
            result.rows.append(
                {
                    "VolumeName": job.volume_name,
                    "shard": job.shard,
                    "split": job.split,
                    "profile": profile.name,
                    "profile_version": profile.version,
                    "path": str(target),
                    "shape": [int(n) for n in array.shape],
                    "dtype": str(array.dtype),
                    "spacing_in": [float(v) for v in spacing],
                    "spacing_out": [float(v) for v in spacing_out],
                    "source_path": job.source_path,
                    "source_size": int(stat.st_size),
                    "source_mtime_ns": int(stat.st_mtime_ns),
                    "sha256": sha,
                    "seconds": time.perf_counter() - started,
                    "read_seconds": read_seconds,
                    "rescale_applied": rescale,
                    "ctrate_version": version,
                    "inputs_key": inputs_key(meta, options.version),
                    "device": options.device,
                    "status": "written",
                }
            )
            del array, vol
        input_bytes = float32_bytes(tuple(first.data.shape))
        del raws, first
    for row in result.rows:
        row["peak_mb"] = round(peak.mb, 1)
        row["peak_ratio"] = round(peak.bytes / input_bytes, 3)
    return result


_WORKER_PROFILES: dict[str, Profile] = {}
_WORKER_OPTIONS: RunOptions | None = None


def _init_worker(profiles: dict[str, Profile], options: RunOptions, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    _WORKER_PROFILES.update(profiles)
    global _WORKER_OPTIONS
    _WORKER_OPTIONS = options


def _run_in_worker(job: VolumeJob) -> VolumeResult:
    assert _WORKER_OPTIONS is not None
    return process_volume(job, _WORKER_PROFILES, _WORKER_OPTIONS)


def run_jobs(
    jobs: list[VolumeJob],
    profiles: list[Profile],
    options: RunOptions,
    workers: int = 1,
    progress: Callable[[int, int, VolumeResult], None] | None = None,
) -> Iterator[VolumeResult]:
    """Process the jobs, one volume in flight per worker; results in job order."""
    by_name = {p.name: p for p in profiles}
    if workers <= 1 or len(jobs) <= 1:
        for i, job in enumerate(jobs, 1):
            result = process_volume(job, by_name, options)
            if progress:
                progress(i, len(jobs), result)
            yield result
        return
    threads = max(1, usable_cpus() // workers)
    with ProcessPoolExecutor(
        max_workers=workers,
        mp_context=get_context("spawn"),
        initializer=_init_worker,
        initargs=(by_name, options, threads),
    ) as pool:
        for i, result in enumerate(pool.map(_run_in_worker, jobs, chunksize=1), 1):
            if progress:
                progress(i, len(jobs), result)
            yield result


def manifest_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(MANIFEST_COLUMNS))
    if rows:
        return frame.sort_values(["VolumeName", "profile"], kind="stable").reset_index(drop=True)
    return frame.astype({"source_size": "int64", "source_mtime_ns": "int64", "seconds": "float64"})


def quarantine_frame(rows: list[dict[str, Any]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=list(QUARANTINE_COLUMNS))
    return frame.sort_values(["shard", "VolumeName"], kind="stable").reset_index(drop=True) if rows else frame

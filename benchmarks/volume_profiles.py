"""Seconds per volume and peak memory of the ctclip and m3d profiles next to the models' own procedures.

Full-size synthetic CT volumes (512 x 512 x N int16 NIfTI phantoms, CT-RATE v1 storage) are
processed in the same process by (a) rad3d's profile, the whole job: read, validate, detect
the CT-RATE version, preprocess, write the .npy atomically with its sha256; and (b) a direct
reimplementation of the model's published procedure (rad3d_pipeline/volumes/reference.py),
which also saves its .npy as the published scripts do. The read alone (gzip inflate) is timed
for each reader too: it is the floor that every procedure pays. Runs alternate and each figure is the
best of ``--repeats`` (the machine may be shared). Peak memory is the resident-set high-water
mark above the start of each run (/proc/self/clear_refs), and is compared with the bound
2.5 x the input volume's float32 size. Outputs are compared by Pearson correlation.

    .venv/bin/python benchmarks/volume_profiles.py                 # 120, 140, 160 slices
    .venv/bin/python benchmarks/volume_profiles.py --slices 300 --repeats 1
"""

from __future__ import annotations

import argparse
import importlib
import json
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import SimpleITK as sitk
import torch

from rad3d_pipeline.synthetic.phantoms import PhantomWriter
from rad3d_pipeline.synthetic.sample_data import SampleFinding, SampleVolume
from rad3d_pipeline.volumes.io import read_volume
from rad3d_pipeline.volumes.memory import PeakMemory
from rad3d_pipeline.volumes.profiles import Profile, ctclip_profile, m3d_profile
from rad3d_pipeline.volumes.reference import ctclip_reference, m3d_reference
from rad3d_pipeline.volumes.runner import RunOptions, ScanMetadata, VolumeJob, process_volume

BOUND = 2.5
GEOMETRIES = [(0.7, 1.25), (0.8, 1.0), (0.9, 1.5), (0.75, 2.0)]


def corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation, float64 accumulation in chunks (no float64 copy of a 55M-voxel array)."""
    x, y = np.ascontiguousarray(a).ravel(), np.ascontiguousarray(b).ravel()
    mx, my = x.mean(dtype=np.float64), y.mean(dtype=np.float64)
    sxy = sxx = syy = 0.0
    for start in range(0, x.size, 1 << 22):
        u = x[start : start + (1 << 22)].astype(np.float64) - mx
        v = y[start : start + (1 << 22)].astype(np.float64) - my
        sxy, sxx, syy = sxy + float(u @ v), sxx + float(u @ u), syy + float(v @ v)
    return sxy / np.sqrt(sxx * syy)


def read_fdata(path: Path) -> np.ndarray:
    nib: Any = importlib.import_module("nibabel")
    return np.asarray(nib.load(str(path)).get_fdata())


def run_reference(name: str, path: Path, xy: float, z: float, work: Path) -> np.ndarray:
    """The published procedure, saving its .npy as the published scripts do."""
    array = ctclip_reference(path, 1.0, -1024.0, xy, z) if name == "ctclip" else m3d_reference(path)
    np.save(work / f"ref_{name}.npy", array)
    return array


def run_ours(profile: Profile, path: Path, meta: ScanMetadata, work: Path) -> dict[str, Any]:
    """rad3d's whole job for one volume and profile; the manifest row."""
    job = VolumeJob(path.name, str(path), "00", "valid", meta, (profile.name,))
    result = process_volume(job, {profile.name: profile}, RunOptions(str(work / "out"), "auto", "cpu"))
    assert not result.quarantine, result.quarantine
    return result.rows[0]


def measure(fn: Callable[[], Any]) -> tuple[float, float, Any]:
    with PeakMemory() as peak:
        started = time.perf_counter()
        value = fn()
        seconds = time.perf_counter() - started
    return seconds, peak.mb, value


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slices", default="120,140,160", help="slices per volume, comma-separated")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--profiles", default="ctclip,m3d")
    parser.add_argument("--json", default=None, help="also write the figures to this JSON file")
    args = parser.parse_args()
    try:
        import isal  # noqa: F401

        inflate = "isal"
    except ImportError:
        inflate = "zlib"
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; gzip inflate: {inflate}")
    profiles = {"ctclip": ctclip_profile(), "m3d": m3d_profile()}
    wanted = [p.strip() for p in args.profiles.split(",") if p.strip()]
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for i, slices in enumerate(int(s) for s in args.slices.split(",")):
            xy, z = GEOMETRIES[i % len(GEOMETRIES)]
            findings = (SampleFinding("nodule", "right", "upper", 9.0), SampleFinding("effusion", "left", None, 14.0))
            volume = SampleVolume(
                f"valid_{i + 1}_a_1.nii.gz", "valid", i + 1, "a", 1, {}, findings, xy, z, 1.0, -1024.0
            )
            path = work / volume.volume_name
            PhantomWriter(size=(slices, 512, 512))(path, volume)
            input_mb = slices * 512 * 512 * 4 / 2**20
            ours_read = min(measure(partial(read_volume, path))[0] for _ in range(args.repeats))
            sitk_read = min(measure(partial(sitk.ReadImage, str(path)))[0] for _ in range(args.repeats))
            nib_read = min(measure(partial(read_fdata, path))[0] for _ in range(args.repeats))
            print(
                f"read {slices}x512x512 ({path.stat().st_size / 2**20:.0f} MB .nii.gz): rad3d {ours_read:.2f} s, "
                f"SimpleITK.ReadImage {sitk_read:.2f} s, nibabel get_fdata {nib_read:.2f} s"
            )
            meta = ScanMetadata(xy, z, 1.0, -1024.0)
            for name in wanted:
                profile = profiles[name]

                reference = partial(run_reference, name, path, xy, z, work)
                ours = partial(run_ours, profile, path, meta, work)
                ref_runs, our_runs = [], []
                for _ in range(args.repeats):
                    ref_runs.append(measure(reference))
                    our_runs.append(measure(ours))
                ref_s, ref_mb = min(r[0] for r in ref_runs), min(r[1] for r in ref_runs)
                our_s, our_mb = min(r[0] for r in our_runs), min(r[1] for r in our_runs)
                row = our_runs[-1][2]
                c = corr(np.load(row["path"]), ref_runs[-1][2])
                record = {
                    "profile": name,
                    "shape_in": [slices, 512, 512],
                    "spacing_in": [z, xy, xy],
                    "reference_s": round(ref_s, 3),
                    "ours_s": round(our_s, 3),
                    "speedup": round(ref_s / our_s, 2),
                    "reference_peak_mb": round(ref_mb, 1),
                    "ours_peak_mb": round(our_mb, 1),
                    "input_float32_mb": round(input_mb, 1),
                    "ours_peak_ratio": round(our_mb / input_mb, 2),
                    "within_bound": our_mb <= BOUND * input_mb,
                    "correlation": round(c, 6),
                    "shape_out": row["shape"],
                    "dtype_out": row["dtype"],
                    "rescale_applied": row["rescale_applied"],
                }
                results.append(record)
                print(
                    f"{name:7s} {slices}x512x512 ({z}, {xy}, {xy}) mm: reference {ref_s:6.2f} s {ref_mb:7.0f} MB | "
                    f"rad3d {our_s:6.2f} s {our_mb:7.0f} MB ({our_mb / input_mb:.2f} x float32 input) | "
                    f"{ref_s / our_s:4.1f}x faster | corr {c:.6f} | {tuple(row['shape'])} {row['dtype']}"
                )
    print("\nper profile (mean over volumes):")
    for name in wanted:
        rows = [r for r in results if r["profile"] == name]
        ref_s = float(np.mean([r["reference_s"] for r in rows]))
        our_s = float(np.mean([r["ours_s"] for r in rows]))
        print(
            f"  {name}: reference {ref_s:.2f} s/volume, peak {max(r['reference_peak_mb'] for r in rows):.0f} MB; "
            f"rad3d {our_s:.2f} s/volume, peak {max(r['ours_peak_mb'] for r in rows):.0f} MB "
            f"(max {max(r['ours_peak_ratio'] for r in rows):.2f} x float32 input, bound {BOUND}); "
            f"speed-up {ref_s / our_s:.1f}x; min correlation {min(r['correlation'] for r in rows):.6f}"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()

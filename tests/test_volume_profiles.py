"""The ctclip and m3d profiles against direct reimplementations of the models' own procedures."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from rad3d_pipeline.synthetic.phantoms import PhantomWriter
from rad3d_pipeline.synthetic.sample_data import SampleFinding, SampleVolume
from rad3d_pipeline.volumes.profiles import ctclip_profile, m3d_profile
from rad3d_pipeline.volumes.reference import ctclip_reference, m3d_reference
from rad3d_pipeline.volumes.runner import RunOptions, ScanMetadata, VolumeJob, process_volume


def phantom(
    tmp_path: Path, shape: tuple[int, int, int], xy: float, z: float, intercept: float
) -> tuple[Path, SampleVolume]:
    findings = (SampleFinding("nodule", "right", "upper", 14.0), SampleFinding("effusion", "left", None, 18.0))
    volume = SampleVolume("valid_7_a_1.nii.gz", "valid", 7, "a", 1, {}, findings, xy, z, 1.0, intercept)
    path = tmp_path / volume.volume_name
    return path, PhantomWriter(size=shape)(path, volume)


def corr(a: np.ndarray, b: np.ndarray) -> float:
    """Pearson correlation without float64 copies of 55M-voxel arrays."""
    a = a.ravel() - np.float32(a.mean(dtype=np.float64))
    b = b.ravel() - np.float32(b.mean(dtype=np.float64))
    return float(np.dot(a, b) / np.sqrt(float(np.dot(a, a)) * float(np.dot(b, b))))


def compare(tmp_path: Path, path: Path, v: SampleVolume) -> dict[str, float]:
    meta = ScanMetadata(v.xy_spacing, v.z_spacing, v.slope, v.intercept)
    job = VolumeJob(v.volume_name, str(path), "00", "valid", meta, ("ctclip", "m3d"))
    result = process_volume(job, {"ctclip": ctclip_profile(), "m3d": m3d_profile()}, RunOptions(str(tmp_path / "out")))
    assert not result.quarantine
    rows = {row["profile"]: row for row in result.rows}
    assert rows["ctclip"]["rescale_applied"] == "metadata"
    ours_ct = np.load(rows["ctclip"]["path"])
    ref_ct = ctclip_reference(path, v.slope, v.intercept, v.xy_spacing, v.z_spacing)
    ours_m3d = np.load(rows["m3d"]["path"])
    ref_m3d = m3d_reference(path)
    assert ours_ct.shape == ref_ct.shape == (240, 480, 480) and ours_ct.dtype == ref_ct.dtype == np.float32
    assert ours_m3d.shape == ref_m3d.shape == (1, 32, 256, 256) and ours_m3d.dtype == ref_m3d.dtype == np.float32
    assert ours_m3d.min() >= 0.0 and ours_m3d.max() <= 1.0
    return {
        "ctclip_corr": corr(ours_ct, ref_ct),
        "ctclip_maxabs": float(np.abs(ours_ct - ref_ct).max()),
        "m3d_corr": corr(ours_m3d, ref_m3d),
        "m3d_maxabs": float(np.abs(ours_m3d - ref_m3d).max()),
    }


@pytest.mark.slow
def test_profiles_match_published_procedures_on_a_small_phantom(tmp_path: Path) -> None:
    path, v = phantom(tmp_path, (40, 160, 160), 0.3, 1.5, -8192.0)  # 150 mm field of view
    stats = compare(tmp_path, path, v)
    assert stats["ctclip_corr"] >= 0.999 and stats["ctclip_maxabs"] < 1e-3
    assert stats["m3d_corr"] >= 0.999 and stats["m3d_maxabs"] < 2e-2


@pytest.mark.slow
@pytest.mark.parametrize(("slices", "xy", "z"), [(130, 0.7, 1.25), (156, 0.9, 1.0)])
def test_profiles_match_published_procedures_on_full_size(tmp_path: Path, slices: int, xy: float, z: float) -> None:
    """The done-when criterion: 512 x 512 x 120-160, correlation >= 0.99 (ctclip) / 0.98 (m3d)."""
    path, v = phantom(tmp_path, (slices, 512, 512), xy, z, -1024.0)
    stats = compare(tmp_path, path, v)
    assert stats["ctclip_corr"] >= 0.99 and stats["ctclip_maxabs"] < 1e-3, stats
    assert stats["m3d_corr"] >= 0.98 and stats["m3d_maxabs"] < 1e-2, stats

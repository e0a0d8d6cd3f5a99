"""Reading volumes, CT-RATE v1/v2 detection, bad inputs to quarantine, custom YAML profiles."""

from __future__ import annotations

import gzip
import re
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk

from rad3d_pipeline.synthetic.phantoms import write_nifti
from rad3d_pipeline.volumes.io import BadVolume, file_sha256, read_volume, save_npy_atomic
from rad3d_pipeline.volumes.profiles import Profile, ProfileError, load_profiles_file, m3d_profile, resolve_profiles
from rad3d_pipeline.volumes.runner import RunOptions, ScanMetadata, VolumeJob, process_volume
from rad3d_pipeline.volumes.version import decide_rescale, detect_version

META = ScanMetadata(xy_spacing=4.0, z_spacing=8.0, slope=1.0, intercept=-1024.0)


def chest_hu(shape: tuple[int, int, int] = (12, 40, 40)) -> np.ndarray:
    """Air around a body, two lungs, outside-FOV padding in the corners (HU)."""
    _, h, w = shape
    y, x = np.mgrid[0:h, 0:w]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    plane = np.where(((y - cy) / (0.3 * h)) ** 2 + ((x - cx) / (0.42 * w)) ** 2 <= 1, 40.0, -1000.0)
    for side in (-1, 1):
        plane[((y - cy) / (0.2 * h)) ** 2 + ((x - cx - side * 0.18 * w) / (0.12 * w)) ** 2 <= 1] = -850.0
    plane[(y - cy) ** 2 + (x - cx) ** 2 > (min(h, w) / 2) ** 2] = -2048.0
    noise = np.random.default_rng(0).normal(0, 10, size=shape)
    return np.broadcast_to(plane, shape) + noise


def write(path: Path, hu: np.ndarray, intercept: float = -1024.0, v2: bool = False) -> Path:
    stored = np.rint(hu if v2 else hu - intercept).astype(np.int16)
    write_nifti(path, stored, (8.0, 4.0, 4.0))
    return path


def test_nibabel_and_simpleitk_reads_agree_in_axis_order(tmp_path: Path) -> None:
    data = np.random.default_rng(1).integers(-1000, 1000, size=(6, 9, 11)).astype(np.int16)
    path = tmp_path / "v.nii.gz"
    write_nifti(path, data, (2.5, 0.7, 0.8))
    a, b = read_volume(path, "nibabel"), read_volume(path, "sitk")
    np.testing.assert_array_equal(a.data, data)
    np.testing.assert_array_equal(b.data, data)
    assert a.header_spacing == pytest.approx((2.5, 0.7, 0.8)) == b.header_spacing
    np.testing.assert_array_equal(np.asarray(nib.load(str(path)).dataobj).transpose(2, 1, 0), data)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(sitk.ReadImage(str(path))), data)
    assert a.header_scaling is None


def test_multi_member_gzip_is_read_whole(tmp_path: Path) -> None:
    """A .nii.gz of several gzip members (bgzip, concatenated streams) reads like a single-member one."""
    data = np.random.default_rng(2).integers(-1000, 1000, size=(6, 9, 11)).astype(np.int16)
    single = tmp_path / "one.nii.gz"
    write_nifti(single, data, (2.5, 0.7, 0.8))
    raw = gzip.decompress(single.read_bytes())
    multi = tmp_path / "multi.nii.gz"
    multi.write_bytes(b"".join(gzip.compress(raw[i : i + 500]) for i in range(0, len(raw), 500)))
    np.testing.assert_array_equal(read_volume(multi).data, data)
    truncated = tmp_path / "cut.nii.gz"
    truncated.write_bytes(multi.read_bytes()[:-30])
    with pytest.raises(BadVolume, match="truncated"):
        read_volume(truncated)


def test_header_scaling_is_reported(tmp_path: Path) -> None:
    image = nib.Nifti1Image(np.ones((4, 4, 4), np.int16), np.eye(4))
    image.header.set_slope_inter(1.0, -1024.0)
    nib.save(image, str(tmp_path / "s.nii.gz"))
    assert read_volume(tmp_path / "s.nii.gz").header_scaling == (1.0, -1024.0)


def test_version_detection_v1_v2_and_odd_intercepts() -> None:
    hu = chest_hu()
    for intercept in (-1024.0, -8192.0):
        assert detect_version(np.rint(hu - intercept).ravel(), 1.0, intercept) == "v1"
        assert detect_version(np.rint(hu).ravel(), 1.0, intercept) == "v2"
    stored = np.rint((hu + 1024) / 2.0)
    assert detect_version(stored.ravel(), 2.0, -1024.0) == "v1"
    assert decide_rescale("auto", None, np.rint(hu).astype(np.int16), 1.0, -1024.0) == ("none", "v2")
    assert decide_rescale("auto", None, np.rint(hu + 1024).astype(np.int16), 1.0, -1024.0) == ("metadata", "v1")
    assert decide_rescale("v1", None, np.rint(hu).astype(np.int16), 1.0, -1024.0) == ("metadata", "v1")
    assert decide_rescale("v1", (1.0, -1024.0), hu, 1.0, -1024.0) == ("header", "header")


def _job(path: Path, meta: ScanMetadata | None = META, name: str = "valid_1_a_1.nii.gz") -> VolumeJob:
    return VolumeJob(name, str(path), "00", "valid", meta, ("m3d",))


def _run(tmp_path: Path, job: VolumeJob, version: str = "auto"):  # type: ignore[no-untyped-def]
    return process_volume(job, {"m3d": m3d_profile()}, RunOptions(str(tmp_path / "out"), version))  # type: ignore[arg-type]


def test_v1_and_v2_volumes_give_the_same_output(tmp_path: Path) -> None:
    hu = chest_hu()
    r1 = _run(tmp_path, _job(write(tmp_path / "a.nii.gz", hu)))
    row1 = r1.rows[0]
    first = np.load(row1["path"])
    r2 = _run(tmp_path, _job(write(tmp_path / "b.nii.gz", hu, v2=True)))
    row2 = r2.rows[0]
    assert (row1["rescale_applied"], row1["ctrate_version"]) == ("metadata", "v1")
    assert (row2["rescale_applied"], row2["ctrate_version"]) == ("none", "v2")
    np.testing.assert_allclose(np.load(row2["path"]), first, atol=1e-6)
    assert row2["shape"] == [1, 32, 256, 256] and row2["dtype"] == "float32"
    assert row2["sha256"] == file_sha256(Path(row2["path"]))
    assert row2["peak_mb"] >= 0 and row2["seconds"] > 0


def _bad_inputs(tmp_path: Path) -> dict[str, tuple[Path, ScanMetadata | None, str]]:
    good = write(tmp_path / "good.nii.gz", chest_hu())
    truncated = tmp_path / "truncated.nii.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    not_gzip = tmp_path / "plain.nii.gz"
    not_gzip.write_bytes(b"this is not a volume\n" * 40)
    not_nifti = tmp_path / "text.nii.gz"
    not_nifti.write_bytes(gzip.compress(b"VolumeName,XYSpacing\n" * 100))
    four_d = tmp_path / "four.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8, 8, 3), np.int16), np.eye(4)), str(four_d))
    two_d = tmp_path / "two.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((8, 8), np.int16), np.eye(4)), str(two_d))
    nan = tmp_path / "nan.nii.gz"
    values = np.ones((8, 8, 8), np.float32)
    values[2, 3, 4] = np.nan
    nib.save(nib.Nifti1Image(values, np.eye(4)), str(nan))
    constant = tmp_path / "constant.nii.gz"
    nib.save(nib.Nifti1Image(np.full((8, 8, 8), -1024, np.int16), np.eye(4)), str(constant))
    return {
        "truncated": (truncated, META, "truncated"),
        "not gzip": (not_gzip, META, "not gzip-compressed"),
        "not nifti": (not_nifti, META, "not a NIfTI file"),
        "4-D": (four_d, META, "4-D data"),
        "2-D": (two_d, META, "2-D data"),
        "NaN": (nan, META, "NaN voxel"),
        "constant": (constant, META, "constant volume"),
        "missing metadata": (good, None, "missing metadata row"),
        "zero spacing": (good, ScanMetadata(0.0, 8.0, 1.0, -1024.0), "absurd XYSpacing 0.0"),
        "absurd spacing": (good, ScanMetadata(4.0, 250.0, 1.0, -1024.0), "absurd ZSpacing 250.0"),
        "missing file": (tmp_path / "absent.nii.gz", META, "file not found"),
    }


def test_each_bad_input_is_quarantined_with_its_reason(tmp_path: Path) -> None:
    for label, (path, meta, reason) in _bad_inputs(tmp_path).items():
        result = _run(tmp_path, _job(path, meta))
        assert not result.rows, label
        assert len(result.quarantine) == 1, label
        assert reason in result.quarantine[0]["reason"], (label, result.quarantine[0]["reason"])
        assert result.quarantine[0]["VolumeName"] == "valid_1_a_1.nii.gz"
    with pytest.raises(BadVolume, match="truncated"):
        read_volume(tmp_path / "truncated.nii.gz", "nibabel")
    with pytest.raises(BadVolume, match="unreadable"):
        read_volume(tmp_path / "plain.nii.gz", "sitk")


def test_save_npy_atomic_hash_and_no_leftovers(tmp_path: Path) -> None:
    array = np.arange(24, dtype=np.float32).reshape(2, 3, 4)
    sha = save_npy_atomic(array, tmp_path / "x" / "a.npy")
    assert sha == file_sha256(tmp_path / "x" / "a.npy")
    np.testing.assert_array_equal(np.load(tmp_path / "x" / "a.npy"), array)
    assert [p.name for p in (tmp_path / "x").iterdir()] == ["a.npy"]


def test_custom_profiles_from_yaml(tmp_path: Path) -> None:
    spec = tmp_path / "profiles.yaml"
    spec.write_text(
        """
profiles:
  - name: lung_small
    clip: [-1000, 400]
    resample: {size: [8, 16, 16], align: centers}
    normalise: {kind: window, lo: -1000, hi: 400}
    crop_pad: {size: [8, 12, 20], value: 0}
    layout: {axes: zyx, channel: true}
    dtype: float16
"""
    )
    (profile,) = resolve_profiles("lung_small", spec)
    assert [s.name for s in profile.steps] == ["rescale", "clip", "resample", "normalise", "crop_pad", "layout"]
    assert profile.describe().startswith("read(nibabel) -> rescale")
    result = process_volume(
        VolumeJob(
            "valid_1_a_1.nii.gz", str(write(tmp_path / "v.nii.gz", chest_hu())), "00", "valid", META, (profile.name,)
        ),
        {profile.name: profile},
        RunOptions(str(tmp_path / "out")),
    )
    out = np.load(result.rows[0]["path"])
    assert out.shape == (1, 8, 12, 20) and out.dtype == np.float16
    assert float(out.min()) >= 0.0 and float(out.max()) <= 1.0
    assert result.rows[0]["path"].endswith("volumes/lung_small/valid_1_a_1.npy")
    bad = tmp_path / "bad.yaml"
    bad.write_text("profiles:\n  - name: x\n    resample: {spacing: [1, 1]}\n")
    with pytest.raises(ProfileError, match=re.escape("bad.yaml: profiles[0] 'x': resample.spacing")):
        load_profiles_file(bad)
    bad.write_text("profiles:\n  - name: m3d\n")
    with pytest.raises(ProfileError, match="already taken"):
        load_profiles_file(bad)
    with pytest.raises(ProfileError, match="unknown volume profile 'nope'"):
        resolve_profiles("m3d,nope")
    assert m3d_profile().version != profile.version


@pytest.mark.slow
def test_worker_pool_matches_in_process(tmp_path: Path) -> None:
    """``workers=2`` (spawned processes, one volume in flight each) writes the same bytes as one process."""
    from rad3d_pipeline.volumes.runner import run_jobs

    hu = chest_hu()
    jobs = [
        VolumeJob(f"valid_{i}_a_1.nii.gz", str(write(tmp_path / f"{i}.nii.gz", hu + i)), "00", "valid", META, ("m3d",))
        for i in range(3)
    ]
    bad = VolumeJob("valid_9_a_1.nii.gz", str(tmp_path / "absent.nii.gz"), "00", "valid", META, ("m3d",))
    one = list(run_jobs([*jobs, bad], [m3d_profile()], RunOptions(str(tmp_path / "one")), workers=1))
    two = list(run_jobs([*jobs, bad], [m3d_profile()], RunOptions(str(tmp_path / "two")), workers=2))
    assert [r.rows[0]["sha256"] for r in one[:3]] == [r.rows[0]["sha256"] for r in two[:3]]
    assert two[3].quarantine and not two[3].rows


def test_header_scaling_is_applied_once_by_either_reader(tmp_path: Path) -> None:
    hu = chest_hu()
    image = nib.Nifti1Image(np.rint(hu - -1024.0).astype(np.int16).transpose(2, 1, 0), np.diag([4.0, 4.0, 8.0, 1.0]))
    image.header.set_slope_inter(1.0, -1024.0)
    path = tmp_path / "scaled.nii.gz"
    nib.save(image, str(path))
    (sitk_m3d,) = load_profiles_from_text(
        tmp_path,
        (
            "profiles:\n  - name: m3d_sitk\n    reader: sitk\n    resample: {size: [32, 256, 256], align: origin}\n"
            "    normalise: minmax\n    layout: {axes: zyx, channel: true}\n"
        ),
    )
    profiles = {"m3d": m3d_profile(), "m3d_sitk": sitk_m3d}
    job = VolumeJob("valid_1_a_1.nii.gz", str(path), "00", "valid", META, ("m3d", "m3d_sitk"))
    rows = {r["profile"]: r for r in process_volume(job, profiles, RunOptions(str(tmp_path / "out"), "v1")).rows}
    assert rows["m3d"]["rescale_applied"] == rows["m3d_sitk"]["rescale_applied"] == "header"
    ours = np.load(rows["m3d"]["path"])
    assert ours.shape == (1, 32, 256, 256)
    np.testing.assert_allclose(np.load(rows["m3d_sitk"]["path"]), ours, atol=1e-5)
    hu_only = _run(tmp_path, _job(write(tmp_path / "hu.nii.gz", hu, v2=True)))
    np.testing.assert_allclose(ours, np.load(hu_only.rows[0]["path"]), atol=1e-6)
    # A profile that reads with SimpleITK alone still sees the header's scaling: no metadata rescale on top.
    alone = VolumeJob("valid_1_a_1.nii.gz", str(path), "00", "valid", META, ("m3d_sitk",))
    (row,) = process_volume(alone, profiles, RunOptions(str(tmp_path / "alone"), "v1")).rows
    assert row["rescale_applied"] == "header"


def load_profiles_from_text(tmp_path: Path, text: str) -> list[Profile]:
    spec = tmp_path / "p.yaml"
    spec.write_text(text)
    return list(load_profiles_file(spec).values())

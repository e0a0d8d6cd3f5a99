"""Damaged volume trees: dangling links, files that vanish, unreadable entries, duplicates, leftovers.

Each is quarantined with its file and reason while the good volumes flow; stale outputs are moved
aside and a killed worker's temporary files removed. The last test drives the real ``volumes``
asset through Dagster's ``materialize``.
"""

from __future__ import annotations

import os
import shutil
import signal
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
from dagster import AssetCheckSeverity, DagsterInstance, materialize

import rad3d_pipeline.volumes.shards as volume_shards
from rad3d_pipeline.common.errors import InputFileError
from rad3d_pipeline.ingest.ctrate import CtrateLayout
from rad3d_pipeline.ingest.patients import shard_key
from rad3d_pipeline.synthetic.phantoms import write_nifti
from rad3d_pipeline.volumes import io as volume_io
from rad3d_pipeline.volumes import runner
from rad3d_pipeline.volumes.io import BadVolume, read_volume
from rad3d_pipeline.volumes.outputs import STALE_DIR, move_aside_stale, remove_temp_files, stem_shard
from rad3d_pipeline.volumes.profiles import load_profiles_file
from rad3d_pipeline.volumes.runner import (
    RunOptions,
    ScanMetadata,
    discover_volumes,
    metadata_lookup,
    plan_jobs,
    run_jobs,
)

warnings.filterwarnings("ignore", module="dagster")
N_SHARDS = 4
ALL = {"00", "01", "02", "03"}
META = ScanMetadata(xy_spacing=4.0, z_spacing=8.0, slope=1.0, intercept=-1024.0)
TINY_YAML = """profiles:
  - name: tiny
    resample: {size: [6, 12, 12], align: centers}
    normalise: minmax
  - name: tiny_b
    resample: {size: [4, 8, 8], align: centers}
    normalise: minmax
"""


@pytest.fixture(autouse=True)
def _no_hang() -> Iterator[None]:
    """A FIFO read that blocks would hang the suite: fail after 60 s instead."""

    def _raise(*_: Any) -> None:
        raise TimeoutError("test hung (a blocking read of a FIFO?)")

    previous = signal.signal(signal.SIGALRM, _raise)
    signal.alarm(60)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, previous)


def stored_volume(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 2000, size=(8, 10, 10)).astype(np.int16)


def put(base: Path, name: str, scan_folder: str | None = None, seed: int = 0) -> Path:
    """Write a small valid volume at its CT-RATE place (or in another scan folder of its patient)."""
    split, number, letter, _ = name.removesuffix(".nii.gz").split("_")
    patient = f"{split}_{number}"
    path = base / split / patient / (scan_folder or f"{patient}_{letter}") / name
    write_nifti(path, stored_volume(seed), (8.0, 4.0, 4.0))
    return path


def tiny_profiles(tmp_path: Path) -> list[Any]:
    spec = tmp_path / "profiles.yaml"
    spec.write_text(TINY_YAML)
    return list(load_profiles_file(spec).values())


def run_tree(
    tmp_path: Path, base: Path, between: Any = None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[tuple[str, str, str, Path]]]:
    """Discover, plan and run like the asset; ``between(found)`` damages the tree after the listing."""
    found, bad = discover_volumes(
        CtrateLayout.resolve(base.parent if base.name == "dataset" else base), ["valid"], ALL, N_SHARDS
    )
    if between is not None:
        between(found)
    names = [name for name, *_ in found]
    lookup = metadata_lookup(
        pd.DataFrame(
            {
                "VolumeName": names,
                "XYSpacing": META.xy_spacing,
                "ZSpacing": META.z_spacing,
                "RescaleSlope": META.slope,
                "RescaleIntercept": META.intercept,
            }
        )
    )
    profiles = tiny_profiles(tmp_path)[:1]
    jobs, kept = plan_jobs(found, lookup, profiles, pd.DataFrame())
    rows, quarantine = list(kept), list(bad)
    for result in run_jobs(jobs, profiles, RunOptions(str(tmp_path / "out"), device="cpu")):
        rows.extend(result.rows)
        quarantine.extend(result.quarantine)
    return rows, quarantine, found


def reasons(quarantine: list[dict[str, Any]]) -> dict[str, str]:
    names = [q["VolumeName"] for q in quarantine]
    assert len(names) == len(set(names)), f"a volume quarantined twice: {names}"
    return {q["VolumeName"]: q["reason"] for q in quarantine}


def test_dangling_link_directory_and_fifo_are_quarantined_and_good_volumes_flow(tmp_path: Path) -> None:
    base = tmp_path / "ct"
    good = put(base, "valid_1_a_1.nii.gz")
    dangling = base / "valid" / "valid_2" / "valid_2_a" / "valid_2_a_1.nii.gz"
    dangling.parent.mkdir(parents=True)
    dangling.symlink_to(tmp_path / "gone" / "valid_2_a_1.nii.gz")
    folder = base / "valid" / "valid_3" / "valid_3_a" / "valid_3_a_1.nii.gz"
    folder.mkdir(parents=True)
    (folder / "inner.nii.gz").write_bytes(b"not looked at")  # not entered: no second record from inside
    fifo = base / "valid" / "valid_4" / "valid_4_a" / "valid_4_a_1.nii.gz"
    fifo.parent.mkdir(parents=True)
    os.mkfifo(fifo)

    rows, quarantine, _ = run_tree(tmp_path, base)

    assert [r["VolumeName"] for r in rows] == [good.name]
    assert np.load(rows[0]["path"]).shape == (6, 12, 12)
    why = reasons(quarantine)
    assert set(why) == {"valid_2_a_1.nii.gz", "valid_3_a_1.nii.gz", "valid_4_a_1.nii.gz"}
    assert why["valid_2_a_1.nii.gz"].startswith("dangling symbolic link (points to ")
    assert str(tmp_path / "gone") in why["valid_2_a_1.nii.gz"]
    assert why["valid_3_a_1.nii.gz"] == "a directory, not a volume file"
    assert why["valid_4_a_1.nii.gz"] == "a FIFO (named pipe), not a volume file"
    by_name = {q["VolumeName"]: q for q in quarantine}
    assert by_name["valid_2_a_1.nii.gz"]["source_path"] == str(dangling)
    assert {q["shard"] for q in quarantine} <= ALL


@pytest.mark.parametrize("reader", ["nibabel", "sitk"])
def test_readers_refuse_non_files_without_blocking(tmp_path: Path, reader: str) -> None:
    fifo = tmp_path / "pipe.nii.gz"
    os.mkfifo(fifo)
    folder = tmp_path / "dir.nii.gz"
    folder.mkdir()
    link = tmp_path / "link.nii.gz"
    link.symlink_to(tmp_path / "nowhere.nii.gz")
    with pytest.raises(BadVolume, match=r"^a FIFO \(named pipe\), not a volume file$"):
        read_volume(fifo, reader)  # type: ignore[arg-type]
    with pytest.raises(BadVolume, match=r"^a directory, not a volume file$"):
        read_volume(folder, reader)  # type: ignore[arg-type]
    with pytest.raises(BadVolume, match=r"^dangling symbolic link"):
        read_volume(link, reader)  # type: ignore[arg-type]
    with pytest.raises(BadVolume, match=r"^file not found \(listed, but gone when it was read\)$"):
        read_volume(tmp_path / "absent.nii.gz", reader)  # type: ignore[arg-type]


def test_files_vanishing_after_the_listing_are_quarantined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "ct"
    for number in range(1, 5):
        put(base, f"valid_{number}_a_1.nii.gz", seed=number)

    def delete_one(found: list[tuple[str, str, str, Path]]) -> None:
        by_name = {name: path for name, _, _, path in found}
        by_name["valid_1_a_1.nii.gz"].unlink()  # gone before the plan looks at it

    # and one gone between the plan (its stat) and the read
    real_read = runner.read_volume

    def read_after_delete(path: Path, reader: Any = "nibabel") -> Any:
        if path.name == "valid_2_a_1.nii.gz":
            path.unlink()
        return real_read(path, reader)

    monkeypatch.setattr(runner, "read_volume", read_after_delete)
    rows, quarantine, found = run_tree(tmp_path, base, between=delete_one)

    assert len(found) == 4
    assert sorted(r["VolumeName"] for r in rows) == ["valid_3_a_1.nii.gz", "valid_4_a_1.nii.gz"]
    why = reasons(quarantine)
    assert why == {
        "valid_1_a_1.nii.gz": "file not found (listed, but gone when it was read)",
        "valid_2_a_1.nii.gz": "file not found (listed, but gone when it was read)",
    }


def test_permission_denied_is_quarantined(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    base = tmp_path / "ct"
    put(base, "valid_1_a_1.nii.gz")
    locked = put(base, "valid_2_a_1.nii.gz", seed=2)
    if os.geteuid() != 0:
        locked.chmod(0)
    else:  # root reads through any mode bits: the kernel's answer to a non-root reader, simulated
        real_open = os.open

        def denying_open(path: Any, flags: int, *args: Any, **kwargs: Any) -> int:
            if Path(path) == locked:
                raise PermissionError(13, "Permission denied", str(path))
            return real_open(path, flags, *args, **kwargs)

        monkeypatch.setattr(volume_io.os, "open", denying_open)
    try:
        rows, quarantine, _ = run_tree(tmp_path, base)
    finally:
        locked.chmod(0o644)
    assert [r["VolumeName"] for r in rows] == ["valid_1_a_1.nii.gz"]
    assert reasons(quarantine) == {"valid_2_a_1.nii.gz": "permission denied"}


def test_a_volume_in_two_scan_folders_or_two_roots_is_quarantined_once_with_both_paths(tmp_path: Path) -> None:
    root = tmp_path / "ct"
    base = root / "dataset"
    (base / "metadata").mkdir(parents=True)  # the layout resolves to dataset/
    put(base, "valid_1_a_1.nii.gz")
    right = put(base, "valid_2_a_1.nii.gz")
    wrong_scan = put(base, "valid_2_a_1.nii.gz", scan_folder="valid_2_b", seed=5)
    in_dataset = put(base, "valid_3_a_1.nii.gz")
    at_root = put(root, "valid_3_a_1.nii.gz")
    only_at_root = put(root, "valid_4_a_1.nii.gz")

    rows, quarantine, found = run_tree(tmp_path, base)

    assert sorted(name for name, *_ in found) == ["valid_1_a_1.nii.gz", "valid_4_a_1.nii.gz"]
    assert sorted(r["VolumeName"] for r in rows) == ["valid_1_a_1.nii.gz", "valid_4_a_1.nii.gz"]
    assert {r["source_path"] for r in rows} >= {str(only_at_root)}
    by_name = {q["VolumeName"]: q for q in quarantine}
    assert set(reasons(quarantine)) == {"valid_2_a_1.nii.gz", "valid_3_a_1.nii.gz"}
    for name, paths in (("valid_2_a_1.nii.gz", (right, wrong_scan)), ("valid_3_a_1.nii.gz", (in_dataset, at_root))):
        record = by_name[name]
        assert record["reason"].startswith("found in 2 places (")
        assert sorted(record["source_path"].split(" | ")) == sorted(str(p) for p in paths)
        assert all(str(p) in record["reason"] for p in paths)
        assert record["shard"] == shard_key(name.rsplit("_", 2)[0], N_SHARDS)


def test_a_scan_folder_that_cannot_be_listed_is_quarantined_not_lost(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    base = tmp_path / "ct"
    put(base, "valid_1_a_1.nii.gz")
    hidden = put(base, "valid_2_a_1.nii.gz").parent
    real_scandir = os.scandir

    def denying_scandir(path: Any = ".") -> Any:
        if Path(path) == hidden:
            raise PermissionError(13, "Permission denied", str(path))
        return real_scandir(path)

    monkeypatch.setattr(os, "scandir", denying_scandir)  # os.walk lists through it
    rows, quarantine, _ = run_tree(tmp_path, base)
    assert [r["VolumeName"] for r in rows] == ["valid_1_a_1.nii.gz"]
    assert reasons(quarantine) == {
        "valid_2_a/": "folder not listed (permission denied): its volumes are missing from the build"
    }
    assert quarantine[0]["source_path"] == str(hidden)
    assert quarantine[0]["shard"] == shard_key("valid_2", N_SHARDS)

    monkeypatch.setattr(
        os, "scandir", lambda path=".": (_ for _ in ()).throw(PermissionError(13, "Permission denied", str(path)))
    )
    with pytest.raises(InputFileError, match=r"valid: volume folder not readable \(permission denied\)$"):
        discover_volumes(CtrateLayout(base), ["valid"], ALL, N_SHARDS)


def _npy(out: Path, profile: str, stem: str) -> Path:
    path = out / "volumes" / profile / f"{stem}.npy"
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, np.zeros(3, np.float32))
    return path


def _stems_by_shard() -> dict[str, list[str]]:
    stems: dict[str, list[str]] = {}
    for number in range(1, 60):
        stem = f"valid_{number}_a_1"
        shard = stem_shard(stem, N_SHARDS)
        assert shard == shard_key(f"valid_{number}", N_SHARDS)
        stems.setdefault(shard, []).append(stem)
    return stems


def test_temp_files_of_the_shard_older_than_the_run_are_removed(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stems = _stems_by_shard()
    mine, other = stems["01"][0], stems["02"][0]
    folder = out / "volumes" / "m3d"
    folder.mkdir(parents=True)
    old_mine = folder / f".{mine}.npy.tmp-0a1b2c3d"
    fresh_mine = folder / f".{mine}.npy.tmp-deadbeef"
    old_other = folder / f".{other}.npy.tmp-0a1b2c3d"
    unrelated = folder / ".notes.npy.tmp-0a1b2c3d"
    in_other_profile = out / "volumes" / "gone_profile" / f".{mine}.npy.tmp-12345678"
    in_other_profile.parent.mkdir(parents=True)
    for path in (old_mine, fresh_mine, old_other, unrelated, in_other_profile):
        path.write_bytes(b"half")
    started = time.time()
    for path in (old_mine, old_other, unrelated, in_other_profile):
        os.utime(path, (started - 3600, started - 3600))
    os.utime(fresh_mine, (started + 1, started + 1))  # being written by a run that started after ours

    removed = remove_temp_files(out, {"01"}, N_SHARDS, older_than=started)

    assert removed == sorted([old_mine, in_other_profile])
    assert not old_mine.exists() and not in_other_profile.exists()
    assert fresh_mine.exists() and old_other.exists() and unrelated.exists()


def test_stale_outputs_of_the_shard_are_moved_aside(tmp_path: Path) -> None:
    out = tmp_path / "out"
    stems = _stems_by_shard()
    keep, dropped_volume, other_shard = stems["01"][0], stems["01"][1], stems["02"][0]
    current = [_npy(out, "m3d", keep)]
    old_profile = _npy(out, "ctclip", keep)  # a profile removed from the setting
    vanished = _npy(out, "m3d", dropped_volume)  # a volume whose source is gone
    untouched = [_npy(out, "m3d", other_shard), _npy(out, "m3d", "notes")]
    (out / "volumes" / "quarantine").mkdir()
    (out / "volumes" / "quarantine" / f"{dropped_volume}.npy").write_bytes(b"not an output folder")

    moved = move_aside_stale(out, {"01"}, N_SHARDS, current, stamp="20250101T000000.000000Z")

    stale = out / "volumes" / STALE_DIR / "20250101T000000.000000Z"
    assert sorted(moved) == sorted(
        [(old_profile, stale / "ctclip" / f"{keep}.npy"), (vanished, stale / "m3d" / f"{dropped_volume}.npy")]
    )
    assert all(not src.exists() and dst.is_file() for src, dst in moved)
    assert all(p.exists() for p in [*current, *untouched])
    assert (out / "volumes" / "quarantine" / f"{dropped_volume}.npy").exists()
    assert move_aside_stale(out, {"01"}, N_SHARDS, current) == []  # .stale itself is never a profile folder


# -- the real asset through Dagster --------------------------------------------------------------------------


def _materialize(defs: Any) -> Any:
    from assets.partitions import shard_partitions

    keys = shard_partitions.get_partition_keys()
    return materialize(
        list(defs.assets),
        resources=dict(defs.resources),
        selection=["volumes"],
        tags={"dagster/asset_partition_range_start": keys[0], "dagster/asset_partition_range_end": keys[-1]},
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def _materialization_metadata(result: Any) -> dict[str, Any]:
    """The run's metadata (one materialization per shard of the range, all with the run's figures)."""
    events = [e for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION"]
    metas = [{k: v.value for k, v in e.event_specific_data.materialization.metadata.items()} for e in events]
    assert metas and all(m["run_stale_moved_aside"] == metas[0]["run_stale_moved_aside"] for m in metas)
    return metas[0]


def _check(result: Any) -> Any:
    (check,) = [
        e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    return check


@pytest.mark.slow
def test_volumes_asset_quarantines_damage_moves_stale_outputs_and_removes_temp_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rad3d.definitions import build_definitions
    from rad3d_pipeline.synthetic.phantoms import PhantomWriter
    from rad3d_pipeline.synthetic.sample_data import write_sample_dataset
    from resources.parquet_io import table_dir

    sample = tmp_path / "ctrate"
    write_sample_dataset(sample, patients=12, seed=4, volume_writer=PhantomWriter(size=(12, 48, 48)))
    layout = CtrateLayout.resolve(sample)
    spec = tmp_path / "profiles.yaml"
    spec.write_text(TINY_YAML)
    monkeypatch.setenv("RAD3D_VOLUME_PROFILES", "tiny,tiny_b")
    monkeypatch.setenv("RAD3D_VOLUME_PROFILES_FILE", str(spec))
    monkeypatch.setenv("RAD3D_VOLUME_DEVICE", "cpu")
    out = tmp_path / "out"
    defs = build_definitions(ctrate_root=str(sample), out_dir=str(out), splits="all")

    first = _materialize(defs)
    assert first.success and _check(first).passed
    manifest = pd.concat([pd.read_parquet(p) for p in table_dir(out, "volumes").glob("*.parquet")])
    names = sorted(manifest["VolumeName"].unique())
    assert len(names) >= 4 and len(manifest) == 2 * len(names)

    dangling, vanishing, duplicated = names[0], names[1], names[2]
    dangling_path = layout.volume_path(dangling)
    dangling_path.unlink()
    dangling_path.symlink_to(tmp_path / "elsewhere" / dangling)
    vanishing_path = layout.volume_path(vanishing)
    original = layout.volume_path(duplicated)
    copy = original.parent.with_name(original.parent.name[:-1] + "z") / duplicated
    copy.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(original, copy)
    real_discover = volume_shards.discover_volumes

    def discover_then_delete(*args: Any, **kwargs: Any) -> Any:
        found = real_discover(*args, **kwargs)
        vanishing_path.unlink(missing_ok=True)  # the listing saw it; the read will not
        return found

    monkeypatch.setattr(volume_shards, "discover_volumes", discover_then_delete)
    stem = names[3].removesuffix(".nii.gz")
    leftover = out / "volumes" / "tiny" / f".{stem}.npy.tmp-0badf00d"
    leftover.write_bytes(b"half an array")
    os.utime(leftover, (time.time() - 600, time.time() - 600))
    # A profile dropped from the setting: tiny_b's outputs must not stay as if current.
    monkeypatch.setenv("RAD3D_VOLUME_PROFILES", "tiny")
    defs = build_definitions(ctrate_root=str(sample), out_dir=str(out), splits="all")

    second = _materialize(defs)

    assert second.success  # the damage is quarantined, the asset does not fail
    check = _check(second)
    assert not check.passed and check.severity == AssetCheckSeverity.ERROR
    quarantine = pd.read_csv(out / "volumes" / "quarantine.csv", dtype=str, keep_default_na=False)
    assert sorted(quarantine["VolumeName"]) == sorted([dangling, vanishing, duplicated])  # each once
    why = quarantine.set_index("VolumeName")
    assert why.at[dangling, "reason"].startswith("dangling symbolic link")
    assert why.at[dangling, "source_path"] == str(dangling_path)
    assert why.at[vanishing, "reason"] == "file not found (listed, but gone when it was read)"
    assert why.at[duplicated, "reason"].startswith("found in 2 places")
    assert sorted(why.at[duplicated, "source_path"].split(" | ")) == sorted([str(original), str(copy)])

    now = pd.concat([pd.read_parquet(p) for p in table_dir(out, "volumes").glob("*.parquet")])
    good = sorted(set(names) - {dangling, vanishing, duplicated})
    assert sorted(now["VolumeName"]) == good and set(now["profile"]) == {"tiny"}
    assert set(now["status"]) == {"skipped"}  # unchanged volumes are not rebuilt
    on_disk = sorted(p.name for p in (out / "volumes" / "tiny").iterdir())
    assert on_disk == sorted(n.replace(".nii.gz", ".npy") for n in good)  # no temp file, nothing stale
    assert not (out / "volumes" / "tiny_b").exists() or not any((out / "volumes" / "tiny_b").iterdir())
    stale = list((out / "volumes" / STALE_DIR).glob("*/*/*.npy"))
    expected_stale = 3 + len(names)  # 3 damaged volumes' tiny outputs, every tiny_b output
    assert len(stale) == expected_stale
    meta = _materialization_metadata(second)
    assert meta["run_stale_moved_aside"] == expected_stale
    assert meta["run_quarantined"] == 3 and meta["run_volumes"] == len(good)

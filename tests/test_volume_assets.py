"""The volumes asset through Dagster: shard range in one run, quarantine and its check, skip on rerun."""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import AssetCheckSeverity, DagsterInstance, materialize

from assets.partitions import shard_partitions
from rad3d.definitions import build_definitions
from rad3d_pipeline.ingest.ctrate import CtrateLayout, read_metadata
from rad3d_pipeline.synthetic.phantoms import PhantomWriter
from rad3d_pipeline.synthetic.sample_data import write_sample_dataset
from resources.parquet_io import table_dir

warnings.filterwarnings("ignore", module="dagster")
ALL_SHARDS = {
    "dagster/asset_partition_range_start": shard_partitions.get_partition_keys()[0],
    "dagster/asset_partition_range_end": shard_partitions.get_partition_keys()[-1],
}


def _materialize(defs):  # type: ignore[no-untyped-def]
    return materialize(
        list(defs.assets),
        resources=dict(defs.resources),
        selection=["volumes"],
        tags=ALL_SHARDS,
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def _manifest(out: Path) -> pd.DataFrame:
    return pd.concat([pd.read_parquet(p) for p in sorted(table_dir(out, "volumes").glob("*.parquet"))])


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    root = tmp_path / "ctrate"
    write_sample_dataset(root, patients=8, seed=4, volume_writer=PhantomWriter())
    return root


@pytest.mark.slow
def test_volumes_asset_quarantines_bad_files_and_skips_on_rerun(sample: Path, tmp_path: Path) -> None:
    layout = CtrateLayout.resolve(sample)
    names = sorted(read_metadata(layout, "valid").table["VolumeName"])
    truncated, garbage = layout.volume_path(names[0]), layout.volume_path(names[1])
    truncated.write_bytes(truncated.read_bytes()[:1000])
    garbage.write_bytes(b"<html>rate limited</html>")
    orphan = layout.volume_path(names[2]).with_name(names[2].replace("_1.nii.gz", "_9.nii.gz"))
    orphan.write_bytes(layout.volume_path(names[2]).read_bytes())
    out = tmp_path / "out"
    defs = build_definitions(ctrate_root=str(sample), out_dir=str(out), splits="all")

    result = _materialize(defs)
    assert result.success
    (check,) = [
        e.asset_check_evaluation_data for e in result.all_events if e.event_type_value == "ASSET_CHECK_EVALUATION"
    ]
    assert check.check_name == "no_quarantined_volumes" and not check.passed
    assert check.severity == AssetCheckSeverity.ERROR
    quarantine = pd.read_csv(out / "volumes" / "quarantine.csv").set_index("VolumeName")["reason"]
    assert "truncated" in quarantine[names[0]]
    assert "not gzip-compressed" in quarantine[names[1]]
    assert "missing metadata row" in quarantine[orphan.name]
    assert len(quarantine) == 3
    manifest = _manifest(out)
    good = sorted(set(names) - {names[0], names[1]})
    assert sorted(manifest["VolumeName"]) == good  # every other valid volume, no train volume (default splits)
    assert set(manifest["profile"]) == {"m3d"} and set(manifest["status"]) == {"written"}
    for row in manifest.itertuples(index=False):
        path = out / "volumes" / "m3d" / row.VolumeName.replace(".nii.gz", ".npy")
        assert row.path == str(path)
        array = np.load(path)
        assert array.shape == (1, 32, 256, 256) and array.dtype == np.float32
    assert set(manifest["rescale_applied"]) == {"metadata"}
    mtimes = {p: p.stat().st_mtime_ns for p in (out / "volumes" / "m3d").glob("*.npy")}

    again = _materialize(defs)
    assert again.success
    rerun = _manifest(out)
    assert set(rerun["status"]) == {"skipped"} and len(rerun) == len(manifest)
    assert {p: p.stat().st_mtime_ns for p in mtimes} == mtimes

    touched = layout.volume_path(good[0])
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    third = _materialize(defs)
    assert third.success
    status = _manifest(out).set_index("VolumeName")["status"]
    assert status[good[0]] == "written" and (status.drop(good[0]) == "skipped").all()

    # A corrected metadata row (here the intercept) rebuilds that volume only.
    metadata_csv = layout.metadata_csv("valid")
    rows = pd.read_csv(metadata_csv, dtype=str, keep_default_na=False)
    rows.loc[rows["VolumeName"] == good[1], "RescaleIntercept"] = "-1000"
    rows.to_csv(metadata_csv, index=False)
    fourth = _materialize(defs)
    assert fourth.success
    status = _manifest(out).set_index("VolumeName")["status"]
    assert status[good[1]] == "written" and (status.drop(good[1]) == "skipped").all()


@pytest.mark.slow
def test_cli_build_select_volumes_exits_0_with_quarantine(sample: Path, tmp_path: Path) -> None:
    layout = CtrateLayout.resolve(sample)
    name = sorted(read_metadata(layout, "valid").table["VolumeName"])[0]
    layout.volume_path(name).write_bytes(b"\x1f\x8b\x08\x00 truncated")
    env = dict(os.environ, DAGSTER_HOME=str(tmp_path / "home"), RAD3D_VOLUME_PROFILES="m3d")
    env.pop("RAD3D_SHARDS", None)
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "rad3d.cli",
            "build",
            "--ctrate-root",
            str(sample),
            "--out",
            str(tmp_path / "out"),
            "--select",
            "group:volumes",
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert built.returncode == 0, built.stdout + built.stderr
    assert "check failed (ERROR): volumes no_quarantined_volumes" in built.stdout
    assert "Volumes m3d:" in built.stdout and "Quarantined volumes: 1" in built.stdout

"""Schedules and sensors: the weekly rebuild, the new-drop sensor (changed shards only), the failure record."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pandas as pd
import pytest
from dagster import (
    AssetKey,
    DagsterEventType,
    DagsterInstance,
    RunRequest,
    SkipReason,
    asset,
    build_run_status_sensor_context,
    build_schedule_context,
    build_sensor_context,
    materialize,
)

from assets.operations import ctrate_drop_sensor, run_failure_record, weekly_benchmark_rebuild
from rad3d.definitions import build_definitions
from rad3d_pipeline.ctrate import CtrateLayout
from rad3d_pipeline.drops import changed_shards, shard_fingerprints
from rad3d_pipeline.patients import shard_key
from rad3d_pipeline.sample_data import write_sample_dataset

warnings.filterwarnings("ignore", module="dagster")


@pytest.fixture
def sample(tmp_path: Path) -> Path:
    write_sample_dataset(tmp_path / "ct", patients=12, seed=3)
    return tmp_path / "ct"


def _touch_one_patient(root: Path) -> str:
    labels = root / "dataset" / "multi_abnormality_labels" / "valid_predicted_labels.csv"
    frame = pd.read_csv(labels)
    frame.loc[0, "Cardiomegaly"] = 1 - int(frame.loc[0, "Cardiomegaly"])
    frame.to_csv(labels, index=False)
    split, patient = frame.loc[0, "VolumeName"].split("_")[:2]
    return shard_key(f"{split}_{patient}", 16)


def test_fingerprints_change_only_for_the_touched_shard(sample: Path) -> None:
    layout = CtrateLayout.resolve(sample)
    before = shard_fingerprints(layout, ("train", "valid"), 16)
    assert shard_fingerprints(layout, ("train", "valid"), 16) == before
    shard = _touch_one_patient(sample)
    after = shard_fingerprints(layout, ("train", "valid"), 16)
    assert changed_shards(before, after) == [shard]


def test_drop_sensor_requests_only_changed_shards(sample: Path, tmp_path: Path) -> None:
    defs = build_definitions(ctrate_root=str(sample), out_dir=str(tmp_path / "out"))
    repo = defs.get_repository_def()
    resources = dict(defs.resources)
    first = ctrate_drop_sensor(
        build_sensor_context(
            repository_def=repo, resources={"ctrate": resources["ctrate"], "settings": resources["settings"]}
        )
    )
    assert isinstance(first, RunRequest) and first.asset_graph_subset is not None
    context = build_sensor_context(
        repository_def=repo,
        cursor=json.dumps(shard_fingerprints(CtrateLayout.resolve(sample), ("train", "valid"), 16)),
        resources={"ctrate": resources["ctrate"], "settings": resources["settings"]},
    )
    assert isinstance(ctrate_drop_sensor(context), SkipReason)
    shard = _touch_one_patient(sample)
    request = ctrate_drop_sensor(context)
    assert isinstance(request, RunRequest) and request.tags["rad3d/shards"] == shard
    subset = request.asset_graph_subset
    assert subset is not None
    sentences = subset.get_partitions_subset(AssetKey("report_sentences"))
    assert set(sentences.get_partition_keys()) == {shard}
    candidates = set(subset.get_partitions_subset(AssetKey("qa_candidates")).get_partition_keys())
    assert candidates == {f"{shard}|{t}" for t in "123"}
    assert AssetKey("release_export") in subset.non_partitioned_asset_keys


def test_weekly_rebuild_requests_the_whole_graph(sample: Path, tmp_path: Path) -> None:
    defs = build_definitions(ctrate_root=str(sample), out_dir=str(tmp_path / "out"))
    request = weekly_benchmark_rebuild(build_schedule_context(repository_def=defs.get_repository_def()))
    assert isinstance(request, RunRequest) and request.asset_graph_subset is not None
    assert len(request.asset_graph_subset.asset_keys) == len(defs.resolve_asset_graph().materializable_asset_keys)


def test_run_failure_writes_a_record(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RAD3D_OUT", str(tmp_path))

    @asset
    def broken() -> None:
        raise RuntimeError("disk full")

    instance = DagsterInstance.ephemeral()
    result = materialize([broken], instance=instance, raise_on_error=False)
    [entry] = instance.all_logs(result.run_id, of_type=DagsterEventType.RUN_FAILURE)
    failure = entry.dagster_event
    context = build_run_status_sensor_context(
        sensor_name="run_failure_record",
        dagster_event=failure,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
    ).for_run_failure()
    run_failure_record(context)
    record = json.loads((tmp_path / "failures" / f"{result.run_id}.json").read_text())
    assert record["run_id"] == result.run_id and record["message"]

"""Automation (changed shards only, through Dagster's own evaluation), fingerprints, the failure record."""

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
    DefaultSensorStatus,
    MultiPartitionsDefinition,
    asset,
    build_run_status_sensor_context,
    evaluate_automation_conditions,
    materialize,
)

from assets.operations import run_failure_record
from assets.partitions import shard_partitions
from rad3d.definitions import build_definitions
from rad3d_pipeline.ingest.ctrate import CtrateLayout
from rad3d_pipeline.ingest.drops import changed_shards, shard_fingerprints
from rad3d_pipeline.ingest.patients import shard_key
from rad3d_pipeline.synthetic.sample_data import write_sample_dataset

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


def test_fingerprints_per_kind(sample: Path) -> None:
    layout = CtrateLayout.resolve(sample)
    labels = shard_fingerprints(layout, ("train", "valid"), 16, ("labels",))
    reports = shard_fingerprints(layout, ("train", "valid"), 16, ("reports",))
    shard = _touch_one_patient(sample)
    assert changed_shards(labels, shard_fingerprints(layout, ("train", "valid"), 16, ("labels",))) == [shard]
    assert shard_fingerprints(layout, ("train", "valid"), 16, ("reports",)) == reports
    with pytest.raises(ValueError, match="unknown fingerprint kind"):
        shard_fingerprints(layout, ("valid",), 16, ("pixels",))


def requested(result: object) -> dict[str, set[str] | None]:
    """Asset -> requested partitions (None for an unpartitioned asset) of an automation evaluation."""
    out: dict[str, set[str] | None] = {}
    for item in result.results:  # type: ignore[attr-defined]
        if item.true_subset.size:
            key = item.key
            keys = set(result.get_requested_partitions(key))  # type: ignore[attr-defined]
            out[key.to_user_string()] = keys if keys != {None} else None
    return out


@pytest.mark.slow
def test_automation_rebuilds_exactly_the_changed_shard(
    sample: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through Dagster's own evaluation of the automation conditions, after a real build:
    an unchanged drop requests nothing; one changed label row requests that shard's partitions
    downstream and the assets that read every shard, nothing else."""
    from rad3d.build import execute_plan, observe_sources, plan_runs
    from rad3d.cli import main

    out = tmp_path / "out"
    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    assert main(["build", "--ctrate-root", str(sample), "--out", str(out), "--quiet"]) == 0
    instance = DagsterInstance.get()
    defs = build_definitions(ctrate_root=str(sample), out_dir=str(out))
    first = evaluate_automation_conditions(defs=defs, instance=instance)
    assert requested(first) == {}
    observe_sources(defs, instance)  # the same files again: not news
    second = evaluate_automation_conditions(defs=defs, instance=instance, cursor=first.cursor)
    assert requested(second) == {}

    shard = _touch_one_patient(sample)
    observe_sources(defs, instance)
    # The daemon's loop: evaluate, launch what is requested, evaluate again (a downstream asset of
    # another partitioning is requested once its upstream has updated), until nothing is requested.
    cursor, seen = second.cursor, {}
    for _ in range(12):
        result = evaluate_automation_conditions(defs=defs, instance=instance, cursor=cursor)
        cursor, wanted = result.cursor, requested(result)
        if not wanted:
            break
        for name, partitions in wanted.items():
            seen.setdefault(name, set()).update(partitions or {""})
        keys = {AssetKey(name) for name in wanted}

        def keep(key: AssetKey, partition: str, wanted: dict[str, set[str] | None] = wanted) -> bool:
            parts = wanted[key.to_user_string()]
            return not parts or partition in parts

        plan = plan_runs(defs, keys, keep, instance)
        assert execute_plan(defs, plan, instance, echo=lambda line: None).success
    else:
        pytest.fail(f"automation still requesting after 12 ticks: {wanted}")
    assert seen["ctrate_labels"] == {shard}
    graph = defs.resolve_asset_graph()
    for name, partitions in seen.items():
        pdef = graph.get(AssetKey(name)).partitions_def
        if pdef is shard_partitions:
            assert partitions == {shard}, name
        elif isinstance(pdef, MultiPartitionsDefinition) and "shard" in pdef.partition_dimension_names:
            shards = {pdef.get_partition_key_from_str(p).keys_by_dimension["shard"] for p in partitions}
            assert shards == {shard}, name
    assert not {"ctrate_reports", "report_sentences", "volumes", "qa_candidates"} & set(seen)  # reports unchanged
    assert {"patients", "closed_qa", "release_export", "leaderboard"} <= set(seen)


def test_automation_is_off_until_switched_on(tmp_path: Path) -> None:
    defs = build_definitions(ctrate_root=str(tmp_path / "ct"), out_dir=str(tmp_path / "out"))
    sensor = defs.get_sensor_def("rad3d_automation")
    assert sensor.default_status == DefaultSensorStatus.STOPPED
    graph = defs.resolve_asset_graph()
    for key in graph.materializable_asset_keys:
        assert graph.get(key).automation_condition is not None, key
    assert not list(defs.schedules or [])


def test_run_failure_writes_a_record(tmp_path: Path) -> None:
    from resources.settings import Rad3dSettings

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
        resources={"settings": Rad3dSettings(out_dir=str(tmp_path))},
    ).for_run_failure()
    run_failure_record(context)
    record = json.loads((tmp_path / "failures" / f"{result.run_id}.json").read_text())
    assert record["run_id"] == result.run_id and record["message"]


def test_build_partitions_option_keeps_a_shard_range(tmp_path: Path) -> None:
    """`rad3d build --partitions 00...03`: shard-partitioned work covers 00-03; other partitionings stay whole."""
    from rad3d.build import BuildError, configured_dynamic_partitions, partition_filter, plan_runs, resolve_selection

    defs = build_definitions(ctrate_root=str(tmp_path / "ct"), out_dir=str(tmp_path / "out"))
    selected = resolve_selection(defs, "key:report_sentences or key:qa_candidates or key:predictions")
    plan = {
        run.describe().split(" [")[0]: run
        for run in plan_runs(defs, selected, partition_filter(defs, selected, "00...03"))
    }
    assert plan["report_sentences"].partition_keys == ["00", "01", "02", "03"]
    assert {key.split("|")[0] for key in plan["qa_candidates"].partition_keys} == {"00", "01", "02", "03"}
    models = configured_dynamic_partitions(defs)
    assert len(plan["predictions"].partition_keys) == len(
        defs.get_assets_def("predictions").partitions_def.get_partition_keys(dynamic_partitions_store=models)
    )
    by_model = plan_runs(defs, selected, partition_filter(defs, selected, "prior"))
    [predictions] = [run for run in by_model if run.describe().startswith("predictions")]
    assert {key.split("|")[0] for key in predictions.partition_keys} == {"prior"}
    for bad in ("03...00", "zz"):
        with pytest.raises(BuildError, match="--partitions"):
            partition_filter(defs, selected, bad)


def test_scale_script_counts_runs_requests_and_files() -> None:
    """The pure counting of benchmarks/scale_partitions.py on a hand-made two-asset graph."""
    import importlib.util
    import sys

    path = Path(__file__).resolve().parents[1] / "benchmarks" / "scale_partitions.py"
    spec = importlib.util.spec_from_file_location("scale_partitions", path)
    assert spec is not None and spec.loader is not None
    scale = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = scale  # dataclasses look their module up
    spec.loader.exec_module(scale)
    graph = {
        "shards": 4,
        "assets": {
            "files": {"partitions": 0, "observable": True},
            "patients": {"partitions": 0, "observable": False},
            "sentences": {"partitions": 4, "observable": False},
            "candidates": {"partitions": 12, "observable": False},
        },
        "plan": [
            {"assets": ["patients"], "partitions": 0},
            {"assets": ["sentences"], "partitions": 4},
            {"assets": ["candidates"], "partitions": 12},
        ],
    }
    shape = scale.DataShape(
        patients=8,
        scans=10,
        volumes=20,
        valid_patients=2,
        measurement_sentences_per_report=0.5,
        open_release_files=8,
        models=3,
        profiles=2,
        judges=4,
        consistency_sample=600,
    )
    work = scale.count_workload(graph, shape)
    assert work["total_partitions"] == 16 and work["runs_single_run_policy"] == 3
    assert work["runs_one_per_partition"] == 1 + 4 + 12
    assert work["llm_requests"]["tasks_1_2_generation (one per distinct report)"] == 10
    assert work["llm_requests"]["task_3_generation (one per measurement sentence)"] == 5
    assert work["llm_requests"]["scoring (one per candidate)"] == 10 * 6 + 5
    assert work["llm_requests"]["judges (sample x judges)"] == 65 * 4
    assert work["files"]["parquet tables (one per partition)"] == 1 + 4 + 12
    assert work["files"]["npy volumes (volumes x profiles)"] == 40
    assert work["files"]["release CSVs"] == 4 * (41 + 8)
    assert work["patients_per_shard"] == 2

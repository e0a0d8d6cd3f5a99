"""Assets through dagster: materialize on the public fixture and on synthetic data."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest
from dagster import AssetKey, DagsterInstance, materialize

from rad3d.build import plan_runs, resolve_selection, root_cause
from rad3d.definitions import build_definitions
from resources.parquet_io import table_dir
from tests.dagster_runs import SHARD_RANGE

warnings.filterwarnings("ignore", module="dagster")


def _materialize(defs, selection, tags=None):  # type: ignore[no-untyped-def]
    """The ingest assets are shard-partitioned: their runs cover every shard, as rad3d build's do."""
    shard_tags = SHARD_RANGE if any(name.startswith("ctrate_") for name in selection) else {}
    return materialize(
        list(defs.assets),
        resources=dict(defs.resources),
        selection=selection,
        tags=tags or shard_tags,
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def test_closed_tasks_and_release_from_fixture(fixtures: Path, tmp_path: Path) -> None:
    defs = build_definitions(ctrate_root=str(fixtures / "ctrate_mini"), out_dir=str(tmp_path), splits="valid")
    first = _materialize(defs, ["ctrate_labels", "temporal_sequences"])
    assert first.success
    ranged = _materialize(
        defs,
        ["closed_qa"],
        {"dagster/asset_partition_range_start": "4", "dagster/asset_partition_range_end": "6"},
    )
    assert ranged.success
    checks = {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in ranged.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }
    assert checks == {"task4_18_rows_per_volume": True, "temporal_rule_holds": True}
    for task, rows in (("4", 900), ("5", 238), ("6", 238)):
        assert len(pd.read_parquet(table_dir(tmp_path, "closed_qa") / f"{task}.parquet")) == rows
    export = _materialize(defs, ["release_export"])
    assert export.success
    assert (tmp_path / "3DRAD" / "test" / "Task4_Existence_Detection" / "Atelectasis.csv").exists()
    assert len(pd.read_parquet(table_dir(tmp_path, "release_export") / "all.parquet")) == 900 + 238 + 238


def test_missing_labels_fail_only_their_assets(fixtures: Path, tmp_path: Path) -> None:
    """Reports without labels: the sentence asset builds, the label asset fails naming the file."""
    root = tmp_path / "ctrate"
    (root / "radiology_text_reports").mkdir(parents=True)
    src = fixtures / "ctrate_mini" / "radiology_text_reports" / "validation_reports.csv"
    (root / "radiology_text_reports" / "validation_reports.csv").write_bytes(src.read_bytes())
    defs = build_definitions(ctrate_root=str(root), out_dir=str(tmp_path / "out"), splits="valid")
    assert _materialize(defs, ["ctrate_reports"]).success
    failed = _materialize(defs, ["ctrate_labels"])
    assert not failed.success
    message = root_cause(next(e for e in failed.all_events if e.is_step_failure).step_failure_data.error)
    assert "valid_predicted_labels.csv: file not found" in message


def test_plan_groups_partition_ranges(fixtures: Path, tmp_path: Path) -> None:
    defs = build_definitions(ctrate_root=str(fixtures / "ctrate_mini"), out_dir=str(tmp_path))
    plan = plan_runs(defs, resolve_selection(defs, None))
    described = [run.describe() for run in plan]
    assert described[0].startswith("ctrate_labels, ctrate_metadata, ctrate_reports")
    assert "closed_qa [4..6]" in described
    assert "qa_candidates [00|1..15|3]" in described
    # Shard-partitioned assets share one run over the whole range (report_sentences, volumes).
    assert any(d.startswith("report_sentences") and d.endswith("[00..15]") for d in described)
    assert any(d.startswith("release_export") for d in described)
    assert described[-3:] == [
        "predictions [prior|1..random|6]",
        "clinical_metrics, metric_tables [prior|1..random|6]",
        "leaderboard",
    ]
    only5 = plan_runs(defs, {AssetKey("closed_qa")}, lambda key, p: p == "5")
    assert [r.describe() for r in only5] == ["closed_qa [5]"]
    # Two-dimensional ranges are rectangles: task 3 alone over every shard is one run.
    task3 = plan_runs(defs, {AssetKey("qa_candidates")}, lambda key, p: p.endswith("|3"))
    assert [r.describe() for r in task3] == ["qa_candidates [00|3..15|3]"]
    gaps = plan_runs(defs, {AssetKey("qa_candidates")}, lambda key, p: p.endswith(("|1", "|3")))
    assert [r.describe() for r in gaps] == ["qa_candidates [00|1..15|1]", "qa_candidates [00|3..15|3]"]


def test_unknown_selection_is_an_error(fixtures: Path, tmp_path: Path) -> None:
    from rad3d.build import BuildError

    defs = build_definitions(ctrate_root=str(fixtures / "ctrate_mini"), out_dir=str(tmp_path))
    with pytest.raises(BuildError, match="matches no asset"):
        resolve_selection(defs, "group:nothing_here")

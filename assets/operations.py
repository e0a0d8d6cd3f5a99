"""Operations: observable CT-RATE source files, the weekly rebuild, the new-drop sensor, the failure sensor."""

import json
import os
import time
from pathlib import Path

from dagster import (
    AssetKey,
    AssetSelection,
    DataVersion,
    DefaultScheduleStatus,
    DefaultSensorStatus,
    RunFailureSensorContext,
    RunRequest,
    ScheduleEvaluationContext,
    SensorEvaluationContext,
    SkipReason,
    observable_source_asset,
    run_failure_sensor,
    schedule,
    sensor,
)
from dagster._core.definitions.assets.graph.asset_graph_subset import AssetGraphSubset
from dagster._core.definitions.events import AssetKeyPartitionKey

from rad3d_pipeline.ctrate import CtrateInputError, CtrateLayout, parse_splits
from rad3d_pipeline.drops import changed_shards, file_digest, shard_fingerprints
from resources.ctrate_source import CtrateSource
from resources.settings import Rad3dSettings

GROUP = "ctrate_files"
REBUILD_CRON = os.environ.get("RAD3D_REBUILD_CRON", "0 3 * * 0")  # Sundays 03:00
# Schedules and sensors need a target; theirs is the ingest group, and what they request is an
# asset backfill over the whole graph (or the changed shards), ordered by Dagster's backfill daemon.
ENTRY_ASSETS = AssetSelection.groups("ctrate")


def _digest_of(ctrate: CtrateSource, settings: Rad3dSettings, kind: str) -> DataVersion:
    layout = ctrate.layout()
    paths = {
        "labels": [layout.labels_csv(s) for s in settings.split_tuple()],
        "reports": [layout.reports_csv(s) for s in settings.split_tuple()],
        "metadata": [layout.metadata_csv(s) for s in settings.split_tuple()],
    }[kind]
    return DataVersion("-".join(file_digest(p)[:16] or "absent" for p in paths))


@observable_source_asset(group_name=GROUP, description="CT-RATE's label CSVs; data version = their sha256.")
def ctrate_label_files(ctrate: CtrateSource, settings: Rad3dSettings) -> DataVersion:
    return _digest_of(ctrate, settings, "labels")


@observable_source_asset(group_name=GROUP, description="CT-RATE's report CSVs; data version = their sha256.")
def ctrate_report_files(ctrate: CtrateSource, settings: Rad3dSettings) -> DataVersion:
    return _digest_of(ctrate, settings, "reports")


@observable_source_asset(group_name=GROUP, description="CT-RATE's metadata CSVs; data version = their sha256.")
def ctrate_metadata_files(ctrate: CtrateSource, settings: Rad3dSettings) -> DataVersion:
    return _digest_of(ctrate, settings, "metadata")


SOURCE_ASSETS = [ctrate_label_files, ctrate_report_files, ctrate_metadata_files]


def whole_graph_subset(context: ScheduleEvaluationContext | SensorEvaluationContext) -> AssetGraphSubset:
    graph = context.repository_def.asset_graph
    return AssetGraphSubset.from_asset_keys(graph.materializable_asset_keys, graph)


@schedule(
    cron_schedule=REBUILD_CRON,
    name="weekly_benchmark_rebuild",
    target=ENTRY_ASSETS,
    default_status=DefaultScheduleStatus.STOPPED,
    description=f"Rebuilds the whole benchmark as one asset backfill (cron {REBUILD_CRON}; RAD3D_REBUILD_CRON).",
)
def weekly_benchmark_rebuild(context: ScheduleEvaluationContext) -> RunRequest:
    return RunRequest.for_asset_graph_subset(whole_graph_subset(context), tags={"rad3d/trigger": "schedule"})


def shard_subset(context: SensorEvaluationContext, shards: list[str]) -> AssetGraphSubset:
    """Every partition of every asset, but only the changed shards of shard-partitioned assets."""
    graph = context.repository_def.asset_graph
    wanted = set(shards)
    pairs: set[AssetKeyPartitionKey] = set()
    keys = set()
    for key in graph.materializable_asset_keys:
        pdef = graph.get(key).partitions_def
        if pdef is None:
            keys.add(key)
            continue
        for partition in pdef.get_partition_keys():
            parts = set(partition.split("|"))
            dimension_names = {getattr(d, "name", "") for d in getattr(pdef, "partitions_defs", [])}
            has_shard = "shard" in dimension_names or key in SHARD_ASSETS
            if not has_shard or parts & wanted:
                pairs.add(AssetKeyPartitionKey(key, partition))
    subset = AssetGraphSubset.from_asset_partition_set(pairs, graph)
    return subset | AssetGraphSubset.from_asset_keys(keys, graph)


SHARD_ASSETS = {AssetKey("report_sentences"), AssetKey("volumes")}


@sensor(
    name="ctrate_drop_sensor",
    minimum_interval_seconds=300,
    target=ENTRY_ASSETS,
    default_status=DefaultSensorStatus.STOPPED,
    description="Notices a new or changed CT-RATE drop (label and report rows, volume tree) and requests a "
    "backfill of only the shards that changed.",
)
def ctrate_drop_sensor(context: SensorEvaluationContext, ctrate: CtrateSource, settings: Rad3dSettings):
    try:
        layout = CtrateLayout.resolve(ctrate.root)
    except CtrateInputError as exc:
        return SkipReason(str(exc))
    current = shard_fingerprints(layout, parse_splits(settings.splits), settings.n_shards)
    previous = json.loads(context.cursor) if context.cursor else {}
    changed = changed_shards(previous, current)
    context.update_cursor(json.dumps(current))
    if not changed:
        return SkipReason("no shard changed")
    tags = {"rad3d/trigger": "ctrate_drop", "rad3d/shards": ",".join(changed)[:200]}
    return RunRequest.for_asset_graph_subset(shard_subset(context, changed), tags=tags)


@run_failure_sensor(
    name="run_failure_record",
    default_status=DefaultSensorStatus.RUNNING,
    # Every failed run of the instance, also one that never started because its code location was
    # not found (a CLI launch naming another location) or its config was bad.
    monitor_all_code_locations=True,
)
def run_failure_record(context: RunFailureSensorContext) -> None:
    """Writes one JSON record per failed run of the instance (any code location) under <out>/failures/ (RAD3D_OUT)."""
    folder = Path(os.environ.get("RAD3D_OUT", "data")) / "failures"
    folder.mkdir(parents=True, exist_ok=True)
    run = context.dagster_run
    record = {
        "run_id": run.run_id,
        "job": run.job_name,
        "tags": dict(run.tags),
        "failed_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "message": context.failure_event.message,
    }
    (folder / f"{run.run_id}.json").write_text(json.dumps(record, indent=2))

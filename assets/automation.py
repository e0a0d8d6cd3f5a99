"""Declarative automation: CT-RATE sources observed per shard, conditions on every asset, one switch.

- The three CT-RATE sources are observable per patient shard: each shard's data version hashes
  the rows of its patients (labels, reports; metadata plus the volume tree), so an unchanged drop
  is not news and a changed shard is news only for itself. ``rad3d build`` observes them first;
  the daemon observes them on ``RAD3D_OBSERVE_CRON`` (hourly) once automation is on.
- The cron strings come from the composition root (``rad3d/definitions.py``, which reads them from
  the settings table): it builds the source assets, the conditions and the sensor with the
  functions below, so nothing here reads a setting at import.
- Every asset carries ``eager() | on_cron(RAD3D_REBUILD_CRON)``: a new or changed shard rebuilds
  that shard's partitions downstream, and the weekly tick rebuilds everything down to the release
  and the leaderboard (the ingest assets ignore the sources for the cron part, so the tick starts
  them; the rest follows once their inputs have updated since the tick).
- Nothing runs until the ``rad3d_automation`` sensor is switched on (UI: Automation; or
  ``dagster sensor start rad3d_automation``): it is stopped by default.
"""

from __future__ import annotations

from collections.abc import Sequence

from dagster import (
    AssetKey,
    AssetsDefinition,
    AssetSelection,
    AssetSpec,
    AutomationCondition,
    AutomationConditionSensorDefinition,
    DataVersion,
    DataVersionsByPartition,
    DefaultSensorStatus,
    SourceAsset,
    map_asset_specs,
    observable_source_asset,
)

from assets.partitions import shard_partitions
from rad3d_pipeline.ingest.ctrate import CtrateInputError, CtrateLayout
from rad3d_pipeline.ingest.drops import shard_fingerprints
from resources.ctrate_source import CtrateSource
from resources.settings import Rad3dSettings

GROUP = "ctrate_files"


def _observe(ctrate: CtrateSource, settings: Rad3dSettings, kinds: tuple[str, ...]) -> DataVersionsByPartition:
    try:
        layout = CtrateLayout.resolve(ctrate.root)
    except CtrateInputError:
        # No CT-RATE root (yet): every shard reads as empty, and the build's own checks say why.
        return DataVersionsByPartition({key: DataVersion("absent") for key in shard_partitions.get_partition_keys()})
    fingerprints = shard_fingerprints(layout, settings.split_tuple(), settings.n_shards, kinds)
    return DataVersionsByPartition({key: DataVersion(value[:24]) for key, value in fingerprints.items()})


def observe_condition(observe_cron: str) -> AutomationCondition:
    """Observe on each tick of ``observe_cron`` (RAD3D_OBSERVE_CRON), unless an observation is in progress."""
    return AutomationCondition.cron_tick_passed(observe_cron) & ~AutomationCondition.in_progress()


SOURCE_NAMES = ("ctrate_label_files", "ctrate_report_files", "ctrate_metadata_files")
SOURCE_KEYS = [AssetKey(name) for name in SOURCE_NAMES]


def source_assets(observe_cron: str) -> list[SourceAsset]:
    """CT-RATE's files as observable sources per patient shard, observed on ``observe_cron``."""
    observe = observe_condition(observe_cron)

    @observable_source_asset(
        name="ctrate_label_files",
        group_name=GROUP,
        partitions_def=shard_partitions,
        automation_condition=observe,
        description="CT-RATE's label CSVs, per patient shard; data version = a hash of the shard's label rows.",
    )
    def ctrate_label_files(ctrate: CtrateSource, settings: Rad3dSettings) -> DataVersionsByPartition:
        return _observe(ctrate, settings, ("labels",))

    @observable_source_asset(
        name="ctrate_report_files",
        group_name=GROUP,
        partitions_def=shard_partitions,
        automation_condition=observe,
        description="CT-RATE's report CSVs, per patient shard; data version = a hash of the shard's report rows.",
    )
    def ctrate_report_files(ctrate: CtrateSource, settings: Rad3dSettings) -> DataVersionsByPartition:
        return _observe(ctrate, settings, ("reports",))

    @observable_source_asset(
        name="ctrate_metadata_files",
        group_name=GROUP,
        partitions_def=shard_partitions,
        automation_condition=observe,
        description="CT-RATE's metadata CSVs and volume tree, per patient shard; data version = a hash of the "
        "shard's metadata rows and the names, sizes and times of its volumes.",
    )
    def ctrate_metadata_files(ctrate: CtrateSource, settings: Rad3dSettings) -> DataVersionsByPartition:
        return _observe(ctrate, settings, ("metadata", "volumes"))

    return [ctrate_label_files, ctrate_report_files, ctrate_metadata_files]


def condition_for(spec: AssetSpec, rebuild_cron: str) -> AutomationCondition:
    """eager, or the weekly tick (RAD3D_REBUILD_CRON); assets fed straight from the sources ignore them for the tick."""
    on_cron = AutomationCondition.on_cron(rebuild_cron)
    if any(dep.asset_key in SOURCE_KEYS for dep in spec.deps):
        on_cron = on_cron.ignore(AssetSelection.assets(*SOURCE_KEYS))
    return AutomationCondition.eager() | on_cron


def with_automation(assets: Sequence[AssetsDefinition], rebuild_cron: str) -> list[AssetsDefinition]:
    def replace(spec: AssetSpec) -> AssetSpec:
        if spec.automation_condition is not None:
            return spec
        return spec.replace_attributes(automation_condition=condition_for(spec, rebuild_cron))

    return list(map_asset_specs(replace, assets))


def automation_sensor(rebuild_cron: str) -> AutomationConditionSensorDefinition:
    """The one switch of declarative automation (stopped by default)."""
    return AutomationConditionSensorDefinition(
        "rad3d_automation",
        target=AssetSelection.all(),
        default_status=DefaultSensorStatus.STOPPED,
        minimum_interval_seconds=60,
        description="Evaluates every asset's automation condition: changed CT-RATE shards rebuild their "
        f"partitions downstream; the weekly tick ({rebuild_cron}, RAD3D_REBUILD_CRON) rebuilds the benchmark. "
        "Off until switched on.",
    )

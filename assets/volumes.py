"""Volumes: CT-RATE NIfTI to model-ready .npy per preprocessing profile, partitioned by patient shard.

One run covers a whole shard range (``single_run`` backfill policy). Outputs are
``<out>/volumes/<profile>/<VolumeName without .nii.gz>.npy``; the manifest is the asset's
table (``<out>/tables/volumes/<shard>.parquet``); bad volumes go to
``<out>/volumes/quarantine/<shard>.csv`` and the merged ``<out>/volumes/quarantine.csv``,
and the ``no_quarantined_volumes`` check fails (severity ERROR) while the build goes on.

A missing file, a dangling link, an unreadable entry and a VolumeName found in two places are
quarantined like a corrupt file. The shards' ``.npy`` files are exactly their manifest: others of
their volumes are moved aside to ``<out>/volumes/.stale/<timestamp>/`` (metadata ``stale_moved_aside``),
and a killed worker's temporary files are removed at the start of the next run of the shard.
"""

from collections.abc import Iterator
from pathlib import Path

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    MetadataValue,
    Output,
    asset,
)

from assets.partitions import GPU_OP_TAGS, GPU_POOL, shard_partitions, single_run
from rad3d_pipeline.volumes.shards import build_shards, previous_manifest, run_metadata
from resources.ctrate_source import CtrateSource
from resources.parquet_io import IGNORES_KEY, table_dir
from resources.settings import Rad3dSettings
from resources.volumes import VolumeSettings

GROUP = "volumes"
# The manifest's run bookkeeping, not its content: a rerun that skips or rewrites identical .npy files (same sha256)
# keeps the data version, so nothing downstream turns stale.
RUN_BOOKKEEPING = (
    "status",
    "seconds",
    "read_seconds",
    "peak_mb",
    "peak_ratio",
    "device",
    "source_mtime_ns",
    "inputs_key",
)


@asset(
    group_name=GROUP,
    code_version="1",
    partitions_def=shard_partitions,
    backfill_policy=single_run,
    pool=GPU_POOL,
    op_tags=GPU_OP_TAGS,
    deps=[AssetKey("ctrate_metadata")],
    check_specs=[
        AssetCheckSpec(
            "no_quarantined_volumes",
            asset="volumes",
            description="Fails (ERROR) when any volume of the shards was quarantined; see quarantine.csv.",
        )
    ],
    metadata={IGNORES_KEY: list(RUN_BOOKKEEPING)},
    description="Model-ready .npy per volume and preprocessing profile (RAD3D_VOLUME_PROFILES) under "
    "`<out>/volumes/<profile>/`, with a manifest (shape, spacing, sha256, seconds, peak memory); bad volumes "
    "quarantined with the reason; unchanged inputs skipped.",
)
def volumes(
    context: AssetExecutionContext,
    ctrate: CtrateSource,
    settings: Rad3dSettings,
    volume_settings: VolumeSettings,
) -> Iterator[Output[dict[str, pd.DataFrame]] | AssetCheckResult]:
    shards = list(context.partition_keys)
    profiles = volume_settings.profile_list()
    splits = tuple(s for s in settings.split_tuple() if s in volume_settings.split_tuple())
    if not splits:
        context.log.warning(
            f"volumes: nothing to build: the build's splits ({settings.splits}) and RAD3D_VOLUME_SPLITS "
            f"({volume_settings.splits}) do not overlap; set RAD3D_VOLUME_SPLITS=all for training volumes"
        )
    device = volume_settings.resolved_device()
    run = build_shards(
        ctrate.layout(),
        settings.out,
        shards,
        settings.n_shards,
        splits,
        profiles,
        volume_settings.version_setting(),
        device,
        volume_settings.workers,
        previous_manifest(table_dir(settings.out, "volumes"), shards),
        warn=context.log.warning,
    )
    meta = run_metadata(run, settings.out, profiles, splits, device, volume_settings.workers)
    yield Output(run.manifests, metadata={k: _rendered(v) for k, v in meta.items()})
    checked = {k: _rendered(v, markdown=k in ("reasons", "first")) for k, v in run.check_figures().items()}
    severity = AssetCheckSeverity.ERROR
    yield AssetCheckResult(
        check_name="no_quarantined_volumes", passed=run.quarantine.empty, severity=severity, metadata=checked
    )


def _rendered(value: object, markdown: bool = False) -> object:
    """Paths as path metadata (the UI links them), Markdown as Markdown, the rest as is."""
    if isinstance(value, Path):
        return MetadataValue.path(str(value))
    return MetadataValue.md(str(value)) if markdown else value

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

import time
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

from assets.metadata import table_metadata
from assets.partitions import GPU_OP_TAGS, GPU_POOL, shard_partitions, single_run
from rad3d_pipeline.ctrate import CtrateInputError, read_metadata
from rad3d_pipeline.progress import Progress
from rad3d_pipeline.volumes.outputs import move_aside_stale, remove_temp_files
from rad3d_pipeline.volumes.runner import (
    QUARANTINE_COLUMNS,
    RunOptions,
    VolumeResult,
    discover_volumes,
    manifest_frame,
    metadata_lookup,
    output_path,
    plan_jobs,
    quarantine_frame,
    run_jobs,
)
from resources.ctrate_source import CtrateSource
from resources.parquet_io import table_dir
from resources.settings import Rad3dSettings
from resources.volumes import VolumeSettings

GROUP = "volumes"


def quarantine_dir(out: Path) -> Path:
    return out / "volumes" / "quarantine"


def merge_quarantine(out: Path) -> Path:
    """Rewrite ``<out>/volumes/quarantine.csv`` from the per-shard files."""
    files = sorted(quarantine_dir(out).glob("*.csv"))
    frames = [pd.read_csv(f, dtype=str, keep_default_na=False) for f in files]
    merged = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=list(QUARANTINE_COLUMNS))
    path = out / "volumes" / "quarantine.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    merged.to_csv(path, index=False)
    return path


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
    description="Model-ready .npy per volume and preprocessing profile (RAD3D_VOLUME_PROFILES) under "
    "<out>/volumes/<profile>/, with a manifest (shape, spacing, sha256, seconds, peak memory); bad volumes "
    "quarantined with the reason; unchanged inputs skipped.",
)
def volumes(
    context: AssetExecutionContext,
    ctrate: CtrateSource,
    settings: Rad3dSettings,
    volume_settings: VolumeSettings,
) -> Iterator[Output[dict[str, pd.DataFrame]] | AssetCheckResult]:
    started = time.time()
    shards = list(context.partition_keys)
    # A killed worker's half-written .npy of these shards: gone before anything is planned (never counted).
    leftovers = remove_temp_files(settings.out, shards, settings.n_shards, older_than=started)
    if leftovers:
        context.log.info(f"volumes: removed {len(leftovers)} leftover temporary file(s) of an interrupted run")
    profiles = volume_settings.profile_list()
    device = volume_settings.resolved_device()
    wanted_splits = volume_settings.split_tuple()
    splits = tuple(s for s in settings.split_tuple() if s in wanted_splits)
    if not splits:
        context.log.warning(
            f"volumes: nothing to build: the build's splits ({settings.splits}) and RAD3D_VOLUME_SPLITS "
            f"({volume_settings.splits}) do not overlap; set RAD3D_VOLUME_SPLITS=all for training volumes"
        )
    layout = ctrate.layout()
    tables = []
    for split in splits:
        try:
            tables.append(read_metadata(layout, split).table)
        except CtrateInputError as exc:  # its volumes are quarantined as "missing metadata row"
            context.log.warning(f"volumes: {exc}")
    lookup = metadata_lookup(pd.concat(tables, ignore_index=True) if tables else pd.DataFrame())
    found, bad_names = discover_volumes(layout, splits, set(shards), settings.n_shards)
    previous_files = [table_dir(settings.out, "volumes") / f"{shard}.parquet" for shard in shards]
    previous = [pd.read_parquet(p) for p in previous_files if p.exists()]
    jobs, kept = plan_jobs(
        found,
        lookup,
        profiles,
        pd.concat(previous, ignore_index=True) if previous else pd.DataFrame(),
        volume_settings.version_setting(),
    )
    context.log.info(
        f"volumes: {len(found)} volume(s) in {len(shards)} shard(s) of {', '.join(splits) or 'no split'}; "
        f"{len(jobs)} to (re)build, {len(kept)} output(s) unchanged; profiles "
        f"{', '.join(p.name for p in profiles)}; device {device}; {volume_settings.workers} worker(s)"
    )

    counter: list[Progress] = []

    def progress(i: int, total: int, result: VolumeResult) -> None:
        if not counter:
            counter.append(Progress(f"volumes [{shards[0]}..{shards[-1]}]", total, unit="volumes"))
        counter[0].advance()
        for row in result.quarantine:
            context.log.warning(f"quarantined {row['VolumeName']}: {row['reason']}")

    options = RunOptions(str(settings.out), volume_settings.version_setting(), device)
    rows = list(kept)
    quarantined = list(bad_names)
    for result in run_jobs(jobs, profiles, options, volume_settings.workers, progress):
        rows.extend(result.rows)
        quarantined.extend(result.quarantine)
    # The shards' outputs are exactly the manifest: a now-broken (volume, profile), a profile no longer
    # set, a volume gone from the tree or a split no longer built must not be read downstream.
    current = [output_path(settings.out, str(r["profile"]), str(r["VolumeName"])) for r in rows]
    stale = move_aside_stale(settings.out, shards, settings.n_shards, current)
    if stale:
        where = stale[0][1].parent.parent
        context.log.warning(f"volumes: moved {len(stale)} output(s) that no longer belong to these shards to {where}")

    manifest = manifest_frame(rows)
    quarantine = quarantine_frame(quarantined)
    qdir = quarantine_dir(settings.out)
    qdir.mkdir(parents=True, exist_ok=True)
    for shard in shards:
        quarantine[quarantine["shard"] == shard].to_csv(qdir / f"{shard}.csv", index=False)
    merged = merge_quarantine(settings.out)

    written = manifest[manifest["status"] == "written"]
    per_volume = written.groupby("VolumeName")[["seconds"]].sum()
    reads = written.groupby("VolumeName")["read_seconds"].first()
    seconds = (per_volume["seconds"] + reads).mean() if len(written) else 0.0
    meta = {
        **table_metadata(manifest.drop(columns=["sha256", "source_path"])),
        "volumes": MetadataValue.int(int(manifest["VolumeName"].nunique())),
        "outputs_written": MetadataValue.int(len(written)),
        "outputs_skipped": MetadataValue.int(int((manifest["status"] == "skipped").sum())),
        "quarantined": MetadataValue.int(len(quarantine)),
        "quarantine_file": MetadataValue.path(str(merged)),
        "seconds_per_volume": MetadataValue.float(round(float(seconds), 3)),
        "peak_mb_max": MetadataValue.float(float(written["peak_mb"].max()) if len(written) else 0.0),
        "peak_ratio_max": MetadataValue.float(float(written["peak_ratio"].max()) if len(written) else 0.0),
        "profiles": ", ".join(f"{p.name} ({p.describe()})" for p in profiles),
        "splits": ", ".join(splits),
        "device": device,
        "workers": volume_settings.workers,
        "rescale_applied": ", ".join(f"{k}={v}" for k, v in manifest["rescale_applied"].value_counts().items()),
        "output_dir": MetadataValue.path(str(settings.out / "volumes")),
        "stale_moved_aside": MetadataValue.int(len(stale)),
    }
    if stale:
        meta["stale_dir"] = MetadataValue.path(str(stale[0][1].parent.parent))
    by_shard = {shard: manifest[manifest["shard"] == shard].reset_index(drop=True) for shard in shards}
    yield Output(by_shard, metadata=meta)
    reasons = quarantine["reason"].str.split(" \\(", regex=True).str[0].value_counts().head(10)
    yield AssetCheckResult(
        check_name="no_quarantined_volumes",
        passed=quarantine.empty,
        severity=AssetCheckSeverity.ERROR,
        metadata={
            "quarantined": len(quarantine),
            "quarantine_file": MetadataValue.path(str(merged)),
            "reasons": MetadataValue.md(
                "\n".join(f"- {reason}: {n}" for reason, n in reasons.items()) if len(reasons) else "(none)"
            ),
            "first": MetadataValue.md(
                quarantine.head(10)[["VolumeName", "reason"]].to_markdown(index=False) if len(quarantine) else "(none)"
            ),
        },
    )

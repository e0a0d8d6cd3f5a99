"""CT-RATE ingestion: validated label, report and metadata tables per patient shard, and the patients table.

The three tables are partitioned by patient shard like their observable sources (one run reads a
file once and writes every shard of the range), so a changed shard is stale alone and rebuilds
only its partitions downstream; assets that need every shard read all partitions.

Each asset reads only its own file: Tasks 4-6 need the labels alone, the sentences the
reports alone, so a missing or unreadable file fails only the assets that read it (with one
line naming the file, line and reason), and a damaged record is quarantined, not fatal.
``ctrate_labels`` also compares which volumes the label and report files list (a scan of their
record starts, never a dependency on ``ctrate_reports``) and writes the counts to
``<out>/quarantine/crosscheck.json``; its ``labels_match_reports`` check warns on any gap.
"""

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import (
    AssetCheckResult,
    AssetCheckSeverity,
    AssetCheckSpec,
    AssetExecutionContext,
    MetadataValue,
    Output,
    asset,
)

from assets.metadata import table_metadata, write_quarantine
from assets.partitions import shard_partitions, single_run
from rad3d_pipeline.ingest.ctrate import LoadResult
from rad3d_pipeline.ingest.patients import build_patients, shard_column
from resources.ctrate_source import CtrateSource
from resources.settings import Rad3dSettings

GROUP = "ctrate"


def by_shard(table: pd.DataFrame, shards: list[str], n_shards: int) -> dict[str, pd.DataFrame]:
    """The rows of each of ``shards`` (all of a patient's rows in its shard), in file order."""
    if table.empty:
        return {shard: table.copy() for shard in shards}
    column = shard_column(table["patient_id"], n_shards)
    return {shard: table.loc[column == shard].reset_index(drop=True) for shard in shards}


def _load(
    context: AssetExecutionContext,
    name: str,
    loaded: LoadResult,
    settings: Rad3dSettings,
) -> Iterator[Output[dict[str, pd.DataFrame]] | AssetCheckResult]:
    result_table, quarantine = loaded.table, loaded.quarantine
    parts = by_shard(result_table, list(context.partition_keys), settings.n_shards)
    # The run's figures (the whole file); each shard's own row count comes from the IO manager.
    meta = {
        "rows_in_file": MetadataValue.int(len(result_table)),
        "rows_in_these_shards": MetadataValue.int(sum(len(p) for p in parts.values())),
        **write_quarantine(quarantine, settings.quarantine_path(name)),
    }
    meta["splits"] = ", ".join(settings.split_tuple())
    meta["identical_duplicates_collapsed_in_file"] = MetadataValue.int(
        loaded.counts.get("identical_duplicates_collapsed", 0)
    )
    if len(quarantine):
        kinds = quarantine["reason"].str.replace(r"\s*(?:[:(]| of line | before line ).*$", "", regex=True)
        reasons = kinds.value_counts()
        meta["quarantine_reasons"] = MetadataValue.md(reasons.head(10).rename("rows").to_frame().to_markdown())
    for row in quarantine.head(20).itertuples(index=False):
        span = f"-{row.line + row.lines - 1:,}" if row.lines > 1 else ""
        context.log.warning(f"quarantined {row.source} line {row.line:,}{span} ({row.VolumeName}): {row.reason}")
    yield Output(parts, metadata=meta)
    yield AssetCheckResult(
        check_name="no_quarantined_rows",
        passed=quarantine.empty,
        severity=AssetCheckSeverity.WARN,
        metadata={"quarantined": len(quarantine), "quarantine_file": str(settings.quarantine_path(name).resolve())},
    )


def crosscheck_path(settings: Rad3dSettings) -> Path:
    return settings.out / "quarantine" / "crosscheck.json"


def _crosscheck_result(
    context: AssetExecutionContext, counts: dict[str, dict[str, Any]], path: Path
) -> AssetCheckResult:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(counts, indent=2) + "\n")
    tmp.replace(path)
    meta: dict[str, Any] = {"crosscheck_file": MetadataValue.path(str(path.resolve()))}
    gaps = []
    for split, entry in counts.items():
        if entry.get("skipped"):
            gaps.append(f"{split}: cross-check skipped ({entry['skipped']})")
            continue
        for key in ("reports_without_labels", "labels_without_reports"):
            meta[f"{split}_{key}"] = MetadataValue.int(int(entry[key]))
            if entry[key]:
                examples = ", ".join(entry[f"{key}_examples"])
                gaps.append(f"{split}: {entry[key]:,} {key.replace('_', ' ')} (e.g. {examples})")
    for gap in gaps:
        context.log.warning(f"ctrate_labels cross-check: {gap}")
    return AssetCheckResult(
        check_name="labels_match_reports",
        passed=not gaps,
        severity=AssetCheckSeverity.WARN,
        metadata={**meta, "gaps": MetadataValue.md("\n".join(f"- {g}" for g in gaps) or "(none)")},
    )


@asset(
    group_name=GROUP,
    code_version="3",
    partitions_def=shard_partitions,
    backfill_policy=single_run,
    check_specs=[
        AssetCheckSpec(
            "no_quarantined_rows",
            asset="ctrate_labels",
            description="Warns when label rows were quarantined (file, physical line, reason and raw text in "
            "`<out>/quarantine/ctrate_labels.csv`).",
        ),
        AssetCheckSpec(
            "labels_match_reports",
            asset="ctrate_labels",
            description="Warns when a split has volumes with a report but no label row, or the reverse "
            "(counts and examples in `<out>/quarantine/crosscheck.json`).",
        ),
    ],
    deps=["ctrate_label_files"],
    description="CT-RATE's 18 abnormality labels per volume, validated (bad rows quarantined with the reason).",
)
def ctrate_labels(
    context: AssetExecutionContext, ctrate: CtrateSource, settings: Rad3dSettings
) -> Iterator[Output[dict[str, pd.DataFrame]] | AssetCheckResult]:
    loaded = ctrate.labels(settings.split_tuple())
    yield from _load(context, "ctrate_labels", loaded, settings)
    yield _crosscheck_result(context, ctrate.crosscheck(settings.split_tuple()), crosscheck_path(settings))


@asset(
    group_name=GROUP,
    code_version="3",
    partitions_def=shard_partitions,
    backfill_policy=single_run,
    check_specs=[
        AssetCheckSpec(
            "no_quarantined_rows",
            asset="ctrate_reports",
            description="Warns when report records were quarantined (file, physical lines, reason and raw text "
            "in `<out>/quarantine/ctrate_reports.csv`).",
        )
    ],
    deps=["ctrate_report_files"],
    description="CT-RATE's English radiology reports (findings, impressions), validated.",
)
def ctrate_reports(
    context: AssetExecutionContext, ctrate: CtrateSource, settings: Rad3dSettings
) -> Iterator[Output[dict[str, pd.DataFrame]] | AssetCheckResult]:
    loaded = ctrate.reports(settings.split_tuple())
    yield from _load(context, "ctrate_reports", loaded, settings)


@asset(
    group_name=GROUP,
    code_version="1",
    check_specs=[
        AssetCheckSpec(
            "one_split_per_patient",
            asset="patients",
            blocking=True,
            description="Blocking: every patient and every volume in exactly one split (a leak between the "
            "benchmark and the training set stops the release).",
        )
    ],
    description="One row per patient: split, scans in time order, volumes per scan, shard.",
)
def patients(ctrate_labels: pd.DataFrame, settings: Rad3dSettings) -> Iterator[Output[pd.DataFrame] | AssetCheckResult]:
    table = build_patients(ctrate_labels, settings.n_shards)
    yield Output(table, metadata={**table_metadata(table), "shards": settings.n_shards})
    splits_per_patient = ctrate_labels.groupby("patient_id")["split"].nunique()
    volumes_per_split = ctrate_labels.groupby("VolumeName")["split"].nunique()
    bad = sorted(splits_per_patient[splits_per_patient > 1].index) + sorted(
        volumes_per_split[volumes_per_split > 1].index
    )
    yield AssetCheckResult(
        check_name="one_split_per_patient", passed=not bad, metadata={"violations": len(bad), "first": str(bad[:5])}
    )


@asset(
    group_name=GROUP,
    code_version="3",
    partitions_def=shard_partitions,
    backfill_policy=single_run,
    check_specs=[
        AssetCheckSpec(
            "no_quarantined_rows",
            asset="ctrate_metadata",
            description="Warns when metadata rows were quarantined (`<out>/quarantine/ctrate_metadata.csv`).",
        )
    ],
    deps=["ctrate_metadata_files"],
    description="CT-RATE scan metadata: in-plane and slice spacing (mm), DICOM rescale slope and intercept.",
)
def ctrate_metadata(
    context: AssetExecutionContext, ctrate: CtrateSource, settings: Rad3dSettings
) -> Iterator[Output[dict[str, pd.DataFrame]] | AssetCheckResult]:
    loaded = ctrate.metadata(settings.split_tuple())
    yield from _load(context, "ctrate_metadata", loaded, settings)

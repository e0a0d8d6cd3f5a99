"""CT-RATE ingestion: validated label and report tables, and the patients table.

Each asset reads only its own file: Tasks 4-6 need the labels alone, the sentences the
reports alone, so a missing file fails only the assets that read it.
"""

from collections.abc import Iterator

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSeverity, AssetCheckSpec, AssetExecutionContext, Output, asset

from assets.metadata import table_metadata, write_quarantine
from rad3d_pipeline.patients import build_patients
from resources.ctrate_source import CtrateSource
from resources.settings import Rad3dSettings

GROUP = "ctrate"


def _load(
    context: AssetExecutionContext,
    name: str,
    result_table: pd.DataFrame,
    quarantine: pd.DataFrame,
    settings: Rad3dSettings,
) -> Iterator[Output[pd.DataFrame] | AssetCheckResult]:
    meta = {**table_metadata(result_table), **write_quarantine(quarantine, settings.quarantine_path(name))}
    meta["splits"] = ", ".join(settings.split_tuple())
    for row in quarantine.head(20).itertuples(index=False):
        context.log.warning(f"quarantined {row.source} line {row.row} ({row.VolumeName}): {row.reason}")
    yield Output(result_table, metadata=meta)
    yield AssetCheckResult(
        check_name="no_quarantined_rows",
        passed=quarantine.empty,
        severity=AssetCheckSeverity.WARN,
        metadata={"quarantined": len(quarantine), "quarantine_file": str(settings.quarantine_path(name))},
    )


@asset(
    group_name=GROUP,
    code_version="1",
    check_specs=[AssetCheckSpec("no_quarantined_rows", asset="ctrate_labels")],
    deps=["ctrate_label_files"],
    description="CT-RATE's 18 abnormality labels per volume, validated (bad rows quarantined with the reason).",
)
def ctrate_labels(
    context: AssetExecutionContext, ctrate: CtrateSource, settings: Rad3dSettings
) -> Iterator[Output[pd.DataFrame] | AssetCheckResult]:
    loaded = ctrate.labels(settings.split_tuple())
    yield from _load(context, "ctrate_labels", loaded.table, loaded.quarantine, settings)


@asset(
    group_name=GROUP,
    code_version="1",
    check_specs=[AssetCheckSpec("no_quarantined_rows", asset="ctrate_reports")],
    deps=["ctrate_report_files"],
    description="CT-RATE's English radiology reports (findings, impressions), validated.",
)
def ctrate_reports(
    context: AssetExecutionContext, ctrate: CtrateSource, settings: Rad3dSettings
) -> Iterator[Output[pd.DataFrame] | AssetCheckResult]:
    loaded = ctrate.reports(settings.split_tuple())
    yield from _load(context, "ctrate_reports", loaded.table, loaded.quarantine, settings)


@asset(
    group_name=GROUP,
    code_version="1",
    check_specs=[AssetCheckSpec("one_split_per_patient", asset="patients")],
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
    code_version="1",
    check_specs=[AssetCheckSpec("no_quarantined_rows", asset="ctrate_metadata")],
    deps=["ctrate_metadata_files"],
    description="CT-RATE scan metadata: in-plane and slice spacing (mm), DICOM rescale slope and intercept.",
)
def ctrate_metadata(
    context: AssetExecutionContext, ctrate: CtrateSource, settings: Rad3dSettings
) -> Iterator[Output[pd.DataFrame] | AssetCheckResult]:
    loaded = ctrate.metadata(settings.split_tuple())
    yield from _load(context, "ctrate_metadata", loaded.table, loaded.quarantine, settings)

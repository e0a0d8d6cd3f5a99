"""The release export: 3D-RAD's CSV layout under ``<out>/3DRAD`` plus the same rows as Parquet.

What it writes, keeps and moves aside is docs/release-layout.md.
"""

from collections.abc import Iterator

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSpec, AssetExecutionContext, AssetIn, MetadataValue, Output, asset

from assets.metadata import table_metadata
from rad3d_pipeline.release.export import export_release, verify_release
from resources.settings import Rad3dSettings

GROUP = "release"


@asset(
    group_name=GROUP,
    code_version="2",
    ins={
        "closed_qa": AssetIn(metadata={"allow_missing_partitions": True}),
        "curated_qa": AssetIn(metadata={"allow_missing_partitions": True}),
    },
    check_specs=[
        AssetCheckSpec(
            "release_schema_holds",
            asset="release_export",
            blocking=True,
            description="Blocking: the release read back from disk has the release columns, file set and row "
            "counts, and no file the export did not write.",
        )
    ],
    description="Writes the 3D-RAD release layout atomically (test from CT-RATE valid, train, train fractions) "
    "from every QA table of the build's splits; files no longer built are moved to `<out>/3DRAD.stale/`.",
)
def release_export(
    context: AssetExecutionContext,
    closed_qa: pd.DataFrame,
    curated_qa: pd.DataFrame,
    settings: Rad3dSettings,
) -> Iterator[Output[pd.DataFrame] | AssetCheckResult]:
    splits = tuple(settings.split_tuple())
    export = export_release(
        [curated_qa, closed_qa],
        settings.out,
        splits,
        rename_valid_to_test=settings.rename_valid_to_test,
        train_fractions=tuple(settings.train_fractions),
        seed=settings.seed,
    )
    summary = export.summary
    if summary.stale:
        context.log.warning(
            f"release_export: {len(summary.stale)} file(s) no longer built moved to {summary.stale_folder}"
        )
    stale_folder = str(summary.stale_folder.resolve()) if summary.stale_folder else ""
    yield Output(
        export.rows,
        metadata={
            **table_metadata(export.rows),
            "release_root": MetadataValue.path(str(summary.root.resolve())),
            "files": len(summary.files),
            "splits": ", ".join(splits),
            "stale_files_moved": len(summary.stale),
            "stale_folder": MetadataValue.path(stale_folder),
            **export.figures(),
        },
    )
    problems = verify_release(summary)
    metadata = {"problems": str(problems[:20]), "files_checked": len(summary.files)}
    yield AssetCheckResult(check_name="release_schema_holds", passed=not problems, metadata=metadata)

"""The release export: 3D-RAD's CSV layout under ``<out>/3DRAD`` plus the same rows as Parquet."""

from collections.abc import Iterator

import pandas as pd
from dagster import AssetCheckResult, AssetCheckSpec, AssetIn, MetadataValue, Output, asset

from assets.metadata import table_metadata
from rad3d_pipeline.qa_rows import RELEASE_COLUMNS
from rad3d_pipeline.release import RELEASE_FOLDER, read_release, release_rows, write_release
from resources.settings import Rad3dSettings

GROUP = "release"


@asset(
    group_name=GROUP,
    code_version="1",
    ins={
        "closed_qa": AssetIn(metadata={"allow_missing_partitions": True}),
        "curated_qa": AssetIn(metadata={"allow_missing_partitions": True}),
    },
    check_specs=[AssetCheckSpec("release_schema_holds", asset="release_export")],
    description="Writes the 3D-RAD release layout atomically (test from CT-RATE valid, train, train fractions).",
)
def release_export(
    closed_qa: pd.DataFrame, curated_qa: pd.DataFrame, settings: Rad3dSettings
) -> Iterator[Output[pd.DataFrame] | AssetCheckResult]:
    parts = [frame for frame in (curated_qa, closed_qa) if not frame.empty]
    if not parts:
        raise ValueError("release_export: no QA rows to export; materialize closed_qa or curated_qa first")
    rows = release_rows(pd.concat(parts, ignore_index=True), settings.rename_valid_to_test)
    summary = write_release(rows, settings.out, train_fractions=tuple(settings.train_fractions), seed=settings.seed)
    per_task = rows.groupby(["release_split", "Task"]).size()
    yield Output(
        rows,
        metadata={
            **table_metadata(rows),
            "release_root": MetadataValue.path(str(summary.root)),
            "files": len(summary.files),
            **{f"rows_{split}_task{task}": int(n) for (split, task), n in per_task.items()},
        },
    )
    problems: list[str] = []
    for split in rows["release_split"].unique():
        back = read_release(settings.out / RELEASE_FOLDER / str(split))
        if list(back.columns[: len(RELEASE_COLUMNS)]) != list(RELEASE_COLUMNS):
            problems.append(f"{split}: columns {list(back.columns)}")
        expected = int((rows["release_split"] == split).sum())
        if len(back) != expected:
            problems.append(f"{split}: {len(back)} rows on disk, {expected} built")
        closed = back[back["QuestionType"] == "Close"]
        letters_ok = closed.apply(lambda r: r[f"Choice {r['AnswerChoice']}"] == r["Answer"], axis=1)
        if len(closed) and not letters_ok.all():
            problems.append(f"{split}: {int((~letters_ok).sum())} rows whose AnswerChoice is not the Answer")
    yield AssetCheckResult(check_name="release_schema_holds", passed=not problems, metadata={"problems": str(problems)})

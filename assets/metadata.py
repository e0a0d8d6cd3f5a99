"""Metadata helpers shared by the assets: the run-level row count and quarantine files."""

from __future__ import annotations

from typing import Any

import pandas as pd
from dagster import MetadataValue


def table_metadata(frame: pd.DataFrame, preview_rows: int | None = None) -> dict[str, Any]:
    """The run's figure: rows over every partition the run wrote. Each partition's own row count,
    column schema and 5-row preview come from the IO manager (``dagster/row_count``, ``preview``);
    ``preview_rows`` adds a longer preview of the whole table (``preview_top``)."""
    meta: dict[str, Any] = {"rows_in_run": MetadataValue.int(len(frame))}
    if preview_rows:
        top = frame.head(preview_rows).astype(str)
        meta["preview_top"] = MetadataValue.md(top.to_markdown(index=False) if len(top) else "(empty)")
    return meta


def write_quarantine(frame: pd.DataFrame, path: Any) -> dict[str, Any]:
    """Write a quarantine table (replacing the previous one) and describe it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return {"quarantined": MetadataValue.int(len(frame)), "quarantine_file": MetadataValue.path(str(path.resolve()))}

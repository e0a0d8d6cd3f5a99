"""Metadata helpers shared by the assets: row counts and previews in the UI."""

from __future__ import annotations

from typing import Any

import pandas as pd
from dagster import MetadataValue


def table_metadata(frame: pd.DataFrame, preview_rows: int = 5) -> dict[str, Any]:
    preview = frame.head(preview_rows)
    for col in preview.columns:
        if preview[col].map(lambda v: isinstance(v, list | tuple)).any():
            preview = preview.assign(**{col: preview[col].map(str)})
    return {
        "rows": MetadataValue.int(len(frame)),
        "preview": MetadataValue.md(preview.to_markdown(index=False) if len(preview) else "(empty)"),
    }


def write_quarantine(frame: pd.DataFrame, path: Any) -> dict[str, Any]:
    """Write a quarantine table (replacing the previous one) and describe it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(path, index=False)
    return {"quarantined": MetadataValue.int(len(frame)), "quarantine_file": MetadataValue.path(str(path))}

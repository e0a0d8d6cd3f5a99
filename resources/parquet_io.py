"""Parquet IO manager: ``<base_dir>/tables/<asset>/<partition>.parquet``, one file per partition.

Partitioned assets return ``dict[partition_key, DataFrame]`` so that one run can store a
whole partition range (the builds run ranges, not one run per partition). Loading a
partitioned input returns the concatenation of the requested partitions. An input whose
``AssetIn`` metadata sets ``allow_missing_partitions`` skips partitions never built.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import (
    AssetExecutionContext,
    ConfigurableIOManager,
    DagsterInvariantViolationError,
    InputContext,
    MetadataValue,
    OutputContext,
    TableColumn,
    TableSchema,
)

from rad3d_pipeline.parquet_atomic import write_parquet_atomic as write_parquet_atomic

UNPARTITIONED_FILE = "all"


def table_dir(base_dir: str | Path, asset_name: str) -> Path:
    return Path(base_dir) / "tables" / asset_name


def _arrow_schema(frame: pd.DataFrame) -> pa.Schema:
    return pa.Schema.from_pandas(frame, preserve_index=False)


def _has_untyped_columns(schema: pa.Schema) -> bool:
    return any(pa.types.is_null(field.type) for field in schema)


def reference_schema(frames: list[pd.DataFrame], siblings: list[Path]) -> pa.Schema | None:
    """The asset's column types: from a frame with rows, else from a partition file already on disk."""
    for frame in frames:
        if len(frame):
            schema = _arrow_schema(frame)
            if not _has_untyped_columns(schema):
                return schema
    for path in siblings:
        try:
            schema = pq.read_schema(path)
        except (OSError, pa.ArrowInvalid):
            continue
        if not _has_untyped_columns(schema):
            return schema.remove_metadata()
    return None


def conform(frame: pd.DataFrame, schema: pa.Schema | None) -> pa.Schema | None:
    """The schema to write ``frame`` with: the reference where the frame's own types are not known
    (no rows, or all-null columns) and the columns are the same; else strings for null-typed columns."""
    own = _arrow_schema(frame)
    if len(frame) and not _has_untyped_columns(own):
        return None
    if schema is not None and schema.names == own.names:
        return schema
    return pa.schema([pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in own])


def table_metadata(frame: pd.DataFrame, preview_rows: int = 5) -> dict[str, Any]:
    """Dagster's row count and column schema of one table, and a preview of its first rows."""
    columns = [TableColumn(str(name), str(dtype)) for name, dtype in frame.dtypes.items()]
    preview = frame.head(preview_rows).astype(str)
    preview = preview.apply(lambda col: col.str.slice(0, 80))
    return {
        "dagster/row_count": len(frame),
        "dagster/column_schema": TableSchema(columns=columns),
        "preview": MetadataValue.md(preview.to_markdown(index=False) if len(preview) else "(no rows)"),
    }


class PartitionedParquetIOManager(ConfigurableIOManager):
    """Stores DataFrames as Parquet under the data root; see the module docstring."""

    base_dir: str

    def _path(self, asset_name: str, partition: str | None) -> Path:
        return table_dir(self.base_dir, asset_name) / f"{partition or UNPARTITIONED_FILE}.parquet"

    def handle_output(self, context: OutputContext, obj: Any) -> None:
        name = context.asset_key.path[-1]
        if not context.has_asset_partitions:
            if not isinstance(obj, pd.DataFrame):
                raise TypeError(f"asset {name}: expected a DataFrame, got {type(obj).__name__}")
            path = self._path(name, None)
            write_parquet_atomic(obj, path, conform(obj, reference_schema([], [path] if path.exists() else [])))
            context.add_output_metadata({**table_metadata(obj), "path": MetadataValue.path(str(path.resolve()))})
            return
        if not isinstance(obj, dict):
            raise TypeError(f"partitioned asset {name}: return a dict of partition key to DataFrame")
        keys = list(context.asset_partition_keys)
        missing = [k for k in keys if k not in obj]
        if missing:
            raise ValueError(f"asset {name}: no output for partition(s) {', '.join(missing)}")
        folder = table_dir(self.base_dir, name)
        siblings = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
        schema = reference_schema([obj[k] for k in keys], siblings)
        for key in keys:
            path = self._path(name, key)
            write_parquet_atomic(obj[key], path, conform(obj[key], schema))
            _add_partition_metadata(
                context, key, {**table_metadata(obj[key]), "path": MetadataValue.path(str(path.resolve()))}
            )

    def load_input(self, context: InputContext) -> pd.DataFrame:
        name = context.asset_key.path[-1]
        if not context.has_asset_partitions:
            path = self._path(name, None)
            if not path.exists():
                raise FileNotFoundError(f"{path}: asset {name} has not been materialized under {self.base_dir}")
            return pd.read_parquet(path)
        allow_missing = bool((context.definition_metadata or {}).get("allow_missing_partitions", False))
        frames = []
        for key in context.asset_partition_keys:
            path = self._path(name, key)
            if not path.exists():
                if allow_missing:
                    continue
                raise FileNotFoundError(f"{path}: partition {key} of asset {name} has not been materialized")
            frames.append(pd.read_parquet(path))
        if not frames:
            return pd.DataFrame()
        return pd.concat(frames, ignore_index=True)


def _add_partition_metadata(context: OutputContext, partition: str, metadata: dict[str, Any]) -> None:
    """Metadata on one partition's materialization (a range run materializes each partition)."""
    try:
        step = AssetExecutionContext.get()
    except DagsterInvariantViolationError:  # called outside a run (a test of the IO manager alone)
        return
    step.add_asset_metadata(metadata, asset_key=context.asset_key, partition_key=partition)

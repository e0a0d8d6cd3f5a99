"""Parquet IO manager: ``<base_dir>/tables/<asset>/<partition>.parquet``, one file per partition.

Partitioned assets return ``dict[partition_key, DataFrame]`` so that one run can store a
whole partition range (the builds run ranges, not one run per partition). Loading a
partitioned input returns the concatenation of the requested partitions. An input whose
``AssetIn`` metadata sets ``allow_missing_partitions`` skips partitions never built.

Every table's Dagster data version comes from its content (:mod:`rad3d_pipeline.common.content_version`):
an identical rebuild keeps it, so nothing downstream turns stale; changed content changes it. Each
partition's own content version is in its metadata (``content_version``). Dagster 1.13 records one
data version per step output (``Output.data_version``; dagster-io/dagster#18649, #34013), so a run
over a range gives all its partitions one: the one they carried when none of them changed, else a
new one for the whole range (``data_version_of``), which marks the downstream partitions of the
whole range stale, never fewer than the changed ones; a run of one partition is exact. Columns an
asset lists in its ``content_version_ignores`` metadata (run bookkeeping: timings, skip status) are
left out of its content.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetRecordsFilter,
    ConfigurableIOManager,
    DagsterInvariantViolationError,
    DataVersion,
    InputContext,
    MetadataValue,
    OutputContext,
    TableColumn,
    TableSchema,
)

from rad3d_pipeline.common.content_version import Recorded, frame_version, output_data_version
from rad3d_pipeline.common.parquet_atomic import write_parquet_atomic as write_parquet_atomic

UNPARTITIONED_FILE = "all"
DATA_VERSION_TAG = "dagster/data_version"  # where Dagster records a materialization's data version
CONTENT_KEY = "content_version"  # metadata: the content version of the table or partition
SCOPE_KEY = "data_version_of"  # partition metadata: whose content the data version is (one per run in Dagster 1.13)
IGNORES_KEY = "content_version_ignores"  # asset metadata: columns that are run bookkeeping, not content


def table_dir(base_dir: str | Path, asset_name: str) -> Path:
    return Path(base_dir) / "tables" / asset_name


def _arrow_schema(frame: pd.DataFrame) -> pa.Schema:
    return pa.Schema.from_pandas(frame, preserve_index=False)


def _is_untyped(data_type: pa.DataType) -> bool:
    """Null, or a nested type with null inside (``list<null>``: a column of lists that are all empty)."""
    if pa.types.is_null(data_type):
        return True
    return any(_is_untyped(data_type.field(i).type) for i in range(data_type.num_fields))


def _has_untyped_columns(schema: pa.Schema) -> bool:
    return any(_is_untyped(field.type) for field in schema)


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


def _is_list(data_type: pa.DataType) -> bool:
    return bool(pa.types.is_list(data_type) or pa.types.is_large_list(data_type))


def _fits(own: pa.DataType, reference: pa.DataType) -> bool:
    """Whether values typed ``own`` (untyped) can be written as ``reference``: any for null, lists as lists."""
    return pa.types.is_null(own) or (_is_list(own) and _is_list(reference))


def conform(frame: pd.DataFrame, schema: pa.Schema | None) -> pa.Schema | None:
    """The schema to write ``frame`` with (None: its own types).

    With the reference's columns: a frame without rows takes the reference whole; a frame with rows
    takes the reference's type only for its untyped columns (all null, or lists that are all empty)
    and only where the values fit it. What is still untyped at the top level is written as strings.
    """
    own = _arrow_schema(frame)
    if len(frame) and not _has_untyped_columns(own):
        return None
    fields = list(own)
    if schema is not None and schema.names == own.names:
        if not len(frame):
            return schema
        fields = [
            ref if _is_untyped(f.type) and _fits(f.type, ref.type) else f for f, ref in zip(own, schema, strict=True)
        ]
    return pa.schema([pa.field(f.name, pa.string()) if pa.types.is_null(f.type) else f for f in fields])


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
            version = content_version(context, pd.read_parquet(path))  # the content as written and read
            context.add_output_metadata(
                {**table_metadata(obj), "path": MetadataValue.path(str(path.resolve())), CONTENT_KEY: version}
            )
            _set_data_version(context.asset_key, version)
            return
        if not isinstance(obj, dict):
            raise TypeError(f"partitioned asset {name}: return a dict of partition key to DataFrame")
        keys = list(context.asset_partition_keys)
        missing = [k for k in keys if k not in obj]
        if missing:
            raise ValueError(f"asset {name}: no output for partition(s) {', '.join(missing)}")
        self._write_partitions(context, name, {key: obj[key] for key in keys})

    def _write_partitions(self, context: OutputContext, name: str, frames: dict[str, pd.DataFrame]) -> None:
        """Each partition's file and metadata; the run's one data version (see the module docstring)."""
        folder = table_dir(self.base_dir, name)
        siblings = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
        schema = reference_schema(list(frames.values()), siblings)
        versions: dict[str, str] = {}
        metadata: dict[str, dict[str, Any]] = {}
        for key, frame in frames.items():
            path = self._path(name, key)
            write_parquet_atomic(frame, path, conform(frame, schema))
            versions[key] = content_version(context, pd.read_parquet(path))  # as written (conformed types)
            metadata[key] = {**table_metadata(frame), "path": MetadataValue.path(str(path.resolve()))}
        step = _step_context()
        recorded = {key: _recorded(step, context.asset_key, key) for key in frames} if step else {}
        version = output_data_version(versions, recorded)
        if step is not None:
            step.set_data_version(context.asset_key, DataVersion(version))
        for key in frames:
            scope = "this partition" if version == versions[key] else "a partition range"
            _add_partition_metadata(context, key, {**metadata[key], CONTENT_KEY: versions[key], SCOPE_KEY: scope})

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


def _step_context() -> AssetExecutionContext | None:
    try:
        return AssetExecutionContext.get()
    except DagsterInvariantViolationError:  # called outside a run (a test of the IO manager alone)
        return None


def content_version(context: OutputContext, frame: pd.DataFrame) -> str:
    """The frame's content version, without the columns the asset's ``content_version_ignores`` names."""
    raw = (context.definition_metadata or {}).get(IGNORES_KEY) or []
    ignored = [str(c) for c in getattr(raw, "value", raw)]
    return frame_version(frame.drop(columns=[c for c in ignored if c in frame.columns]))


def _recorded(step: AssetExecutionContext, asset_key: AssetKey, partition: str) -> Recorded | None:
    """What the partition's latest materialization recorded (content and data version), if any."""
    records = step.instance.fetch_materializations(
        AssetRecordsFilter(asset_key=asset_key, asset_partitions=[partition]), limit=1
    ).records
    event = records[0].asset_materialization if records else None
    if event is None:
        return None
    content = event.metadata.get(CONTENT_KEY)
    return Recorded(None if content is None else str(content.value), event.tags.get(DATA_VERSION_TAG))


def _set_data_version(asset_key: AssetKey, version: str) -> None:
    """The materialization's data version: the content just written (Dagster uses it for staleness downstream)."""
    step = _step_context()
    if step is not None:
        step.set_data_version(asset_key, DataVersion(version))


def _add_partition_metadata(context: OutputContext, partition: str, metadata: dict[str, Any]) -> None:
    """Metadata on one partition's materialization (a range run materializes each partition)."""
    step = _step_context()
    if step is not None:
        step.add_asset_metadata(metadata, asset_key=context.asset_key, partition_key=partition)

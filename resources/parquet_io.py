"""Parquet IO manager: ``<base_dir>/tables/<asset>/<partition>.parquet``, one file per partition.

Partitioned assets return ``dict[partition_key, DataFrame]`` so that one run can store a
whole partition range (the builds run ranges, not one run per partition). Loading a
partitioned input returns the concatenation of the requested partitions. An input whose
``AssetIn`` metadata sets ``allow_missing_partitions`` skips partitions never built.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

import pandas as pd
from dagster import ConfigurableIOManager, InputContext, OutputContext

UNPARTITIONED_FILE = "all"


def table_dir(base_dir: str | Path, asset_name: str) -> Path:
    return Path(base_dir) / "tables" / asset_name


def write_parquet_atomic(frame: pd.DataFrame, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    frame.to_parquet(tmp, index=False)
    os.replace(tmp, path)


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
            write_parquet_atomic(obj, self._path(name, None))
            return
        if not isinstance(obj, dict):
            raise TypeError(f"partitioned asset {name}: return a dict of partition key to DataFrame")
        keys = list(context.asset_partition_keys)
        missing = [k for k in keys if k not in obj]
        if missing:
            raise ValueError(f"asset {name}: no output for partition(s) {', '.join(missing)}")
        for key in keys:
            write_parquet_atomic(obj[key], self._path(name, key))

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

"""The Parquet IO manager: one file per partition, ranges in one run, atomic writes."""

import warnings
from pathlib import Path

import pandas as pd
from dagster import (
    AssetExecutionContext,
    AssetIn,
    BackfillPolicy,
    DagsterInstance,
    StaticPartitionsDefinition,
    asset,
    materialize,
)

from resources.parquet_io import PartitionedParquetIOManager

warnings.filterwarnings("ignore", module="dagster")
parts = StaticPartitionsDefinition(["a", "b", "c"])


@asset(partitions_def=parts, backfill_policy=BackfillPolicy.single_run())
def letters(context: AssetExecutionContext) -> dict[str, pd.DataFrame]:
    return {k: pd.DataFrame({"key": [k], "n": [ord(k)]}) for k in context.partition_keys}


@asset(ins={"letters": AssetIn(metadata={"allow_missing_partitions": True})})
def combined(letters: pd.DataFrame) -> pd.DataFrame:
    return letters.sort_values("key").reset_index(drop=True)


def test_range_run_writes_each_partition_and_loads_all(tmp_path: Path) -> None:
    io = PartitionedParquetIOManager(base_dir=str(tmp_path))
    instance = DagsterInstance.ephemeral()
    tags = {"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "b"}
    assert materialize([letters], resources={"io_manager": io}, tags=tags, instance=instance).success
    written = sorted(p.name for p in (tmp_path / "tables" / "letters").iterdir())
    assert written == ["a.parquet", "b.parquet"]
    # c was never built: the input allows missing partitions.
    result = materialize([letters, combined], resources={"io_manager": io}, selection=["combined"], instance=instance)
    assert result.success
    out = pd.read_parquet(tmp_path / "tables" / "combined" / "all.parquet")
    assert out["key"].tolist() == ["a", "b"]

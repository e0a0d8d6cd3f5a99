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


@asset(partitions_def=parts, backfill_policy=BackfillPolicy.single_run())
def uneven(context: AssetExecutionContext) -> dict[str, pd.DataFrame]:
    """Partition a has 1 row, b 2 rows, c none (an empty shard)."""
    sizes = {"a": 1, "b": 2, "c": 0}
    return {
        k: pd.DataFrame({"name": [f"{k}{i}" for i in range(sizes[k])], "n": list(range(sizes[k]))})
        for k in context.partition_keys
    }


def _materializations(result: object) -> dict[str, dict[str, object]]:
    return {
        e.event_specific_data.materialization.partition: {  # type: ignore[attr-defined]
            k: v.value
            for k, v in e.event_specific_data.materialization.metadata.items()  # type: ignore[attr-defined]
        }
        for e in result.all_events  # type: ignore[attr-defined]
        if e.event_type_value == "ASSET_MATERIALIZATION"
    }


def test_each_partition_carries_its_own_row_count_schema_and_preview(tmp_path: Path) -> None:
    io = PartitionedParquetIOManager(base_dir=str(tmp_path))
    tags = {"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "c"}
    result = materialize([uneven], resources={"io_manager": io}, tags=tags, instance=DagsterInstance.ephemeral())
    assert result.success
    meta = _materializations(result)
    assert {k: m["dagster/row_count"] for k, m in meta.items()} == {"a": 1, "b": 2, "c": 0}
    for key, m in meta.items():
        assert len(pd.read_parquet(tmp_path / "tables" / "uneven" / f"{key}.parquet")) == m["dagster/row_count"]
        assert [c.name for c in m["dagster/column_schema"].columns] == ["name", "n"]  # type: ignore[attr-defined]
    assert "b1" in str(meta["b"]["preview"]) and "b1" not in str(meta["a"]["preview"])


def test_an_empty_partition_has_the_types_of_its_siblings_alone_or_in_a_range(tmp_path: Path) -> None:
    import pyarrow.parquet as pq

    io = PartitionedParquetIOManager(base_dir=str(tmp_path))
    folder = tmp_path / "tables" / "uneven"
    instance = DagsterInstance.ephemeral()
    # c alone first, with no sibling on disk: its types cannot be known yet.
    assert materialize([uneven], resources={"io_manager": io}, partition_key="c", instance=instance).success
    tags = {"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "c"}
    assert materialize([uneven], resources={"io_manager": io}, tags=tags, instance=instance).success
    typed = pq.read_schema(folder / "a.parquet")
    assert pq.read_schema(folder / "c.parquet").types == typed.types
    # c alone again, now with siblings on disk: the siblings' types.
    assert materialize([uneven], resources={"io_manager": io}, partition_key="c", instance=instance).success
    assert pq.read_schema(folder / "c.parquet").types == typed.types


@asset(partitions_def=parts, backfill_policy=BackfillPolicy.single_run())
def listed(context: AssetExecutionContext) -> dict[str, pd.DataFrame]:
    """A list column: a has lists with numbers, b only empty lists (a shard without a measurement), c no rows."""
    values: dict[str, list[list[float]]] = {"a": [[1.5, 2.0], []], "b": [[], []], "c": []}
    return {
        k: pd.DataFrame({"n": range(len(values[k])), "mm": pd.Series(values[k], dtype=object)})
        for k in context.partition_keys
    }


def test_a_list_column_keeps_its_element_type_in_every_partition_whatever_the_order(tmp_path: Path) -> None:
    """All-empty lists read as list<null>; they are written with the element type of the typed partitions."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    io = PartitionedParquetIOManager(base_dir=str(tmp_path))
    folder = tmp_path / "tables" / "listed"
    tags = {"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "c"}
    assert materialize([listed], resources={"io_manager": io}, tags=tags, instance=DagsterInstance.ephemeral()).success
    for key in "abc":
        assert pq.read_schema(folder / f"{key}.parquet").field("mm").type == pa.list_(pa.float64()), key
    # b alone, after its siblings exist: still list<double>, not list<null>.
    assert materialize([listed], resources={"io_manager": io}, partition_key="b", instance=DagsterInstance.ephemeral())
    assert pq.read_schema(folder / "b.parquet").field("mm").type == pa.list_(pa.float64())
    assert pd.read_parquet(folder / "b.parquet")["mm"].map(len).tolist() == [0, 0]


def test_lists_that_are_all_empty_never_take_a_sibling_type_they_do_not_fit(tmp_path: Path) -> None:
    """c alone first (no rows: its list column cannot be typed, written as strings), then b alone (rows
    whose lists are all empty): b must not be forced into c's string type; a range then types them all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    io = PartitionedParquetIOManager(base_dir=str(tmp_path))
    folder = tmp_path / "tables" / "listed"
    for key in ("c", "b"):
        assert materialize(
            [listed], resources={"io_manager": io}, partition_key=key, instance=DagsterInstance.ephemeral()
        )
    assert pd.read_parquet(folder / "b.parquet")["mm"].map(len).tolist() == [0, 0]
    tags = {"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "c"}
    assert materialize([listed], resources={"io_manager": io}, tags=tags, instance=DagsterInstance.ephemeral()).success
    for key in "abc":
        assert pq.read_schema(folder / f"{key}.parquet").field("mm").type == pa.list_(pa.float64()), key


# ---------------------------------------------------------------- data versions from content


@asset(
    partitions_def=parts,
    backfill_policy=BackfillPolicy.single_run(),
    metadata={"content_version_ignores": ["seconds"]},
)
def timed(context: AssetExecutionContext) -> dict[str, pd.DataFrame]:
    """Each partition's rows from the run config's ``rows`` (key -> values), with a run-dependent ``seconds``."""
    rows = context.run.tags.get("rows", "")
    values = dict(item.split("=") for item in rows.split(",") if item)
    seconds = float(context.run.tags.get("seconds", "0"))
    return {
        k: pd.DataFrame({"key": [k], "value": [values.get(k, k)], "seconds": [seconds]}) for k in context.partition_keys
    }


def _versions(instance: DagsterInstance, name: str) -> dict[str, tuple[str, str, str]]:
    """Each partition's latest (data version, content_version, data_version_of)."""
    from dagster import AssetKey

    latest = {}
    for record in sorted(
        instance.fetch_materializations(AssetKey(name), limit=1000).records, key=lambda r: r.storage_id
    ):
        event = record.asset_materialization
        assert event is not None
        latest[str(event.partition)] = (
            str(event.tags["dagster/data_version"]),
            str(event.metadata["content_version"].value),
            str(event.metadata["data_version_of"].value),
        )
    return latest


def test_data_versions_are_the_content_per_partition_alone_and_per_range(tmp_path: Path) -> None:
    from rad3d_pipeline.common.content_version import combined_version, frame_version

    io = PartitionedParquetIOManager(base_dir=str(tmp_path))
    instance = DagsterInstance.ephemeral()
    whole = {"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "c"}

    def run(tags: dict[str, str] | None = None, partition: str | None = None) -> dict[str, tuple[str, str, str]]:
        result = materialize(
            [timed], resources={"io_manager": io}, tags=tags, partition_key=partition, instance=instance
        )
        assert result.success
        return _versions(instance, "timed")

    first = run({**whole, "seconds": "1.5"})
    for key, (data_version, content, scope) in first.items():
        table = pd.read_parquet(tmp_path / "tables" / "timed" / f"{key}.parquet").drop(columns=["seconds"])
        assert content == frame_version(table), key  # each partition's own content, as written
        assert scope == "a partition range"
        assert data_version == combined_version({k: v[1] for k, v in first.items()})  # one per run (Dagster 1.13)
    # The same content in another run (other timings): every version stays.
    assert run({**whole, "seconds": "9.0"}) == first
    # b rebuilt alone, unchanged: it keeps the range's version; changed: its own content's.
    assert run({"seconds": "2"}, partition="b")["b"] == first["b"]
    changed = run({"rows": "b=new"}, partition="b")
    assert changed["b"][0] == changed["b"][1] != first["b"][1] and changed["b"][2] == "this partition"
    assert {k: v for k, v in changed.items() if k != "b"} == {k: v for k, v in first.items() if k != "b"}
    # A range whose partitions carry different versions gets a new one, though nothing changed.
    mixed = run({**whole, "rows": "b=new"})
    assert [v[1] for v in mixed.values()] == [v[1] for v in changed.values()]
    assert len({v[0] for v in mixed.values()}) == 1 and mixed["a"][0] not in {first["a"][0], changed["b"][0]}


def test_an_unpartitioned_table_s_data_version_is_its_content(tmp_path: Path) -> None:
    from dagster import AssetKey

    from rad3d_pipeline.common.content_version import frame_version

    io = PartitionedParquetIOManager(base_dir=str(tmp_path))
    instance = DagsterInstance.ephemeral()
    tags = {"dagster/asset_partition_range_start": "a", "dagster/asset_partition_range_end": "c"}
    assert materialize([letters], resources={"io_manager": io}, tags=tags, instance=instance).success
    for _ in range(2):
        result = materialize(
            [letters, combined], resources={"io_manager": io}, selection=["combined"], instance=instance
        )
        assert result.success
    records = instance.fetch_materializations(AssetKey("combined"), limit=10).records
    versions = {r.event_log_entry.tags["dagster/data_version"] for r in records}
    assert versions == {frame_version(pd.read_parquet(tmp_path / "tables" / "combined" / "all.parquet"))}

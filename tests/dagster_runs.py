"""Materialize assets in tests as `rad3d build` does: every partition of the selection, one range run."""

from __future__ import annotations

from typing import Any

from dagster import DagsterInstance, Definitions, materialize

from assets.partitions import shard_partitions

_shards = list(shard_partitions.get_partition_keys())
# The patient shards: the ingest assets, the sentences and the volumes are partitioned by them.
SHARD_RANGE = {"dagster/asset_partition_range_start": _shards[0], "dagster/asset_partition_range_end": _shards[-1]}


def materialize_shards(
    defs: Definitions,
    selection: list[str],
    instance: DagsterInstance | None = None,
    resources: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> Any:
    """``materialize`` over every shard (unpartitioned assets in the selection run once)."""
    return materialize(
        list(defs.assets or []),  # type: ignore[arg-type]
        resources=resources if resources is not None else dict(defs.resources or {}),
        selection=selection,
        tags={**SHARD_RANGE, **(tags or {})},
        instance=instance or DagsterInstance.ephemeral(),
        raise_on_error=False,
    )

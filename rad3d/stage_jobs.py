"""One asset job per stage, so that every run on the UI's Runs page says which stage it is.

A stage is an asset group (``assets/*.py`` ``GROUP``): ``ctrate``, ``sentences``, ``open_qa``,
``closed_qa``, ``release``, ``quality``, ``volumes``, ``evaluation``, ``plan``. Dagster lets an asset
job hold unpartitioned assets and assets of *one* partitions definition, so:

- a group whose partitioned assets share one partitions definition is one job, ``build_<group>``
  (``build_ctrate``: the shard-partitioned ingest assets and ``patients``);
- a group with several partitions definitions has one job per definition,
  ``build_<group>_by_<dimensions>`` (``build_open_qa_by_shard_task`` for the task x shard assets,
  ``build_open_qa_by_task`` for ``curated_qa``), and its unpartitioned assets, if any, the job
  ``build_<group>``;
- the observable sources of a group (the CT-RATE files) are observed by ``observe_<group>``
  (``observe_ctrate_files``).

Not the bare group name: a job's graph takes the job's name, and Dagster refuses a graph named like
an op (the asset ``closed_qa`` of the group ``closed_qa``). ``rad3d build`` launches each planned run
through the job of its assets (``rad3d/build.py``), so its runs are named ``build_ctrate``,
``build_closed_qa``, ... instead of ``__ephemeral_asset_job__``; the same jobs are in the code
location (``rad3d/definitions.py``) for a user to launch from the UI.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from dagster import (
    AssetKey,
    AssetSelection,
    DynamicPartitionsDefinition,
    MultiPartitionsDefinition,
    PartitionsDefinition,
    define_asset_job,
)

DEFAULT_GROUP = "default"


@dataclass(frozen=True)
class StageAsset:
    """What names an asset's stage job: its group, its partitions definition, observed or materialized."""

    key: AssetKey
    group: str
    partitions_def: PartitionsDefinition | None
    observable: bool


def entries_from_assets(assets: Iterable[Any]) -> list[StageAsset]:
    """The executable assets of ``AssetsDefinition``s and (observable) ``SourceAsset``s, as stage entries."""
    entries: list[StageAsset] = []
    for item in assets:
        if not getattr(item, "is_executable", False):
            continue  # an external asset (AssetSpec, plain SourceAsset): nothing to run
        observable = bool(getattr(item, "is_observable", False))
        specs = getattr(item, "specs", None)
        if specs is None:  # SourceAsset
            entries.append(StageAsset(item.key, item.group_name or DEFAULT_GROUP, item.partitions_def, observable))
            continue
        for spec in specs:
            pdef = spec.partitions_def if spec.partitions_def is not None else item.partitions_def
            entries.append(StageAsset(spec.key, spec.group_name or DEFAULT_GROUP, pdef, observable))
    return entries


def entries_from_graph(graph: Any) -> list[StageAsset]:
    """The executable assets of a resolved asset graph (``Definitions.resolve_asset_graph()``), as entries."""
    entries: list[StageAsset] = []
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        if not node.is_executable:
            continue
        entries.append(StageAsset(key, node.group_name or DEFAULT_GROUP, node.partitions_def, node.is_observable))
    return entries


def _dimension_label(pdef: PartitionsDefinition, entries: Sequence[StageAsset]) -> str:
    """``shard_task`` for a task x shard definition, ``models`` for a named dynamic one, ``task`` for the
    task keys (the name of the dimension of any multi-partitions definition that has the same keys)."""
    if isinstance(pdef, MultiPartitionsDefinition):
        return "_".join(dim.name for dim in pdef.partitions_defs)
    if isinstance(pdef, DynamicPartitionsDefinition) and pdef.name:
        return pdef.name
    for entry in entries:
        other = entry.partitions_def
        if isinstance(other, MultiPartitionsDefinition):
            for dim in other.partitions_defs:
                if dim.partitions_def == pdef:
                    return dim.name
    return ""


def stage_job_names(entries: Sequence[StageAsset]) -> dict[AssetKey, str]:
    """The stage job of every entry (see the module's docstring for the naming)."""
    pdefs_by_group: dict[str, list[PartitionsDefinition]] = {}
    for entry in entries:
        if entry.observable or entry.partitions_def is None:
            continue
        known = pdefs_by_group.setdefault(entry.group, [])
        if entry.partitions_def not in known:
            known.append(entry.partitions_def)
    op_names = {e.key.to_python_identifier() for e in entries} | {e.key.path[-1] for e in entries}
    names: dict[AssetKey, str] = {}
    for entry in entries:
        pdefs = pdefs_by_group.get(entry.group, [])
        if entry.observable:
            name = f"observe_{entry.group}"
        elif entry.partitions_def is None or len(pdefs) <= 1:
            name = f"build_{entry.group}"
        else:
            label = _dimension_label(entry.partitions_def, entries)
            if not label:  # no dimension name anywhere: number the definitions in the order met
                label = f"partitions{pdefs.index(entry.partitions_def) + 1}"
            name = f"build_{entry.group}_by_{label}"
        names[entry.key] = f"{name}_stage" if name in op_names else name
    return names


def keys_by_stage_job(entries: Sequence[StageAsset]) -> dict[str, list[AssetKey]]:
    """Stage job name -> its asset keys (sorted), jobs in name order."""
    by_job: dict[str, list[AssetKey]] = {}
    for key, name in stage_job_names(entries).items():
        by_job.setdefault(name, []).append(key)
    return {name: sorted(by_job[name], key=lambda k: k.to_user_string()) for name in sorted(by_job)}


def stage_jobs_for(entries: Sequence[StageAsset]) -> list[Any]:
    """The asset jobs (``define_asset_job``), one per stage job name."""
    observed = {e.key for e in entries if e.observable}
    jobs = []
    for name, keys in keys_by_stage_job(entries).items():
        assets = ", ".join(k.to_user_string() for k in keys)
        verb = "observes" if keys[0] in observed else "materializes"
        jobs.append(
            define_asset_job(
                name,
                selection=AssetSelection.assets(*keys),
                description=f"Stage job of rad3d build: {verb} {assets}.",
            )
        )
    return jobs


def stage_jobs(assets: Iterable[Any]) -> list[Any]:
    """The stage jobs of the assets that go into the ``Definitions`` (the composition root's ``jobs=``)."""
    return stage_jobs_for(entries_from_assets(assets))

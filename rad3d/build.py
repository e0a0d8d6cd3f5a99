"""``rad3d build``: materialize a selection, every partition, in-process, against DAGSTER_HOME.

The selection is split into runs of assets that share a stage job and a partitions definition, in
topological order; each run covers a contiguous partition range in one run
(``dagster/asset_partition_range_*`` tags), so 16 shards cost one run, not 16. Each run is launched
through its stage job (``rad3d/stage_jobs.py``), so the UI's Runs page names it (``build_closed_qa``)
as the terminal does.
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from dagster import (
    AssetCheckSeverity,
    AssetKey,
    AssetSelection,
    DagsterInstance,
    Definitions,
    MultiPartitionKey,
    MultiPartitionsDefinition,
    PartitionsDefinition,
)

from rad3d.stage_jobs import entries_from_graph, stage_job_names, stage_jobs_for
from rad3d_pipeline.common.errors import UserFacingError


class BuildError(Exception):
    """A run of the build failed; the message names the asset and partitions."""


class PlannedDynamicPartitions:
    """A read-only dynamic partitions store for planning before the instance exists.

    ``rad3d build`` plans (and refuses bad arguments) before anything is written; the keys the build
    will add to the instance (the models) are known then, so the planner resolves them from here.
    """

    def __init__(self, keys: dict[str, Sequence[str]]) -> None:
        self.keys = {name: list(dict.fromkeys(values)) for name, values in keys.items()}

    def get_dynamic_partitions(self, partitions_def_name: str) -> Sequence[str]:
        return list(self.keys.get(partitions_def_name, []))

    def has_dynamic_partition(self, partitions_def_name: str, partition_key: str) -> bool:
        return partition_key in self.keys.get(partitions_def_name, [])

    def get_existing_dynamic_partitions(self, partitions_def_name: str, partition_keys: Sequence[str]) -> set[str]:
        return set(self.keys.get(partitions_def_name, [])) & set(partition_keys)

    def get_paginated_dynamic_partitions(
        self, partitions_def_name: str, limit: int, ascending: bool, cursor: str | None = None
    ) -> Any:
        raise NotImplementedError("PlannedDynamicPartitions: pagination is not needed for planning")

    def get_dynamic_partitions_definition_id(self, partitions_def_name: str) -> str:
        import hashlib
        import json

        return hashlib.sha1(json.dumps(self.keys.get(partitions_def_name, [])).encode()).hexdigest()


def configured_dynamic_partitions(defs: Definitions) -> PlannedDynamicPartitions:
    """The dynamic partition keys the definitions' resources define (``ModelsResource.dynamic_partitions()``)."""
    keys: dict[str, Sequence[str]] = {}
    for resource in dict(defs.resources or {}).values():
        method = getattr(resource, "dynamic_partitions", None)
        if callable(method):
            keys.update(method())
    return PlannedDynamicPartitions(keys)


def add_dynamic_partitions(instance: DagsterInstance, store: PlannedDynamicPartitions) -> dict[str, list[str]]:
    """Add the planned dynamic partition keys the instance does not have yet; returns what was added."""
    added: dict[str, list[str]] = {}
    for name, keys in store.keys.items():
        have = set(instance.get_dynamic_partitions(name))
        new = [k for k in keys if k not in have]
        if new:
            instance.add_dynamic_partitions(name, new)
            added[name] = new
    return added


@dataclass
class PlannedRun:
    """One run of one stage job: assets sharing a partitions definition, over one partition range.

    For a two-dimensional partitions definition the range is a rectangle: from
    ``start`` to ``end`` in each dimension (Dagster's multi-partition range semantics).
    ``job`` is the stage job the run is launched through (empty: looked up from the assets).
    """

    asset_keys: list[AssetKey]
    partitions_def: PartitionsDefinition | None
    partition_keys: list[str] = field(default_factory=list)
    start: str = ""
    end: str = ""
    job: str = ""

    def describe(self) -> str:
        """The assets and the partition range: ``closed_qa [4..6]`` (the run's ``rad3d/stage`` tag)."""
        names = ", ".join(k.to_user_string() for k in self.asset_keys)
        if not self.partition_keys:
            return names
        if self.start == self.end:
            return f"{names} [{self.start}]"
        return f"{names} [{self.start}..{self.end}]"

    def title(self) -> str:
        """What the Runs page shows of the run, in its order: the job, then the ``rad3d/stage`` tag.

        ``build_closed_qa: closed_qa [4..6]``; the build prints it as the run starts.
        """
        return f"{self.job}: {self.describe()}" if self.job else self.describe()

    def tags(self) -> dict[str, str]:
        """What the Runs page shows: the stage (its assets and partitions), and Dagster's partition range."""
        tags = {"rad3d/stage": self.describe()[:250], "rad3d/source": "rad3d build"}
        if self.partition_keys:
            tags["dagster/asset_partition_range_start"] = self.start
            tags["dagster/asset_partition_range_end"] = self.end
        return tags


def resolve_selection(defs: Definitions, select: str | None) -> set[AssetKey]:
    graph = defs.resolve_asset_graph()
    if not select:
        return set(graph.materializable_asset_keys)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        keys = AssetSelection.from_string(select).resolve(graph)
    if not keys:
        raise BuildError(f"--select {select!r} matches no asset")
    return set(keys)


def partition_filter(
    defs: Definitions, selected: set[AssetKey], spec: str, dynamic_partitions_store: Any = None
) -> Callable[[AssetKey, str], bool]:
    """``--partitions``: comma-separated partition keys or ``start...end`` ranges (Dagster's range syntax).

    An item names whole keys or one dimension's keys (``00...03`` the shards 00 to 03, ``prior`` a
    model), resolved in the partitions definition that holds it. A selected asset keeps the
    partitions whose every named dimension matches; an asset whose partitions none of the items
    name keeps all of them. An item no selected asset has is an error.
    """
    graph = defs.resolve_asset_graph()
    spaces: dict[AssetKey, list[list[str]]] = {}  # per asset: its whole keys, then each dimension's keys
    multi: dict[AssetKey, MultiPartitionsDefinition] = {}  # the assets with several dimensions
    for key in selected:
        pdef = graph.get(key).partitions_def
        if pdef is None:
            continue
        store = dynamic_partitions_store or configured_dynamic_partitions(defs)
        spaces[key] = [list(pdef.get_partition_keys(dynamic_partitions_store=store))]
        if isinstance(pdef, MultiPartitionsDefinition):
            multi[key] = pdef
            spaces[key] += [
                list(dim.partitions_def.get_partition_keys(dynamic_partitions_store=store))
                for dim in pdef.partitions_defs
            ]
    every_space = [space for asset_spaces in spaces.values() for space in asset_spaces]
    wanted: set[str] = set()
    for item in (part.strip() for part in spec.split(",")):
        if not item:
            continue
        start, _, end = item.partition("...")
        start, end = start.strip(), (end.strip() or start.strip())
        for space in every_space:
            if start in space and end in space:
                lo, hi = space.index(start), space.index(end)
                if lo > hi:
                    raise BuildError(f"--partitions {item!r}: {start!r} comes after {end!r}")
                wanted.update(space[lo : hi + 1])
                break
        else:
            names = repr(start) if start == end else f"{start!r} and {end!r}"
            raise BuildError(f"--partitions {item!r}: no selected asset has the partition {names}")

    def keep(asset: AssetKey, partition: str) -> bool:
        asset_spaces = spaces.get(asset)
        if not asset_spaces or partition in wanted:
            return True
        whole, dims = asset_spaces[0], asset_spaces[1:]
        named_dims = [i for i, dim in enumerate(dims) if wanted.intersection(dim)]
        if named_dims:
            pdef = multi[asset]
            values = dimension_values(pdef, partition)
            return all(values[pdef.partitions_defs[i].name] in wanted for i in named_dims)
        return not wanted.intersection(whole)

    return keep


def dimension_values(pdef: MultiPartitionsDefinition, partition: str) -> dict[str, str]:
    """A multi-partition key's value in each dimension, by dimension name (Dagster parses the key)."""
    key = partition if isinstance(partition, MultiPartitionKey) else pdef.get_partition_key_from_str(partition)
    return dict(key.keys_by_dimension)


def _contiguous_runs(all_keys: Sequence[str], wanted: set[str]) -> list[list[str]]:
    runs: list[list[str]] = []
    current: list[str] = []
    for key in all_keys:
        if key in wanted:
            current.append(key)
        elif current:
            runs.append(current)
            current = []
    if current:
        runs.append(current)
    return runs


def plan_runs(
    defs: Definitions,
    selected: set[AssetKey],
    partition_filter: Callable[[AssetKey, str], bool] | None = None,
    dynamic_partitions_store: Any = None,
) -> list[PlannedRun]:
    """Consecutive assets (in topological order) of the same stage job with the same partitions share a run.

    Dynamic partitions (the models) resolve in ``dynamic_partitions_store`` (an instance or a
    :class:`PlannedDynamicPartitions`); without one, in the keys the definitions' resources define.
    """
    graph = defs.resolve_asset_graph()
    job_of = stage_job_names(entries_from_graph(graph))
    if dynamic_partitions_store is None:
        dynamic_partitions_store = configured_dynamic_partitions(defs)
    plan: list[PlannedRun] = []
    for level in graph.toposorted_asset_keys_by_level:
        buckets: dict[tuple[str, int], list[AssetKey]] = {}  # (stage job, partitions) -> assets
        defs_by_id: dict[int, PartitionsDefinition | None] = {}
        for key in sorted(level, key=lambda k: k.to_user_string()):
            if key not in selected:
                continue
            pdef = graph.get(key).partitions_def
            buckets.setdefault((job_of[key], id(pdef)), []).append(key)
            defs_by_id[id(pdef)] = pdef
        order = list(buckets)
        if plan and plan[-1].partitions_def is None:  # the unpartitioned run of the same job first: it merges
            order.sort(key=lambda bucket: bucket != (plan[-1].job, id(None)))
        for job, pid in order:
            keys = buckets[job, pid]
            pdef = defs_by_id[pid]
            if pdef is None:
                plan.append(PlannedRun(keys, None, job=job))
                continue
            all_keys = list(pdef.get_partition_keys(dynamic_partitions_store=dynamic_partitions_store))
            if not all_keys:
                continue  # e.g. no model registered: nothing to run
            wanted = {p for p in all_keys if all(partition_filter is None or partition_filter(k, p) for k in keys)}
            if isinstance(pdef, MultiPartitionsDefinition):
                plan.extend(_rectangles(keys, pdef, all_keys, wanted, job))
            else:
                for chunk in _contiguous_runs(all_keys, wanted):
                    plan.append(PlannedRun(keys, pdef, chunk, chunk[0], chunk[-1], job))
    return _merge_unpartitioned(plan, graph)


def _rectangles(
    keys: list[AssetKey], pdef: MultiPartitionsDefinition, all_keys: list[str], wanted: set[str], job: str
) -> list[PlannedRun]:
    """Cover the wanted keys of a two-dimensional definition with few rectangles."""
    first_dim, second_dim = (dim.name for dim in pdef.partitions_defs)

    def key(p: str, q: str) -> str:
        return str(MultiPartitionKey({first_dim: p, second_dim: q}))

    split = [dimension_values(pdef, k) for k in all_keys]
    primary = list(dict.fromkeys(values[first_dim] for values in split))
    secondary = list(dict.fromkeys(values[second_dim] for values in split))
    spans: list[tuple[tuple[str, str], list[str]]] = []  # (primary range, secondary values)
    for value in secondary:
        for chunk in _contiguous_runs(primary, {p for p in primary if key(p, value) in wanted}):
            span = (chunk[0], chunk[-1])
            if spans and spans[-1][0] == span and secondary.index(spans[-1][1][-1]) + 1 == secondary.index(value):
                spans[-1][1].append(value)
            else:
                spans.append((span, [value]))
    runs = []
    for (first, last), values in spans:
        lo, hi = primary.index(first), primary.index(last)
        covered = [key(p, v) for p in primary[lo : hi + 1] for v in values]
        runs.append(PlannedRun(keys, pdef, covered, key(first, values[0]), key(last, values[-1]), job))
    return runs


def _merge_unpartitioned(plan: list[PlannedRun], graph: Any) -> list[PlannedRun]:
    """Fold each unpartitioned run into an earlier unpartitioned run of the same stage job (fewer runs).

    A run moves up only past runs that hold none of its assets' parents, so every asset still runs
    after what it reads (a parent in the same run is ordered by Dagster).
    """
    merged: list[PlannedRun] = []
    for run in plan:
        target: PlannedRun | None = None
        if run.partitions_def is None:
            parents = {parent for key in run.asset_keys for parent in graph.get(key).parent_keys}
            for earlier in reversed(merged):
                if earlier.partitions_def is None and earlier.job == run.job:
                    target = earlier
                    break
                if parents.intersection(earlier.asset_keys):
                    break
        if target is None:
            merged.append(run)
        else:
            target.asset_keys.extend(run.asset_keys)
    return merged


def _innermost(error: object) -> object:
    while getattr(error, "cause", None) is not None:
        error = error.cause  # type: ignore[attr-defined]
    return error


def user_facing_class_names() -> set[str]:
    """Class names of every UserFacingError subclass (their message is the whole story)."""
    names: set[str] = set()
    todo: list[type] = [UserFacingError]
    while todo:
        cls = todo.pop()
        names.add(cls.__name__)
        todo.extend(cls.__subclasses__())
    return names


def root_cause(error: object) -> str:
    """One line for a step failure: the innermost error of a Dagster SerializableErrorInfo chain.

    A :class:`UserFacingError` gives its message alone; anything else (a bug) its class and the first
    line of its message.
    """
    inner = _innermost(error)
    message = str(getattr(inner, "message", "")).strip()
    cls_name = str(getattr(inner, "cls_name", "") or "")
    head, sep, rest = message.partition(": ")
    if sep and head.rsplit(".", 1)[-1] == cls_name:
        message = rest.strip()
    first = message.splitlines()[0] if message else ""
    if cls_name in user_facing_class_names():
        return first
    return f"{cls_name}: {first}" if cls_name else first


QUIET_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "CRITICAL"}}}}
DEBUG_RUN_CONFIG = {"loggers": {"console": {"config": {"log_level": "INFO"}}}}


@dataclass
class StepFailure:
    """One failed step: the asset, the partitions of its run, one line of reason, the full error."""

    asset: str
    partitions: str
    reason: str
    run_id: str
    detail: str

    def line(self) -> str:
        where = f"{self.asset} [{self.partitions}]" if self.partitions else self.asset
        reason = self.reason.removeprefix(f"{self.asset}: ")  # a stage's own message may name it already
        return f"{where}: {reason}"


@dataclass
class BuildReport:
    """What a build did: run ids, assets built, assets not built (failed or blocked), failures."""

    run_ids: list[str] = field(default_factory=list)
    built: list[str] = field(default_factory=list)
    not_built: list[str] = field(default_factory=list)
    failures: list[StepFailure] = field(default_factory=list)

    @property
    def success(self) -> bool:
        return not self.failures and not self.not_built


def _partition_label(run: PlannedRun) -> str:
    if not run.partition_keys:
        return ""
    return run.start if run.start == run.end else f"{run.start}..{run.end}"


def _closure(defs: Definitions, keys: Iterable[AssetKey], downstream: bool) -> set[AssetKey]:
    graph = defs.resolve_asset_graph()
    todo = list(keys)
    seen: set[AssetKey] = set()
    while todo:
        node = graph.get(todo.pop())
        for key in node.child_keys if downstream else node.parent_keys:
            if key not in seen:
                seen.add(key)
                todo.append(key)
    return seen


def downstream_closure(defs: Definitions, keys: Iterable[AssetKey]) -> set[AssetKey]:
    """The assets that depend on any of ``keys``, transitively (not including them)."""
    return _closure(defs, keys, downstream=True)


def upstream_closure(defs: Definitions, keys: Iterable[AssetKey]) -> set[AssetKey]:
    """The assets that ``keys`` depend on, transitively (not including them)."""
    return _closure(defs, keys, downstream=False)


class StageJobs:
    """The stage jobs of ``defs`` (``rad3d/stage_jobs.py``), through which every run is launched.

    The composition root registers them; definitions without them (tests, other code locations)
    get them added here, so a run is never the anonymous ``__ephemeral_asset_job__``.
    """

    def __init__(self, defs: Definitions) -> None:
        entries = entries_from_graph(defs.resolve_asset_graph())
        self.job_of = stage_job_names(entries)
        have = {job.name for job in defs.jobs or []}
        missing = [job for job in stage_jobs_for(entries) if job.name not in have]
        self.defs = Definitions.merge(defs, Definitions(jobs=missing)) if missing else defs

    def assign(self, run: PlannedRun) -> PlannedRun:
        """``run`` with its stage job named (a run holds the assets of one stage job)."""
        jobs = list(dict.fromkeys(self.job_of[key] for key in run.asset_keys))
        if len(jobs) != 1 or (run.job and run.job != jobs[0]):
            names = ", ".join(k.to_user_string() for k in run.asset_keys)
            raise BuildError(f"planned run {names}: its assets belong to stage jobs {', '.join(jobs)}, not one")
        run.job = jobs[0]
        return run

    def execute(
        self, job: str, asset_keys: Sequence[AssetKey], instance: DagsterInstance, tags: dict[str, str], *, debug: bool
    ) -> Any:
        """One in-process run of ``job`` over ``asset_keys`` (an ``ExecuteInProcessResult``), never raising."""
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return self.defs.resolve_job_def(job).execute_in_process(
                instance=instance,
                asset_selection=list(asset_keys),
                tags=tags,
                raise_on_error=False,
                run_config=DEBUG_RUN_CONFIG if debug else QUIET_RUN_CONFIG,
            )


def execute_plan(
    defs: Definitions,
    plan: list[PlannedRun],
    instance: DagsterInstance,
    echo: Callable[[str], None] = print,
    *,
    debug: bool = False,
) -> BuildReport:
    """Run the plan. A failed step does not stop the build: runs that do not depend on it still run.

    The report lists what was built and what was not; each failure has one line of reason (the
    traceback is in the run's event log, and on the terminal with ``debug``).
    """
    jobs = StageJobs(defs)
    report = BuildReport()
    blocked: dict[AssetKey, str] = {}  # asset -> the failed asset upstream of it
    for i, run in enumerate(plan, 1):
        waiting = [k for k in run.asset_keys if k in blocked]
        if waiting:
            causes = ", ".join(dict.fromkeys(blocked[k] for k in waiting))
            names = ", ".join(k.to_user_string() for k in waiting)
            report.not_built.extend(k.to_user_string() for k in waiting)
            runnable = [k for k in run.asset_keys if k not in blocked]
            if not runnable:
                echo(f"[{i}/{len(plan)}] {run.describe()}: not run (upstream {causes} failed)")
                continue
            echo(f"[{i}/{len(plan)}] not run: {names} (upstream {causes} failed)")
            run = PlannedRun(runnable, run.partitions_def, run.partition_keys, run.start, run.end, run.job)
        run = jobs.assign(run)
        echo(f"[{i}/{len(plan)}] {run.title()} ...")
        started = time.perf_counter()
        result = jobs.execute(run.job, run.asset_keys, instance, run.tags(), debug=debug)
        report.run_ids.append(result.run_id)
        materialized = {
            e.asset_key for e in result.all_events if e.event_type_value == "ASSET_MATERIALIZATION" and e.asset_key
        }
        for event in result.all_events:
            if not event.is_step_failure:
                continue
            error = event.step_failure_data.error
            report.failures.append(
                StepFailure(
                    asset=str(event.step_key),
                    partitions=_partition_label(run),
                    reason=root_cause(error) or "see the run in the UI",
                    run_id=result.run_id,
                    detail=error.to_string() if error is not None else "",
                )
            )
        missing = [k for k in run.asset_keys if k not in materialized]
        # A blocking check that failed with ERROR severity fails its step (Dagster) after the asset was
        # written: say which check and why, and stop what is downstream as for any failed asset.
        run_failures = {f.asset: f for f in report.failures if f.run_id == result.run_id}
        for check in _failed_checks(result):
            if not check.blocking or check.severity != AssetCheckSeverity.ERROR:
                continue
            name = check.asset_key.to_user_string()
            reason = f"blocking check {check.check_name} failed ({_check_detail(check)})"
            if name in run_failures:
                run_failures[name].reason = reason
            else:
                failure = StepFailure(name, _partition_label(run), reason, result.run_id, str(dict(check.metadata)))
                report.failures.append(failure)
                run_failures[name] = failure
        missing += [k for k in run.asset_keys if k.to_user_string() in run_failures and k not in missing]
        report.built.extend(k.to_user_string() for k in run.asset_keys if k in materialized)
        report.not_built.extend(k.to_user_string() for k in missing if k not in materialized)
        if missing:
            for key in missing:
                for child in downstream_closure(defs, [key]):
                    blocked.setdefault(child, key.to_user_string())
            echo(f"    failed after {time.perf_counter() - started:.1f} s (run {result.run_id[:8]})")
            continue
        for check in _failed_checks(result):
            echo(f"    check failed ({check.severity.value}): {check.asset_key.to_user_string()} {check.check_name}")
        echo(f"    done in {time.perf_counter() - started:.1f} s (run {result.run_id[:8]})")
    return report


def observe_sources(
    defs: Definitions,
    instance: DagsterInstance,
    echo: Callable[[str], None] = print,
    *,
    debug: bool = False,
    selected: Iterable[AssetKey] | None = None,
) -> str | None:
    """Observe the observable sources (the CT-RATE files, per shard) before building, so that every
    output's data version derives from the content it was built from: all of them, or those upstream
    of ``selected``, one run per stage job (``observe_<group>``). Returns the (last) run id."""
    graph = defs.resolve_asset_graph()
    wanted = upstream_closure(defs, selected) if selected is not None else set(graph.get_all_asset_keys())
    sources = sorted(
        (k for k in wanted if graph.has(k) and graph.get(k).is_observable), key=lambda k: k.to_user_string()
    )
    if not sources:
        return None
    jobs = StageJobs(defs)
    by_job: dict[str, list[AssetKey]] = {}
    for key in sources:
        by_job.setdefault(jobs.job_of[key], []).append(key)
    run_id: str | None = None
    for job, keys in by_job.items():
        names = ", ".join(k.to_user_string() for k in keys)
        tags = {"rad3d/stage": f"observe {names}", "rad3d/source": "rad3d build"}
        result = jobs.execute(job, keys, instance, tags, debug=debug)
        if not result.success:
            failures = [root_cause(e.step_failure_data.error) for e in result.all_events if e.is_step_failure]
            echo(f"    could not observe {names}: {'; '.join(failures) or 'see the run in the UI'}")
        run_id = result.run_id
    return run_id


def _failed_checks(result: Any) -> list[Any]:
    return [
        e.asset_check_evaluation_data
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION" and not e.asset_check_evaluation_data.passed
    ]


def _check_detail(check: Any) -> str:
    """The check's own figures, one line: ``violations=3, first=['...']``."""
    values = []
    for name, value in list(check.metadata.items())[:3]:
        text = str(getattr(value, "value", value)).replace("\n", " ")
        values.append(f"{name}={text[:120]}")
    return ", ".join(values) or "see the run in the UI"


def materialized_under(out: Path, key: AssetKey) -> bool:
    """Whether the Parquet IO manager holds any output of the asset under ``out``."""
    folder = Path(out) / "tables" / key.path[-1]
    return folder.is_dir() and any(folder.glob("*.parquet"))


def add_missing_upstream(defs: Definitions, selected: set[AssetKey], out: Path) -> list[AssetKey]:
    """Make-like: add every upstream asset a selected asset reads and that was never built under ``out``.

    Inputs that may be missing (``allow_missing_partitions``) and ordering-only deps do not count.
    Returns the added keys, in the order found; ``selected`` is updated in place.
    """
    graph = defs.resolve_asset_graph()
    added: list[AssetKey] = []
    todo = sorted(selected, key=lambda k: k.to_user_string())
    while todo:
        key = todo.pop()
        assets_def = defs.resolve_assets_def(key)
        for input_name, upstream in assets_def.keys_by_input_name.items():
            if upstream in selected or not graph.has(upstream) or not graph.get(upstream).is_materializable:
                continue
            input_def = assets_def.node_def.input_def_named(input_name)
            if input_def.dagster_type.is_nothing or (input_def.metadata or {}).get("allow_missing_partitions"):
                continue
            if materialized_under(out, upstream):
                continue
            selected.add(upstream)
            added.append(upstream)
            todo.append(upstream)
    return added

"""Runs say what they are: every run of ``rad3d build`` is launched through its stage job.

Read back from the DagsterInstance, as the UI's Runs page reads them: the job name is a stage job
(never ``__ephemeral_asset_job__``), the partition range tags are there, and the terminal printed
the same job and stage for each run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from dagster import (
    AssetKey,
    DagsterInstance,
    Definitions,
    MultiPartitionsDefinition,
    StaticPartitionsDefinition,
    asset,
)

from assets.partitions import shard_partitions
from rad3d.build import BuildError, PlannedRun, StageJobs, execute_plan, plan_runs
from rad3d.stage_jobs import entries_from_graph, keys_by_stage_job, stage_job_names
from tests.conftest import skip_or_fail

EPHEMERAL = "__ephemeral_asset_job__"
RANGE_START = "dagster/asset_partition_range_start"
RANGE_END = "dagster/asset_partition_range_end"

SHARDS = StaticPartitionsDefinition(["a", "b", "c"])
TASKS = StaticPartitionsDefinition(["1", "2", "3"])
GRID = MultiPartitionsDefinition({"task": TASKS, "shard": SHARDS})


# Nothing stored (``-> None``): Dagster's default IO manager refuses to store a partition range.
@asset(group_name="ingest", partitions_def=SHARDS)
def rows() -> None:
    return None


@asset(group_name="ingest")
def people() -> None:
    return None


@asset(group_name="qa", partitions_def=GRID, deps=[rows])
def pairs() -> None:
    return None


@asset(group_name="qa", partitions_def=TASKS, deps=[pairs])
def qa() -> None:  # named like its group: the job must not take the asset's (its op's) name
    return None


def _defs() -> Definitions:
    return Definitions(assets=[rows, people, pairs, qa])


def test_stage_job_names_per_group_and_partitions() -> None:
    graph = _defs().resolve_asset_graph()
    jobs = keys_by_stage_job(entries_from_graph(graph))
    assert {name: [k.to_user_string() for k in keys] for name, keys in jobs.items()} == {
        "build_ingest": ["people", "rows"],  # unpartitioned assets share the job of the group's one partitioning
        "build_qa_by_shard_task": ["pairs"],
        "build_qa_by_task": ["qa"],  # the name of the dimension with the same keys
    }


def test_the_project_definitions_load_with_their_stage_jobs(tmp_path: Path) -> None:
    """Dagster refuses a job named like an op (the asset ``closed_qa`` of group ``closed_qa``): the
    code location loads, and every executable asset is in exactly one stage job."""
    from rad3d.definitions import build_definitions

    defs = build_definitions(out_dir=str(tmp_path))
    names = {job.name for job in defs.resolve_all_job_defs()}
    graph = defs.resolve_asset_graph()
    job_of = stage_job_names(entries_from_graph(graph))
    assert set(job_of.values()) <= names
    assert {"build_ctrate", "build_closed_qa", "build_open_qa_by_shard_task", "observe_ctrate_files"} <= names
    for job in set(job_of.values()):
        selected = defs.resolve_job_def(job).asset_layer.executable_asset_keys
        assert selected == {k for k, name in job_of.items() if name == job}, job


def _runs(instance: DagsterInstance) -> list:  # type: ignore[type-arg]
    return [record.dagster_run for record in instance.get_run_records()]


def test_plan_runs_are_named_by_their_stage_job_with_their_range() -> None:
    """Definitions without the stage jobs (tests, other code locations) get them: no ephemeral job."""
    defs = _defs()
    instance = DagsterInstance.ephemeral()
    keep = {"pairs": lambda p: p.endswith("|2"), "qa": lambda p: p == "2"}
    plan = plan_runs(defs, set(graph_keys(defs)), lambda key, p: keep.get(key.to_user_string(), bool)(p))
    lines: list[str] = []
    report = execute_plan(defs, plan, instance, lines.append)
    assert report.success, report.failures
    runs = sorted(_runs(instance), key=lambda run: run.tags["rad3d/stage"])
    assert [(r.job_name, r.tags["rad3d/stage"], r.tags.get(RANGE_START), r.tags.get(RANGE_END)) for r in runs] == [
        ("build_qa_by_shard_task", "pairs [a|2..c|2]", "a|2", "c|2"),
        ("build_ingest", "people", None, None),
        ("build_qa_by_task", "qa [2]", "2", "2"),
        ("build_ingest", "rows [a..c]", "a", "c"),
    ]
    # The terminal line of each run is what the Runs page shows: the job, then the stage tag.
    started = [re.sub(r"^\[\d+/\d+\] (.*) \.\.\.$", r"\1", line) for line in lines if line.endswith(" ...")]
    assert sorted(started) == sorted(f"{r.job_name}: {r.tags['rad3d/stage']}" for r in runs)
    # The range run wrote every partition of its range, no other (the multi-partition keys by dimension).
    materialized = instance.get_materialized_partitions(AssetKey("pairs"))
    assert {GRID.get_partition_key_from_str(k).keys_by_dimension["task"] for k in materialized} == {"2"}
    assert len(materialized) == 3


def graph_keys(defs: Definitions) -> set[AssetKey]:
    return set(defs.resolve_asset_graph().materializable_asset_keys)


def test_a_run_of_assets_of_two_stage_jobs_is_refused() -> None:
    jobs = StageJobs(_defs())
    mixed = PlannedRun([AssetKey("people"), AssetKey("qa")], None)
    with pytest.raises(BuildError, match="people, qa: its assets belong to stage jobs build_ingest, build_qa_by_task"):
        jobs.assign(mixed)
    with pytest.raises(BuildError, match="not one"):
        jobs.assign(PlannedRun([AssetKey("people")], None, job="build_qa_by_task"))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rad3d.cli import main

    root = tmp_path_factory.mktemp("ctrate") / "ct"
    assert main(["sample-data", "--out", str(root), "--patients", "6", "--seed", "3", "--volumes", "none"]) == 0
    return root


@pytest.mark.slow
def test_rad3d_build_runs_are_stage_jobs_with_their_partition_ranges(
    tmp_path: Path, sample: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A small real build: the closed-ended Task 4 and the Task 3 candidates (task x shard keys)."""
    from rad3d.cli import main
    from rad3d.definitions import build_definitions

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path / "home"))
    for name in ("RAD3D_SHARDS", "RAD3D_DEBUG", "RAD3D_CTRATE_ROOT"):
        monkeypatch.delenv(name, raising=False)
    out = tmp_path / "out"
    argv = ["build", "--ctrate-root", str(sample), "--out", str(out), "--quiet", "--llm", "rules"]
    code = main([*argv, "--select", "key:closed_qa or key:qa_candidates", "--tasks", "3,4"])
    printed = capsys.readouterr()
    assert code == 0, printed.out + printed.err

    instance = DagsterInstance.get()
    runs = _runs(instance)
    if not runs:
        skip_or_fail("the build recorded no run in DAGSTER_HOME")
    defs = build_definitions(ctrate_root=str(sample), out_dir=str(out))
    stage_jobs = set(stage_job_names(entries_from_graph(defs.resolve_asset_graph())).values())
    assert EPHEMERAL not in {run.job_name for run in runs}
    assert {run.job_name for run in runs} <= stage_jobs
    by_stage = {run.tags["rad3d/stage"]: run for run in runs}
    shards = list(shard_partitions.get_partition_keys())  # the build's shards (this process's setting)
    expected = {
        "closed_qa [4]": ("build_closed_qa", "4", "4"),
        f"qa_candidates [{shards[0]}|3..{shards[-1]}|3]": (
            "build_open_qa_by_shard_task",
            f"{shards[0]}|3",
            f"{shards[-1]}|3",
        ),
        f"report_sentences [{shards[0]}..{shards[-1]}]": ("build_sentences", shards[0], shards[-1]),
    }
    for stage, (job, start, end) in expected.items():
        assert stage in by_stage, sorted(by_stage)
        run = by_stage[stage]
        assert (run.job_name, run.tags.get(RANGE_START), run.tags.get(RANGE_END)) == (job, start, end), stage
    observe = [run for run in runs if run.job_name == "observe_ctrate_files"]
    assert len(observe) == 1 and observe[0].tags["rad3d/stage"].startswith("observe ctrate_")
    # Every partitioned run carries its range; the terminal printed each run as the Runs page names it.
    for run in runs:
        if run.tags["rad3d/stage"].endswith("]"):
            assert RANGE_START in run.tags and RANGE_END in run.tags, run.tags
        if run.job_name.startswith("build_"):
            assert f"] {run.job_name}: {run.tags['rad3d/stage']} ..." in printed.out, printed.out
    # --tasks 3 kept the task-3 keys of the task x shard asset, every shard (parsed by Dagster).
    pdef = defs.resolve_asset_graph().get(AssetKey("qa_candidates")).partitions_def
    assert isinstance(pdef, MultiPartitionsDefinition)
    keys = instance.get_materialized_partitions(AssetKey("qa_candidates"))
    dims = [pdef.get_partition_key_from_str(k).keys_by_dimension for k in keys]
    assert {d["task"] for d in dims} == {"3"} and sorted(d["shard"] for d in dims) == shards

"""``rad3d ops``: operations on a production instance (pool slots, required settings).

    rad3d ops check [--file deploy/celery_worker.yaml ...]   # every variable the instance file (and FILEs) want
    rad3d ops slots                                          # pool slots held, by which run and step, run status
    rad3d ops slots --free                                   # free the slots of runs that have ended
    rad3d ops slots --free --run RUN_ID                      # free one run's slots (ended runs only)

The instance is ``$DAGSTER_HOME/dagster.yaml``. A slot is held by a step of a run; a run that ended
(success, failure, canceled) should hold none, but a step lost with its worker never gives its slot
back, and two such losses block a pool of two. Run monitoring frees them after
``free_slots_after_run_end_seconds``; ``--free`` does it at once. A slot of a run still in progress
is never freed here (terminate the run first). A missing variable or instance file is one line on
stderr and exit status 2.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENDED = {"SUCCESS", "FAILURE", "CANCELED"}


class OpsError(Exception):
    """A setup mistake: one line, exit status 2."""


def env_references(node: Any, where: str = "") -> Iterator[tuple[str, str]]:
    """(variable, config path) for every ``{env: NAME}`` in a parsed YAML document."""
    if isinstance(node, dict):
        if set(node) == {"env"} and isinstance(node["env"], str):
            yield node["env"], where
            return
        for key, value in node.items():
            yield from env_references(value, f"{where}.{key}" if where else str(key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            yield from env_references(value, f"{where}[{index}]")


def missing_settings(files: list[Path], env: Mapping[str, str]) -> list[str]:
    """One line per variable a file wants that is not set (or an unreadable file)."""
    import yaml  # only here: every `rad3d` call imports this module (rad3d evaluate's start-up counts)

    lines = []
    for path in files:
        try:
            document = yaml.safe_load(path.read_text())
        except OSError as exc:
            lines.append(f"{path}: cannot read ({exc.strerror})")
            continue
        except yaml.YAMLError as exc:
            lines.append(f"{path}: not YAML ({str(exc).splitlines()[0]})")
            continue
        for name, where in env_references(document):
            if not env.get(name):
                lines.append(f"{name} is not set; {path} wants it (at {where})")
    return lines


def instance_file() -> Path:
    home = os.environ.get("DAGSTER_HOME")
    if not home:
        raise OpsError("DAGSTER_HOME is not set; rad3d ops works on the instance in $DAGSTER_HOME/dagster.yaml")
    path = Path(home) / "dagster.yaml"
    if not path.is_file():
        raise OpsError(f"{path} not found: copy deploy/dagster.production.yaml there (docs/operations.md)")
    return path


def check_settings(extra: list[Path]) -> None:
    lines = missing_settings([instance_file(), *extra], os.environ)
    if lines:
        raise OpsError(lines[0] + (f" (and {len(lines) - 1} more: rad3d ops check)" if len(lines) > 1 else ""))


@dataclass(frozen=True)
class HeldSlot:
    pool: str
    run_id: str
    step_key: str
    run_status: str  # the run's status, or NOT_FOUND when the run was deleted


def held_slots(instance: Any) -> list[HeldSlot]:
    """Every claimed slot of every pool, with the status of the run that holds it."""
    storage = instance.event_log_storage
    held = []
    statuses: dict[str, str] = {}
    for pool in sorted(storage.get_concurrency_keys()):
        for slot in storage.get_concurrency_info(pool).claimed_slots:
            if slot.run_id not in statuses:
                run = instance.get_run_by_id(slot.run_id)
                statuses[slot.run_id] = "NOT_FOUND" if run is None else run.status.value
            held.append(HeldSlot(pool, slot.run_id, slot.step_key, statuses[slot.run_id]))
    return held


def pool_summary(instance: Any) -> list[tuple[str, int, int, int]]:
    """(pool, limit, slots held, steps waiting) per pool."""
    storage = instance.event_log_storage
    rows = []
    for pool in sorted(storage.get_concurrency_keys()):
        info = storage.get_concurrency_info(pool)
        rows.append((pool, info.slot_count, len(info.claimed_slots), info.pending_step_count))
    return rows


def free_ended(instance: Any, run_id: str | None = None) -> list[str]:
    """Free the slots of ended runs (or of ``run_id``, which must have ended); the run ids freed."""
    held = held_slots(instance)
    if run_id is not None:
        mine = [s for s in held if s.run_id == run_id]
        if mine and mine[0].run_status not in ENDED | {"NOT_FOUND"}:
            raise OpsError(f"run {run_id} is {mine[0].run_status}: terminate it first (dagster run delete/UI)")
        held = mine
    freed = sorted({s.run_id for s in held if s.run_status in ENDED | {"NOT_FOUND"}})
    for rid in freed:
        instance.event_log_storage.free_concurrency_slots_for_run(rid)
    return freed


def cmd_check(args: argparse.Namespace) -> int:
    lines = missing_settings([instance_file(), *[Path(f) for f in args.file]], os.environ)
    for line in lines:
        print(line, file=sys.stderr)
    if not lines:
        print("every variable the files want is set")
    return 2 if lines else 0


def cmd_slots(args: argparse.Namespace) -> int:
    check_settings([])
    from dagster import DagsterInstance

    with DagsterInstance.get() as instance:
        if args.free:
            freed = free_ended(instance, args.run)
            print(f"freed the slots of {len(freed)} ended run(s)" + (": " + ", ".join(freed) if freed else ""))
        for pool, limit, taken, waiting in pool_summary(instance):
            print(f"pool {pool}: {taken} of {limit} slots held, {waiting} step(s) waiting")
        for slot in held_slots(instance):
            stuck = "  <- run ended: rad3d ops slots --free" if slot.run_status in ENDED | {"NOT_FOUND"} else ""
            print(f"  {slot.pool}  run {slot.run_id}  step {slot.step_key}  {slot.run_status}{stuck}")
    return 0


def run(args: argparse.Namespace) -> int:
    try:
        return int(args.ops_func(args))
    except OpsError as exc:
        print(f"rad3d ops: {exc}", file=sys.stderr)
        return 2


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "ops", help="production operations: pool slots held and freed, settings the instance file wants"
    )
    ops_sub = parser.add_subparsers(dest="ops_command", required=True)
    check = ops_sub.add_parser("check", help="name every variable $DAGSTER_HOME/dagster.yaml (and FILEs) want unset")
    check.add_argument("--file", action="append", default=[], help="another YAML file to check (worker config)")
    check.set_defaults(ops_func=cmd_check)
    slots = ops_sub.add_parser("slots", help="pool slots held and by which runs; --free those of ended runs")
    slots.add_argument("--free", action="store_true", help="free the slots of runs that have ended")
    slots.add_argument("--run", default=None, help="with --free: only this run's slots")
    slots.set_defaults(ops_func=cmd_slots)
    parser.set_defaults(func=run)
    return parser

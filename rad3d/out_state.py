"""State of an output folder between builds: one build at a time, and no outputs that no longer belong."""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from dagster import Definitions, MultiPartitionsDefinition, PartitionsDefinition

from rad3d.preflight import UsageError

LOCK_FILE = ".rad3d-build.lock"
RECORD_FILE = Path(".rad3d") / "build.json"
LOCATION_NAME = "rad3d"  # the code location's one name: workspace.yaml, `rad3d ui`, pyproject's [tool.dagster]
STALE_FOLDER = "stale"


@contextlib.contextmanager
def build_lock(out: Path, command: str) -> Iterator[None]:
    """Hold ``<out>/.rad3d-build.lock`` for the build; a second build on the same folder exits 2 naming the holder."""
    path = out / LOCK_FILE
    handle = open(path, "a+")  # noqa: SIM115 - held for the whole build
    try:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            try:
                holder = json.loads(handle.read() or "{}")
            except ValueError:
                holder = {}
            since = holder.get("started", "an unknown time")
            raise UsageError(
                f"--out {out}: another build is running there (pid {holder.get('pid', '?')}, started {since}); "
                "wait for it to end or use another --out"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(
            json.dumps({"pid": os.getpid(), "started": time.strftime("%Y-%m-%d %H:%M:%S"), "command": command})
        )
        handle.flush()
        yield
    finally:
        handle.close()  # releases the lock


def _has_dimension(pdef: PartitionsDefinition, dimension: PartitionsDefinition) -> bool:
    if pdef is dimension:
        return True
    if isinstance(pdef, MultiPartitionsDefinition):
        return any(dim.partitions_def is dimension for dim in pdef.partitions_defs)
    return False


def move_stale_partition_tables(
    defs: Definitions, out: Path, dimension: PartitionsDefinition, dynamic_partitions_store: Any = None
) -> list[Path]:
    """Move aside the tables of partitions that no longer exist (after a change of the shard count).

    For every asset whose partitions include ``dimension``, a ``<out>/tables/<asset>/<key>.parquet``
    whose key is not a partition of the asset now goes to ``<out>/stale/<time>/tables/<asset>/``.
    Returns the new paths of the moved files. Dynamic dimensions resolve in ``dynamic_partitions_store``.
    """
    graph = defs.resolve_asset_graph()
    moved: list[Path] = []
    stamp = time.strftime("%Y%m%d-%H%M%S")
    for key in graph.materializable_asset_keys:
        pdef = graph.get(key).partitions_def
        if pdef is None or not _has_dimension(pdef, dimension):
            continue
        folder = out / "tables" / key.path[-1]
        if not folder.is_dir():
            continue
        current = set(pdef.get_partition_keys(dynamic_partitions_store=dynamic_partitions_store))
        for file in sorted(folder.glob("*.parquet")):
            if file.stem in current:
                continue
            target = out / STALE_FOLDER / stamp / "tables" / key.path[-1] / file.name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(file), target)
            moved.append(target)
    return moved


def write_build_record(out: Path, **settings: object) -> Path:
    """``<out>/.rad3d/build.json``: what the last build used, so that ``rad3d ui --out`` serves the same."""
    path = out / RECORD_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {key: (str(value) if isinstance(value, Path) else value) for key, value in settings.items()}
    record["written"] = time.strftime("%Y-%m-%d %H:%M:%S")
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2) + "\n")
    os.replace(tmp, path)
    return path


def read_build_record(out: Path) -> dict[str, object]:
    path = out / RECORD_FILE
    try:
        loaded = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return loaded if isinstance(loaded, dict) else {}


def ui_workspace(dagster_home: Path) -> Path:
    """A workspace file naming the code location as workspace.yaml does (one name everywhere)."""
    path = dagster_home / "workspace.yaml"
    text = (
        "load_from:\n  - python_module:\n      module_name: rad3d.definitions\n      attribute: defs\n"
        f"      location_name: {LOCATION_NAME}\n"
    )
    if not path.exists() or path.read_text() != text:
        path.write_text(text)
    return path

""" "Materialize all" from the Dagster UI against `rad3d build`, on the same sample data, same machine.

What a user does: `rad3d sample-data`, `rad3d build` (timed: the reference), then `rad3d ui --out`
(webserver and daemon on that build's DAGSTER_HOME and workspace) and the asset graph's
"Materialize all" button. The button is replayed as the UI sends it (dagster-webserver 1.13's
LaunchAssetChoosePartitionsDialog): every materializable asset; when their partitions differ, the
root partitioned assets' shared partitions as the anchor (``partitionNames``, every key: the
dialog's default), else ``allPartitions``; one ``launchPartitionBackfill`` mutation. The script
waits for the backfill, checks that it and every run of it succeeded and every targeted partition
was materialized, that the release CSVs are byte-identical to the build's, then prints both
times, the ratio and each run of the backfill.

    .venv/bin/python benchmarks/ui_materialize_all.py                  # 40 patients, as scripts/demo.sh
    .venv/bin/python benchmarks/ui_materialize_all.py --patients 10 --max-ratio 2

Exit 0 when everything succeeded and matched (and the ratio is within --max-ratio when given);
1 otherwise, with one line saying what differed.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]

ASSET_NODES = """{ assetNodes {
  assetKey { path } isMaterializable isObservable isExecutable
  dependencyKeys { path }
  partitionDefinition { description dimensionTypes { name type dynamicPartitionsDefinitionName } }
  partitionKeys
} }"""

LAUNCH = """mutation LaunchPartitionBackfill($backfillParams: LaunchBackfillParams!) {
  launchPartitionBackfill(backfillParams: $backfillParams) {
    __typename
    ... on LaunchBackfillSuccess { backfillId }
    ... on PartitionSetNotFoundError { message }
    ... on PartitionKeysNotFoundError { message }
    ... on UnauthorizedError { message }
    ... on PythonError { message stack }
  }
}"""

BACKFILL = """query Backfill($id: String!) { partitionBackfillOrError(backfillId: $id) {
  __typename
  ... on PartitionBackfill {
    status timestamp endTimestamp
    error { message }
    assetBackfillData { assetBackfillStatuses {
      ... on AssetPartitionsStatusCounts { assetKey { path } numPartitionsTargeted numPartitionsInProgress
        numPartitionsMaterialized numPartitionsFailed }
      ... on UnpartitionedAssetStatus { assetKey { path } inProgress materialized failed }
    } }
  }
  ... on PythonError { message }
} }"""

RUNS = """query Runs($id: String!) { runsOrError(filter: {tags: [{key: "dagster/backfill", value: $id}]}) {
  ... on Runs { results { runId status creationTime startTime endTime
    assetSelection { path } tags { key value } } }
} }"""

LOCATION = """{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus
  locationOrLoadError { __typename ... on PythonError { message } } } } } }"""

DONE = {"COMPLETED", "COMPLETED_SUCCESS", "COMPLETED_FAILED", "FAILED", "CANCELED"}


class BenchmarkError(Exception):
    """One line saying what went wrong."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def graphql(port: int, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=60) as response:
        answer = dict(json.loads(response.read()))
    if answer.get("errors"):
        raise BenchmarkError(f"GraphQL error: {answer['errors'][0].get('message')}")
    return dict(answer["data"])


def rad3d(*args: str, env: dict[str, str], log: Path) -> float:
    """Run the `rad3d` command line; its seconds. Its output goes to ``log``; a failure raises."""
    start = time.perf_counter()
    with log.open("w") as out:
        done = subprocess.run([sys.executable, "-m", "rad3d.cli", *args], stdout=out, stderr=subprocess.STDOUT, env=env)
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        tail = log.read_text()[-1500:]
        raise BenchmarkError(f"rad3d {args[0]} exited {done.returncode} (log {log}): {tail.strip().splitlines()[-1:]}")
    return seconds


def release_digest(out: Path) -> dict[str, str]:
    """sha256 of every release CSV under ``<out>/3DRAD``, by path relative to it."""
    root = out / "3DRAD"
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.csv"))}


@contextlib.contextmanager
def rad3d_ui(out: Path, env: dict[str, str], log_path: Path, timeout_s: float) -> Iterator[int]:
    """`rad3d ui --out OUT` (dagster dev: webserver and daemon) on a free port; yields it once assets are served."""
    port = free_port()
    with log_path.open("w") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rad3d.cli", "ui", "--out", str(out), "--port", str(port)],
            cwd=log_path.parent,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise BenchmarkError(f"rad3d ui exited {proc.returncode} (log {log_path})")
            if time.monotonic() > deadline:
                raise BenchmarkError(f"rad3d ui did not serve the code location in {timeout_s:.0f} s (log {log_path})")
            with contextlib.suppress(OSError):
                status = graphql(port, LOCATION)["workspaceOrError"]
                entries = status.get("locationEntries") or []
                if entries and entries[0]["loadStatus"] == "LOADED":
                    loaded = entries[0]["locationOrLoadError"]
                    if loaded["__typename"] == "PythonError":
                        message = loaded["message"].strip().splitlines()[-1]
                        raise BenchmarkError(f"the code location did not load: {message} (log {log_path})")
                    break
            time.sleep(1)
        yield port
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=20)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=20)


def wait_for_daemons(port: int, wanted: set[str], timeout_s: float) -> None:
    query = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"
    deadline = time.monotonic() + timeout_s
    while True:
        statuses = graphql(port, query)["instance"]["daemonHealth"]["allDaemonStatuses"]
        healthy = {s["daemonType"] for s in statuses if s["healthy"]}
        if wanted <= healthy:
            return
        if time.monotonic() > deadline:
            raise BenchmarkError(f"daemons not healthy after {timeout_s:.0f} s: {sorted(wanted - healthy)}")
        time.sleep(1)


def _same_partitions(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """The UI's test: same description and same dimension types (JSON-equal)."""
    return bool(a["description"] == b["description"] and a["dimensionTypes"] == b["dimensionTypes"])


def materialize_all_params(nodes: list[dict[str, Any]]) -> dict[str, Any]:
    """The ``backfillParams`` the asset graph's "Materialize all" sends for these asset nodes.

    Mirrors the dagster-webserver 1.13 dialog: materializable assets; if every partitioned one shares
    one partitions definition the whole selection is one set of partitions; otherwise the root
    partitioned assets (no dependency inside the selection), sorted by key, must share theirs: the
    first is the anchor and its keys (all selected by default) are sent as ``partitionNames``; when
    the roots differ the dialog sends ``allPartitions``.
    """
    assets = [n for n in nodes if n["isMaterializable"] and n["isExecutable"] and not n["isObservable"]]
    selection = [{"path": n["assetKey"]["path"]} for n in assets]
    partitioned = [n for n in assets if n["partitionDefinition"]]
    params: dict[str, Any] = {"tags": [], "assetSelection": selection}
    if not partitioned:
        raise BenchmarkError("no partitioned asset: the UI would launch one run, not a backfill")
    first = partitioned[0]["partitionDefinition"]
    keys = {json.dumps(n["assetKey"]["path"]) for n in assets}
    roots = sorted(
        (n for n in partitioned if not keys.intersection(json.dumps(d["path"]) for d in n["dependencyKeys"])),
        key=lambda n: "/".join(n["assetKey"]["path"]),
    )
    if all(_same_partitions(n["partitionDefinition"], first) for n in partitioned):
        anchor: dict[str, Any] | None = partitioned[0]
    elif roots and all(_same_partitions(n["partitionDefinition"], roots[0]["partitionDefinition"]) for n in roots):
        anchor = roots[0]
    else:
        anchor = None
    if anchor is None:
        params["allPartitions"] = True
    else:
        params["partitionNames"] = list(anchor["partitionKeys"])
        params["fromFailure"] = False
    return params


def wait_for_backfill(port: int, backfill_id: str, timeout_s: float) -> dict[str, Any]:
    deadline = time.monotonic() + timeout_s
    while True:
        backfill = graphql(port, BACKFILL, {"id": backfill_id})["partitionBackfillOrError"]
        if backfill["__typename"] != "PartitionBackfill":
            raise BenchmarkError(f"backfill {backfill_id}: {backfill.get('message')}")
        if backfill["status"] in DONE:
            return dict(backfill)
        if time.monotonic() > deadline:
            raise BenchmarkError(f"backfill {backfill_id} still {backfill['status']} after {timeout_s:.0f} s")
        time.sleep(1)


def check_backfill(backfill: dict[str, Any], runs: list[dict[str, Any]]) -> list[str]:
    """What is wrong with a finished backfill: its status, failed runs, partitions not materialized."""
    problems = []
    if backfill["status"] not in {"COMPLETED", "COMPLETED_SUCCESS"}:
        error = (backfill.get("error") or {}).get("message", "")
        problems.append(f"backfill status {backfill['status']} {error.strip()[:300]}")
    for run in runs:
        if run["status"] != "SUCCESS":
            problems.append(f"run {run['runId'][:8]} ({stage(run)}) {run['status']}")
    statuses = (backfill.get("assetBackfillData") or {}).get("assetBackfillStatuses") or []
    for status in statuses:
        name = "/".join(status["assetKey"]["path"])
        if "numPartitionsTargeted" in status:
            if status["numPartitionsMaterialized"] != status["numPartitionsTargeted"]:
                problems.append(
                    f"{name}: {status['numPartitionsMaterialized']} of {status['numPartitionsTargeted']} "
                    f"partitions materialized ({status['numPartitionsFailed']} failed)"
                )
        elif not status["materialized"]:
            problems.append(f"{name}: not materialized")
    if not statuses:
        problems.append("the backfill reports no asset status")
    return problems


def stage(run: dict[str, Any]) -> str:
    tags = {t["key"]: t["value"] for t in run["tags"]}
    names = ", ".join("/".join(a["path"]) for a in run.get("assetSelection") or [])
    start, end = tags.get("dagster/asset_partition_range_start"), tags.get("dagster/asset_partition_range_end")
    partition = tags.get("dagster/partition")
    if start is not None:
        return f"{names} [{start}..{end}]"
    if partition is not None:
        return f"{names} [{partition}]"
    return names


def import_seconds(env: dict[str, str]) -> float:
    """What every run process pays before it starts: ``import rad3d.definitions`` in a fresh interpreter."""
    code = "import time; t = time.perf_counter(); import rad3d.definitions; print(time.perf_counter() - t)"
    done = subprocess.run(
        [sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, env=env, cwd=REPO, check=True
    )
    return float(done.stdout.strip().splitlines()[-1])


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--patients", type=int, default=40, help="sample patients (default 40, as scripts/demo.sh)")
    parser.add_argument("--work", help="folder to build in (default a temporary one, removed afterwards)")
    parser.add_argument("--timeout", type=float, default=1800, help="seconds allowed for the backfill")
    parser.add_argument("--max-ratio", type=float, help="exit 1 when UI / build exceeds this")
    parser.add_argument("--json", help="also write the figures to this JSON file")
    parser.add_argument(
        "--reuse-build",
        action="store_true",
        help="with --work: skip sample data and build when --work holds a finished one (its time is reused)",
    )
    parser.add_argument(
        "--run-config",
        help="experiment: JSON run config sent with the backfill (the button sends none), e.g. "
        '\'{"execution": {"config": {"in_process": {}}}}\'',
    )
    args = parser.parse_args(argv)
    if args.reuse_build and not args.work:
        parser.error("--reuse-build needs --work")
    # SIGTERM ends the script like Ctrl-C, so that the UI's process group is stopped on the way out.
    signal.signal(signal.SIGTERM, _interrupt)

    work = Path(args.work) if args.work else Path(tempfile.mkdtemp(prefix="rad3d-ui-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAD3D_") and k != "DAGSTER_HOME"}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    ct, out = work / "sample_ctrate", work / "data"
    code = 1
    try:
        code = run(args, work, ct, out, env)
        return code
    finally:
        if not args.work and code == 0:
            shutil.rmtree(work, ignore_errors=True)
        elif code != 0:
            print(f"logs kept in {work}", file=sys.stderr)


def run(args: argparse.Namespace, work: Path, ct: Path, out: Path, env: dict[str, str]) -> int:
    try:
        print(f"work folder {work}", flush=True)
        print(f"import rad3d.definitions in a fresh process: {import_seconds(env):.2f} s", flush=True)
        timing = work / "build_seconds.json"
        if args.reuse_build and timing.is_file():
            build_s = float(json.loads(timing.read_text())["build_s"])
            print(f"rad3d build ({args.patients} patients): {build_s:.1f} s (reused from {timing})", flush=True)
            reference = json.loads(timing.read_text())["release"]
        else:
            rad3d("sample-data", "--out", str(ct), "--patients", str(args.patients), env=env, log=work / "sample.log")
            build_s = rad3d(
                "build", "--ctrate-root", str(ct), "--out", str(out), "--quiet", env=env, log=work / "build.log"
            )
            print(f"rad3d build ({args.patients} patients): {build_s:.1f} s", flush=True)
            reference = release_digest(out)
            timing.write_text(json.dumps({"build_s": build_s, "release": reference}, indent=1) + "\n")
        if not reference:
            raise BenchmarkError(f"the build wrote no release CSV under {out / '3DRAD'}")

        with rad3d_ui(out, env, work / "ui.log", timeout_s=300) as port:
            wait_for_daemons(port, {"BACKFILL", "QUEUED_RUN_COORDINATOR"}, timeout_s=120)
            params = materialize_all_params(graphql(port, ASSET_NODES)["assetNodes"])
            if args.run_config:
                params["runConfigData"] = json.loads(args.run_config)
                print(f"experiment: run config {args.run_config}", flush=True)
            how = "allPartitions" if params.get("allPartitions") else f"{len(params['partitionNames'])} anchor keys"
            print(f"Materialize all: {len(params['assetSelection'])} assets, {how}", flush=True)
            start, launched_at = time.perf_counter(), time.time()
            launched = graphql(port, LAUNCH, {"backfillParams": params})["launchPartitionBackfill"]
            if launched["__typename"] != "LaunchBackfillSuccess":
                raise BenchmarkError(f"launchPartitionBackfill: {launched['__typename']} {launched.get('message')}")
            backfill_id = launched["backfillId"]
            backfill = wait_for_backfill(port, backfill_id, args.timeout)
            ui_s = time.perf_counter() - start
            runs = graphql(port, RUNS, {"id": backfill_id})["runsOrError"]["results"]
        runs.sort(key=lambda r: r["creationTime"])
        problems = check_backfill(backfill, runs)
        after = release_digest(out)
        rewritten = [p for p in (out / "3DRAD").rglob("*.csv") if p.stat().st_mtime >= launched_at]
        if len(rewritten) != len(after):
            problems.append(f"the backfill rewrote {len(rewritten)} of {len(after)} release CSVs")
        if after != reference:
            changed = sorted(k for k in set(after) | set(reference) if after.get(k) != reference.get(k))
            problems.append(f"{len(changed)} release CSV(s) differ from the build's, e.g. {changed[:3]}")

        ratio = ui_s / build_s
        print(f"\nbackfill {backfill_id}: {backfill['status']}, {len(runs)} run(s)")
        origin = min((r["creationTime"] for r in runs), default=0.0)
        for run in runs:
            began, ended = run.get("startTime"), run.get("endTime")
            took = f"{ended - began:6.1f} s" if began and ended else "     -  "
            queued = f"+{began - origin:6.1f} s" if began else "        "
            print(f"  {run['runId'][:8]} {run['status']:<8} started {queued}  ran {took}  {stage(run)}")
        busy = sum((r["endTime"] or 0) - (r["startTime"] or 0) for r in runs if r.get("startTime"))
        print(f"\nrad3d build:              {build_s:7.1f} s")
        print(f"UI Materialize all:       {ui_s:7.1f} s  ({len(runs)} runs, {busy:.1f} s inside runs)")
        print(f"ratio UI / build:         {ratio:7.2f}")
        print(f"release CSVs identical:   {after == reference} ({len(reference)} files)")
        if args.json:
            figures = {
                "patients": args.patients,
                "build_s": build_s,
                "ui_s": ui_s,
                "ratio": ratio,
                "runs": len(runs),
                "run_seconds": busy,
                "release_identical": after == reference,
                "problems": problems,
            }
            Path(args.json).write_text(json.dumps(figures, indent=2) + "\n")
        if problems:
            print(f"ui_materialize_all: FAILED: {problems[0]} ({len(problems)} problem(s))", file=sys.stderr)
            for problem in problems[1:]:
                print(f"  {problem}", file=sys.stderr)
            return 1
        if args.max_ratio is not None and ratio > args.max_ratio:
            print(f"ui_materialize_all: ratio {ratio:.2f} exceeds --max-ratio {args.max_ratio}", file=sys.stderr)
            return 1
        return 0
    except BenchmarkError as exc:
        print(f"ui_materialize_all: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""Real services for the production-profile tests: PostgreSQL and Redis on loopback, in temp folders.

PostgreSQL 15 comes with the machine image (or ``apt-get install postgresql``); Redis from
Debian's ``redis-server``. Each helper skips the test with the reason when its binary is absent.
"""

from __future__ import annotations

import contextlib
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
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import skip_or_fail


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _pg_bin(name: str) -> str | None:
    found = shutil.which(name)
    if found:
        return found
    for version in ("17", "16", "15"):
        candidate = Path(f"/usr/lib/postgresql/{version}/bin/{name}")
        if candidate.exists():
            return str(candidate)
    return None


def _as_postgres(cmd: list[str]) -> list[str]:
    """initdb refuses to run as root: run as the postgres user when we are root."""
    if os.geteuid() == 0 and shutil.which("runuser"):
        return ["runuser", "-u", "postgres", "--", *cmd]
    return cmd


@contextmanager
def postgres_server() -> Iterator[dict[str, str]]:
    """A throwaway PostgreSQL on 127.0.0.1; yields DAGSTER_PG_* variables.

    Its folder is a fresh one under the system temp folder (pytest's own is private to root, and
    the server runs as the postgres user when the tests run as root).
    """
    initdb, pg_ctl = _pg_bin("initdb"), _pg_bin("pg_ctl")
    if not initdb or not pg_ctl:
        skip_or_fail("PostgreSQL server binaries not found (apt-get install postgresql)")
    tmp = Path(tempfile.mkdtemp(prefix="rad3d-pg-"))
    data = tmp / "pgdata"
    sock = tmp / "pgsock"
    for folder in (data, sock):
        folder.mkdir(parents=True, exist_ok=True)
    if os.geteuid() == 0:
        for folder in (tmp, data, sock):
            shutil.chown(folder, "postgres", "postgres")
    subprocess.run(
        _as_postgres([initdb, "-D", str(data), "-A", "trust", "-U", "postgres"]), check=True, capture_output=True
    )
    port = free_port()
    options = f"-p {port} -k {sock} -c listen_addresses=127.0.0.1 -c fsync=off"
    subprocess.run(
        _as_postgres([pg_ctl, "-D", str(data), "-o", options, "-w", "-l", str(tmp / "pg.log"), "start"]),
        check=True,
        capture_output=True,
    )
    try:
        createdb = _pg_bin("createdb") or "createdb"
        subprocess.run([createdb, "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", "dagster"], check=True)
        yield {
            "DAGSTER_PG_HOST": "127.0.0.1",
            "DAGSTER_PG_PORT": str(port),
            "DAGSTER_PG_DB": "dagster",
            "DAGSTER_PG_USER": "postgres",
            "DAGSTER_PG_PASSWORD": "unused-with-trust-auth",
        }
    finally:
        subprocess.run(_as_postgres([pg_ctl, "-D", str(data), "-m", "immediate", "stop"]), capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)


@contextmanager
def redis_server() -> Iterator[str]:
    """A throwaway Redis on 127.0.0.1; yields its URL."""
    binary = shutil.which("redis-server")
    if not binary:
        skip_or_fail("redis-server not found (apt-get install redis-server)")
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=1):
                    break
            except OSError:
                time.sleep(0.1)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def graphql(port: int, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST a GraphQL query to a local dagster-webserver."""
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql",
        data=json.dumps({"query": query, "variables": variables or {}}).encode(),
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read()))


@contextmanager
def rad3d_ui(out: Path, env: dict[str, str], log_path: Path, timeout_s: float = 180) -> Iterator[int]:
    """`rad3d ui --out OUT` (webserver + daemon) on a free loopback port; yields the port once it serves assets."""
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
        served = False
        while time.monotonic() < deadline and proc.poll() is None and not served:
            try:
                served = bool(graphql(port, "{ assetNodes { id } }").get("data", {}).get("assetNodes"))
            except OSError:
                served = False
            if not served:
                time.sleep(1)
        if not served:
            pytest.fail(f"rad3d ui did not serve the code location; its log:\n{log_path.read_text()[-3000:]}")
        yield port
    finally:
        # SIGTERM to the whole group (`dagster dev`, its webserver, daemon and code servers), then SIGKILL.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):  # a test instance: no need to wait long
            proc.wait(timeout=5)
        time.sleep(0.5)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def wait_for_daemons(port: int, wanted: set[str], timeout_s: float = 90) -> set[str]:
    """The daemon types that report healthy, polled until ``wanted`` are or the time is up."""
    query = "{ instance { daemonHealth { allDaemonStatuses { daemonType healthy } } } }"
    deadline = time.monotonic() + timeout_s
    healthy: set[str] = set()
    while time.monotonic() < deadline and not wanted <= healthy:
        statuses = graphql(port, query)["data"]["instance"]["daemonHealth"]["allDaemonStatuses"]
        healthy = {s["daemonType"] for s in statuses if s["healthy"]}
        time.sleep(1)
    return healthy

"""The code location loads the way Dagster's tools load it: validate, the webserver, the instance file."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def _env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "dagster_home"
    home.mkdir(exist_ok=True)
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    return {**os.environ, "DAGSTER_HOME": str(home), "RAD3D_OUT": str(tmp_path / "data")}


def test_packaged_instance_yaml_is_the_top_level_one() -> None:
    assert (REPO / "dagster.yaml").read_text() == (REPO / "rad3d" / "dagster.yaml").read_text()


def test_instance_from_dagster_yaml(tmp_path: Path) -> None:
    code = "from dagster import DagsterInstance; i = DagsterInstance.get(); print(type(i.run_storage).__name__)"
    out = subprocess.run([sys.executable, "-c", code], env=_env(tmp_path), capture_output=True, text=True, check=True)
    assert "SqliteRunStorage" in out.stdout


@pytest.mark.slow
def test_definitions_validate(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(BIN / "dagster"), "definitions", "validate", "-w", "workspace.yaml"],
        cwd=REPO,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "All code locations passed validation" in result.stderr + result.stdout


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.mark.slow
def test_webserver_serves_the_asset_groups(tmp_path: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env=_env(tmp_path),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        query = {
            "query": "{ assetNodes { assetKey { path } groupName } repositoriesOrError { ... on RepositoryConnection "
            "{ nodes { schedules { name } sensors { name } } } } }"
        }
        deadline = time.monotonic() + 120
        data = None
        while time.monotonic() < deadline:
            try:
                request = urllib.request.Request(
                    f"http://127.0.0.1:{port}/graphql",
                    data=json.dumps(query).encode(),
                    headers={"Content-Type": "application/json"},
                )
                with urllib.request.urlopen(request, timeout=10) as response:
                    data = json.loads(response.read())
                if data.get("data", {}).get("assetNodes"):
                    break
            except OSError:
                time.sleep(1)
        assert data is not None, "webserver did not answer"
        groups = {node["groupName"] for node in data["data"]["assetNodes"]}
        assert {"ctrate", "sentences", "open_qa", "closed_qa", "release", "quality", "evaluation"} <= groups
        [repo] = data["data"]["repositoriesOrError"]["nodes"]
        assert {s["name"] for s in repo["schedules"]} == {"weekly_benchmark_rebuild"}
        assert {s["name"] for s in repo["sensors"]} >= {"ctrate_drop_sensor", "run_failure_record"}
    finally:
        proc.terminate()
        proc.wait(timeout=30)

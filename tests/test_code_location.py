"""The code location loads the way Dagster's tools load it: validate, the webserver, the instance file."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
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


# The webserver and the daemon on this code location: tests/test_ui_chromium.py (`rad3d ui`, SQLite)
# and tests/test_production.py (PostgreSQL).


def test_no_dagster_internals_in_the_project() -> None:
    """Public Dagster APIs only: no `dagster._...` import in the project's code."""
    import re

    root = Path(__file__).resolve().parents[1]
    pattern = re.compile(r"^\s*(from|import)\s+dagster\._", re.M)
    offenders = [
        str(path.relative_to(root))
        for package in ("rad3d", "rad3d_pipeline", "assets", "resources", "benchmarks")
        for path in (root / package).rglob("*.py")
        if pattern.search(path.read_text())
    ]
    assert offenders == []

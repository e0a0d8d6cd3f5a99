"""End to end: ``rad3d sample-data`` then ``rad3d build`` as a user runs them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

pytestmark = pytest.mark.slow


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rad3d.cli", *args], capture_output=True, text=True, env=env, timeout=600
    )


@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["DAGSTER_HOME"] = str(tmp_path / "dagster_home")
    env.pop("RAD3D_SHARDS", None)
    return env


def test_sample_data_then_build(tmp_path: Path, cli_env: dict[str, str]) -> None:
    sample = tmp_path / "ctrate"
    made = run_cli("sample-data", "--out", str(sample), "--patients", "24", "--seed", "1", env=cli_env)
    assert made.returncode == 0, made.stderr
    out = tmp_path / "out"
    built = run_cli("build", "--ctrate-root", str(sample), "--out", str(out), env=cli_env)
    assert built.returncode == 0, built.stdout + built.stderr
    assert "Release (" in built.stdout and ") in " in built.stdout
    assert "test Task 4:" in built.stdout and "train Task 6:" in built.stdout
    for split in ("test", "train", "train_1pct", "train_10pct"):
        assert (out / "3DRAD" / split / "Task4_Existence_Detection").is_dir(), split
    sentences = pd.concat(pd.read_parquet(p) for p in (out / "tables" / "report_sentences").glob("*.parquet"))
    assert sentences["has_measurement"].any()
    # The Hub export loads the way the benchmark's users load it, with the release's rows.
    import datasets

    hub = out / "hub" / "3DRAD"
    task4 = datasets.load_dataset(str(hub), "task4", split="test")
    released = pd.concat(
        pd.read_csv(p, dtype=str) for p in (out / "3DRAD" / "test" / "Task4_Existence_Detection").glob("*.csv")
    )
    assert len(task4) == len(released) > 0
    card = (hub / "README.md").read_text()
    assert "## How this release was built" in card and "| seed | `0` |" in card  # the build's seed (default 0)
    # The runs are recorded in the instance under DAGSTER_HOME.
    assert (tmp_path / "dagster_home" / "history" / "runs.db").exists()
    # A rerun is idempotent: same release bytes.
    before = (out / "3DRAD" / "test" / "Task4_Existence_Detection" / "Atelectasis.csv").read_bytes()
    again = run_cli("build", "--ctrate-root", str(sample), "--out", str(out), "--tasks", "4", env=cli_env)
    assert again.returncode == 0, again.stderr
    assert (out / "3DRAD" / "test" / "Task4_Existence_Detection" / "Atelectasis.csv").read_bytes() == before


def test_build_failure_names_asset_and_file(tmp_path: Path, cli_env: dict[str, str]) -> None:
    empty = tmp_path / "empty_ctrate"
    empty.mkdir()
    result = run_cli(
        "build",
        "--ctrate-root",
        str(empty),
        "--out",
        str(tmp_path / "out"),
        "--split",
        "valid",
        "--tasks",
        "4",
        env=cli_env,
    )
    # Checked before anything runs: one line, exit 2, nothing created.
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"rad3d build: --ctrate-root {empty}: missing multi_abnormality_labels/valid_predicted_labels.csv "
        f"(under {empty}); found: none of them"
    ]
    assert not (tmp_path / "out").exists()


def test_unknown_task_is_refused(tmp_path: Path, cli_env: dict[str, str]) -> None:
    result = run_cli("build", "--ctrate-root", str(tmp_path), "--tasks", "9", env=cli_env)
    assert result.returncode == 2 and "unknown or unavailable task" in result.stderr

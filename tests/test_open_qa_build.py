"""Tasks 1-3 through the whole build against the local OpenAI-compatible server.

A run whose endpoint fails 30% of requests and answers 15% malformed gives the same
release Tasks 1-3 as a fault-free run; a rerun sends no request; the cap holds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rad3d_pipeline.open_qa.tasks_open import answer_grounded
from rad3d_pipeline.release.export import read_release
from tests.llm_server import Faults, LocalLlmServer

pytestmark = pytest.mark.slow


def build(ctrate: Path, out: Path, server: LocalLlmServer, home: Path) -> subprocess.CompletedProcess[str]:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "sk-local-test-key",
        "RAD3D_LLM_CONCURRENCY": "4",
        "RAD3D_LLM_TIMEOUT": "1",
        "RAD3D_LLM_ATTEMPTS": "12",
        "RAD3D_LLM_PARSE_ATTEMPTS": "8",
    }
    args = ["build", "--ctrate-root", str(ctrate), "--out", str(out), "--split", "valid", "--tasks", "1,2,3"]
    return subprocess.run(
        [sys.executable, "-m", "rad3d.cli", *args, "--llm", "openai"],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def open_release(out: Path) -> pd.DataFrame:
    rows = read_release(out / "3DRAD" / "test")
    rows = rows[rows.Task <= 3]
    return rows.sort_values(["Task", "subtask_name", "VolumeName", "Question", "Answer"]).reset_index(drop=True)


def test_faulty_endpoint_gives_the_fault_free_release(fixtures: Path, tmp_path: Path) -> None:
    ctrate = fixtures / "ctrate_mini"
    with LocalLlmServer() as clean:
        first = build(ctrate, tmp_path / "clean", clean, tmp_path / "home")
        assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
        paid = clean.state.requests
        rerun = build(ctrate, tmp_path / "clean", clean, tmp_path / "home")
        assert rerun.returncode == 0, rerun.stderr[-3000:]
        assert clean.state.requests == paid, "a rerun of an unchanged build must send no request"
    assert "0 requests" in rerun.stdout
    assert "qa_scores: 0 requests sent" in rerun.stdout and "0 failures" in rerun.stdout
    faults = Faults(rate_429=0.15, rate_500=0.1, rate_timeout=0.05, rate_malformed=0.15, seed=11, timeout_sleep_s=3)
    with LocalLlmServer(faults) as noisy:
        second = build(ctrate, tmp_path / "noisy", noisy, tmp_path / "home")
        assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
        injected = dict(noisy.state.injected)
    # The summary shows the retries by kind; the accounting counts every injected 429 and 500 as one retry.
    assert "retries (" in second.stdout and "HTTP 429" in second.stdout
    accounting = [json.loads(p.read_text()) for p in (tmp_path / "noisy" / "llm" / "accounting").glob("*.json")]
    for kind, counted in (("429", "HTTP 429"), ("500", "HTTP 500")):
        assert sum(a["retries_by_kind"].get(counted, 0) for a in accounting) == injected[kind]
    assert sum(a["failures"] for a in accounting) == 0
    assert not list((tmp_path / "noisy" / "llm" / "failures").rglob("*.jsonl"))
    # The API key is in no file the build wrote: instance (runs, events, metadata), tables, cache, logs.
    for path in tmp_path.rglob("*"):
        if path.is_file():
            assert b"sk-local-test-key" not in path.read_bytes(), path
    clean_rows, noisy_rows = open_release(tmp_path / "clean"), open_release(tmp_path / "noisy")
    assert len(clean_rows) > 50 and set(clean_rows.Task) == {1, 2, 3}
    pd.testing.assert_frame_equal(clean_rows, noisy_rows)
    rejects = pd.concat(pd.read_parquet(p) for p in (tmp_path / "noisy" / "llm" / "rejects").rglob("*.parquet"))
    assert len(rejects) > 0 and rejects["raw_text"].str.len().gt(0).all()
    for _, group in clean_rows.groupby(["Task", "subtask_name"]):
        assert group["Question"].value_counts().max() <= 10 and group["Answer"].value_counts().max() <= 10
    reports = pd.read_csv(ctrate / "radiology_text_reports" / "validation_reports.csv")
    text_by_scan = {
        v.rsplit("_", 1)[0]: f"{f} {i}"
        for v, f, i in zip(reports.VolumeName, reports.Findings_EN, reports.Impressions_EN, strict=True)
    }
    task3 = clean_rows[clean_rows.Task == 3]
    for volume, answer in zip(task3.VolumeName, task3.Answer, strict=True):
        scan = volume.replace("test_", "valid_", 1).rsplit("_", 1)[0]
        assert answer_grounded(answer, text_by_scan[scan]) is None, (volume, answer)

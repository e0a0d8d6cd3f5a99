"""Issue 12: no silent loss. Failure records, the failure budget, an unusable endpoint, every transient fault
kind through the build, and the paper's own reply formats, against the local OpenAI-compatible server.

The build tests (slow) compare Tasks 1-3 of the release with a clean build's, row for row.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rad3d_pipeline.common.errors import LlmStageError
from rad3d_pipeline.llm.client import Accounting
from rad3d_pipeline.llm.failures import check_failure_budget, describe_kinds, read_failures, write_failures
from tests.conftest import fixtures_root, skip_or_fail
from tests.llm_server import Faults, LocalLlmServer
from tests.test_open_qa_build import open_release

MODEL = "gpt-4o-mini"


# --------------------------------------------------------------------------- budget and records (fast)


def test_budget_message_is_one_line_with_counts_kinds_and_path(tmp_path: Path) -> None:
    acc = Accounting(prompts=3240, failures=812, failures_by_kind={"timeout": 700, "HTTP 500": 112})
    details = tmp_path / "llm" / "failures" / "qa_scores" / "1|00..3|15.jsonl"
    with pytest.raises(LlmStageError) as info:
        check_failure_budget("qa_scores", acc, 0.01, details)
    assert str(info.value) == (
        "qa_scores: 812 of 3,240 requests failed (25.1%, budget 1%): 700 timeouts, 112 HTTP 500; "
        f"rerun to retry only these; details in {details}"
    )
    # Within the budget (and exactly at it) the stage goes on.
    check_failure_budget(
        "qa_scores", Accounting(prompts=1000, failures=10, failures_by_kind={"timeout": 10}), 0.01, details
    )
    check_failure_budget("qa_scores", Accounting(prompts=0), 0.0, details)
    with pytest.raises(LlmStageError, match=r"1 of 1,000 requests failed \(0\.1%, budget 0%\): 1 unparsable reply"):
        check_failure_budget(
            "qa_scores", Accounting(prompts=1000, failures=1, failures_by_kind={"unparsable": 1}), 0.0, details
        )
    assert describe_kinds({"cut-off body": 2, "connection error": 1}) == "2 cut-off bodies, 1 connection error"


def test_failure_records_dedupe_and_vanish_when_none(tmp_path: Path) -> None:
    path = tmp_path / "failures" / "qa_scores" / "all.jsonl"
    row = {
        "stage": "scoring",
        "subject": "q1",
        "request_key": "k1",
        "model": "m",
        "error_kind": "timeout",
        "error": "APITimeoutError: Request timed out.",
        "attempts": 6,
        "rejects": 0,
    }
    assert write_failures([row, {**row, "subject": "q2"}, {**row, "request_key": "k2"}], path) == 2
    records = read_failures(tmp_path / "failures")
    assert [r["subject"] for r in records] == ["q1", "q1"] and records[0]["attempts"] == 6
    assert write_failures([], path) == 0 and not path.exists()


# --------------------------------------------------------------------------- the build (slow)


def _env(server_url: str, home: Path, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "OPENAI_BASE_URL": server_url,
        "OPENAI_API_KEY": "sk-local-test-key",
        "RAD3D_LLM_CONCURRENCY": "4",
        "RAD3D_LLM_TIMEOUT": "1",
        "RAD3D_LLM_ATTEMPTS": "12",
        "RAD3D_LLM_PARSE_ATTEMPTS": "8",
    }
    env.pop("RAD3D_LLM_MAX_FAILURE_RATE", None)
    env.pop("RAD3D_LLM_STRUCTURED", None)
    env.update(extra)
    return env


def build(ctrate: Path, out: Path, url: str, home: Path, **extra: str) -> subprocess.CompletedProcess[str]:
    args = ["build", "--ctrate-root", str(ctrate), "--out", str(out), "--split", "valid", "--tasks", "1,2,3"]
    return subprocess.run(
        [sys.executable, "-m", "rad3d.cli", *args, "--llm", "openai"],
        env=_env(url, home, **extra),
        capture_output=True,
        text=True,
        timeout=900,
    )


def last_line(proc: subprocess.CompletedProcess[str]) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    return lines[-1] if lines else ""


@pytest.fixture(scope="module")
def clean_release(tmp_path_factory: pytest.TempPathFactory) -> pd.DataFrame:
    """Tasks 1-3 of a build against a fault-free endpoint (once per module)."""
    ctrate = fixtures_root() / "ctrate_mini"
    if not ctrate.is_dir():
        skip_or_fail(f"public fixtures not found at {ctrate.parent} (set RAD3D_FIXTURES to ../shared/fixtures)")
    root = tmp_path_factory.mktemp("clean")
    with LocalLlmServer() as server:
        proc = build(ctrate, root / "out", server.base_url, root / "home")
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    rows = open_release(root / "out")
    assert len(rows) > 50 and set(rows.Task) == {1, 2, 3}
    return rows


@pytest.mark.slow
def test_permanent_failures_stop_the_build_and_a_rerun_asks_only_for_them(
    fixtures: Path, tmp_path: Path, clean_release: pd.DataFrame
) -> None:
    ctrate, out, home = fixtures / "ctrate_mini", tmp_path / "out", tmp_path / "home"
    with LocalLlmServer(Faults(permanent_rate=0.25, permanent_kind="500", seed=3)) as broken:
        first = build(ctrate, out, broken.base_url, home, RAD3D_LLM_ATTEMPTS="2")
        permanent = dict(broken.state.permanent)
        asked_templates = {t for t, _ in broken.state.prompts}
    assert first.returncode != 0, first.stdout[-2000:]
    line = last_line(first)
    records = read_failures(out / "llm" / "failures" / "qa_candidates")
    prompts = json.loads((out / "llm" / "accounting" / "qa_candidates.json").read_text())["prompts"]
    n = len(records)
    assert n == len(permanent) and n > 0
    # The stage, its partitions, then the counts: "qa_candidates [00|1..15|3]: 57 of 190 requests failed ..."
    assert line.startswith("qa_candidates [00|1..15|3]: "), line
    assert f": {n} of {prompts:,} requests failed ({n / prompts * 100:.1f}%, budget 1%): " in line, line
    assert f"{n} HTTP 500; rerun to retry only these; details in {out / 'llm' / 'failures'}" in line, line
    assert {r["error_kind"] for r in records} == {"HTTP 500"} and {r["attempts"] for r in records} == {2}
    # The rerun against a healthy endpoint asks again for exactly the failed prompts of the stages that ran.
    with LocalLlmServer() as healthy:
        second = build(ctrate, out, healthy.base_url, home)
        rerun = healthy.state.prompts
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    for template in asked_templates:
        again = sorted(d for t, d in rerun if t == template)
        assert again == sorted(d for d, t in permanent.items() if t == template), template
    assert not read_failures(out / "llm" / "failures")
    pd.testing.assert_frame_equal(open_release(out), clean_release)
    assert "qa_candidates:" in second.stdout and "0 failures" in second.stdout


@pytest.mark.slow
def test_failures_within_the_budget_are_shown_not_silent(fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    faults = Faults(permanent_rate=0.25, permanent_kind="malformed", seed=3)
    with LocalLlmServer(faults) as server:
        proc = build(
            fixtures / "ctrate_mini",
            out,
            server.base_url,
            tmp_path / "home",
            RAD3D_LLM_MAX_FAILURE_RATE="0.5",
            RAD3D_LLM_PARSE_ATTEMPTS="2",
        )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    records = read_failures(out / "llm" / "failures")
    assert records and {r["error_kind"] for r in records} == {"unparsable"}
    summary = [line for line in proc.stdout.splitlines() if line.strip().startswith("qa_candidates:")]
    assert (
        summary
        and "unparsable" in summary[0]
        and "left out" in summary[0]
        and str(out / "llm" / "failures") in summary[0]
    )


@pytest.mark.slow
def test_unreachable_endpoint_stops_the_first_llm_stage_in_one_line(fixtures: Path, tmp_path: Path) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    url = f"http://127.0.0.1:{port}/v1"
    proc = build(fixtures / "ctrate_mini", tmp_path / "out", url, tmp_path / "home", RAD3D_LLM_ATTEMPTS="2")
    assert proc.returncode != 0
    line = last_line(proc)
    assert "qa_candidates" in line and url in line and f"(model {MODEL})" in line and "refused" in line.lower(), line
    assert "no candidates" not in proc.stderr and "Traceback" not in line


@pytest.mark.slow
def test_every_transient_fault_kind_gives_the_clean_release(
    fixtures: Path, tmp_path: Path, clean_release: pd.DataFrame
) -> None:
    kinds = ("html", "not_json", "cut_json", "error_body", "no_choices", "reset", "empty")
    rates = {f"rate_{k}": 0.03 for k in kinds}
    faults = Faults(
        rate_429=0.03,
        rate_500=0.03,
        rate_timeout=0.02,
        rate_length=0.03,
        retry_after="soon",
        retry_after_5xx="date",
        timeout_sleep_s=3,
        seed=12,
        **rates,
    )
    out = tmp_path / "out"
    with LocalLlmServer(faults) as server:
        proc = build(fixtures / "ctrate_mini", out, server.base_url, tmp_path / "home")
        injected = dict(server.state.injected)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert all(injected.get(k, 0) > 0 for k in (*kinds, "429", "500", "length")), injected
    pd.testing.assert_frame_equal(open_release(out), clean_release)
    accounting = [json.loads(p.read_text()) for p in (out / "llm" / "accounting").glob("*.json")]
    counted: dict[str, int] = {}
    for acc in accounting:
        for kind, n in (acc.get("retries_by_kind") or {}).items():
            counted[kind] = counted.get(kind, 0) + n
    assert counted.get("HTML page") == injected["html"] and counted.get("error object") == injected["error_body"]
    assert counted.get("empty content") == injected["empty"] and counted.get("HTTP 429") == injected["429"]
    assert sum(a.get("failures", 0) for a in accounting) == 0
    assert "retries (" in proc.stdout  # the summary prints the retries by kind


@pytest.mark.slow
def test_paper_format_build_equals_the_json_build(fixtures: Path, tmp_path: Path) -> None:
    try:
        import tests.paper_formats  # noqa: F401
    except ImportError as exc:
        skip_or_fail(f"tests/paper_formats.py is not usable yet: {exc}")
    releases = {}
    for fmt in ("json", "paper"):
        # The JSON build asks with structured outputs (a strict schema per prompt); the paper build without.
        structured = "1" if fmt == "json" else "0"
        with LocalLlmServer(reply_format=fmt) as server:
            proc = build(
                fixtures / "ctrate_mini",
                tmp_path / fmt,
                server.base_url,
                tmp_path / "home",
                RAD3D_LLM_STRUCTURED=structured,
            )
            formats = [body.get("response_format") for body in server.state.bodies]
        assert proc.returncode == 0, fmt + proc.stdout[-3000:] + proc.stderr[-3000:]
        if fmt == "json":
            assert formats and all(f and f["type"] == "json_schema" and f["json_schema"]["strict"] for f in formats)
        else:
            assert not any(formats)
        releases[fmt] = open_release(tmp_path / fmt)
    assert len(releases["json"]) > 50
    pd.testing.assert_frame_equal(releases["paper"], releases["json"])
    rejects = list((tmp_path / "paper" / "llm" / "rejects").rglob("*.parquet"))
    assert sum(len(pd.read_parquet(p)) for p in rejects) == 0  # every paper-format reply parsed first time


def test_a_model_s_lost_answer_stops_instead_of_scoring_as_wrong(tmp_path: Path) -> None:
    """An OpenAI-compatible model whose requests fail for good: no empty prediction is scored; one line says why."""
    from rad3d_pipeline.evaluation.models.base import PredictionItem
    from rad3d_pipeline.evaluation.models.openai_vlm import OpenAIVLMAdapter
    from rad3d_pipeline.llm.cache import ResponseCache
    from rad3d_pipeline.llm.client import EndpointConfig, LlmClient

    item = PredictionItem(
        volume_name="valid_1_a_1.nii.gz",
        task=1,
        subtask=1,
        subtask_name="Anatomical_observation",
        question="Is there a nodule?",
        answer="yes",
        question_type="Open",
    )
    with LocalLlmServer(Faults(permanent_rate=1.0)) as server:
        config = EndpointConfig(model="qwen-vl", base_url=server.base_url, api_key="k", max_attempts=2)
        adapter = OpenAIVLMAdapter(LlmClient(config, ResponseCache(tmp_path / "c.sqlite")), text_only=True)
        with pytest.raises(LlmStageError, match=r"model .*: 1 of 1 requests of a batch got no answer"):
            adapter.predict([item])
    with LocalLlmServer(known_models={"other"}) as server:  # 404: the model is not served there
        config = EndpointConfig(model="qwen-vl", base_url=server.base_url, api_key="k")
        adapter = OpenAIVLMAdapter(LlmClient(config, ResponseCache(tmp_path / "d.sqlite")), text_only=True)
        with pytest.raises(LlmStageError, match="404"):
            adapter.predict([item])

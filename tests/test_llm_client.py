"""The LLM layer against the local OpenAI-compatible server: cache, retries, rejects, bounds."""

from __future__ import annotations

from pathlib import Path

import httpx
import openai
import pytest

from rad3d_pipeline.llm.cache import ResponseCache, request_key
from rad3d_pipeline.llm.client import EndpointConfig, LlmClient, retry_after_seconds, run_all
from rad3d_pipeline.llm.parsers import parse_scores
from rad3d_pipeline.llm.prompts import load_template
from tests.llm_server import Faults, LocalLlmServer

SCORING = load_template("scoring")


def score_jobs(client: LlmClient, n: int):  # type: ignore[no-untyped-def]
    def job(i: int):  # type: ignore[no-untyped-def]
        messages = SCORING.messages(Question=f"Where is nodule {i}?", Answer="Right upper lobe")
        return lambda: client.complete_parsed(messages, parse_scores, template_version=SCORING.template_version)

    return [job(i) for i in range(n)]


def endpoint(server: LocalLlmServer, **kw: object) -> EndpointConfig:
    base = {"model": "judge-a", "base_url": server.base_url, "api_key": "sk-test-secret", "timeout_s": 30.0}
    base.update(kw)
    return EndpointConfig(**base)  # type: ignore[arg-type]


def test_cache_and_rerun_send_no_request(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with LocalLlmServer() as server:
        client = LlmClient(endpoint(server), cache)
        first = run_all(score_jobs(client, 12), [client])
        assert server.state.requests == 12 and len(cache) == 12
        assert client.accounting.requests == 12 and client.accounting.prompt_tokens > 0
        again = LlmClient(endpoint(server), ResponseCache(tmp_path / "cache.sqlite"))
        second = run_all(score_jobs(again, 12), [again])
        assert server.state.requests == 12  # nothing sent
        assert again.accounting.cache_hits == 12 and again.accounting.requests == 0
    assert [o.value for o in first] == [o.value for o in second]


def test_faults_give_the_same_result_and_rejects_are_kept(tmp_path: Path) -> None:
    with LocalLlmServer() as clean:
        ref_client = LlmClient(endpoint(clean), ResponseCache(tmp_path / "clean.sqlite"))
        reference = [o.value for o in run_all(score_jobs(ref_client, 30), [ref_client])]
    faults = Faults(rate_429=0.15, rate_500=0.1, rate_timeout=0.05, rate_malformed=0.15, seed=7, timeout_sleep_s=1.5)
    with LocalLlmServer(faults) as server:
        client = LlmClient(
            endpoint(server, max_attempts=12, max_parse_attempts=6), ResponseCache(tmp_path / "f.sqlite")
        )
        outcomes = run_all(score_jobs(client, 30), [client])
    assert [o.value for o in outcomes] == reference
    rejects = [r for o in outcomes for r in o.rejects]
    assert rejects and client.accounting.rejects == len(rejects)
    assert all("missing score" in r.reason and r.raw_text for r in rejects)
    assert client.accounting.retries > 0


def test_concurrency_stays_within_its_bound(tmp_path: Path) -> None:
    with LocalLlmServer(latency_s=0.05) as server:
        client = LlmClient(endpoint(server, max_concurrency=3), ResponseCache(tmp_path / "c.sqlite"))
        run_all(score_jobs(client, 20), [client])
        assert server.state.max_in_flight <= 3
        assert server.state.max_in_flight >= 2


def test_killed_run_resumes_without_repeating_paid_requests(tmp_path: Path) -> None:
    path = tmp_path / "cache.sqlite"
    with LocalLlmServer() as server:
        half = LlmClient(endpoint(server), ResponseCache(path))
        run_all(score_jobs(half, 10), [half])  # the first 10 were paid for, then the run "died"
        full = LlmClient(endpoint(server), ResponseCache(path))
        run_all(score_jobs(full, 25), [full])
        assert server.state.requests == 25  # 10 + 15, nothing twice
        assert full.accounting.cache_hits == 10


def test_unparsable_everywhere_stays_in_rejects(tmp_path: Path) -> None:
    with LocalLlmServer(Faults(rate_malformed=1.0)) as server:
        client = LlmClient(endpoint(server, max_parse_attempts=2), ResponseCache(tmp_path / "m.sqlite"))
        [outcome] = run_all(score_jobs(client, 1), [client])
    assert outcome.value is None and len(outcome.rejects) == 2
    assert outcome.error == "unparsable after 2 attempts"


def test_transport_failure_after_retries_is_reported(tmp_path: Path) -> None:
    with LocalLlmServer(Faults(rate_500=1.0)) as server:
        client = LlmClient(endpoint(server, max_attempts=2), ResponseCache(tmp_path / "x.sqlite"))
        [outcome] = run_all(score_jobs(client, 1), [client])
    assert outcome.value is None and "InternalServerError" in (outcome.error or "")
    assert client.accounting.failures == 1 and client.accounting.retries == 1


def test_retry_after_header_is_honoured() -> None:
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    response = httpx.Response(429, headers={"retry-after": "7"}, request=request)
    exc = openai.RateLimitError("rate limited", response=response, body=None)
    assert retry_after_seconds(exc) == 7.0
    response_ms = httpx.Response(429, headers={"retry-after-ms": "250"}, request=request)
    assert retry_after_seconds(openai.RateLimitError("x", response=response_ms, body=None)) == 0.25
    assert retry_after_seconds(ValueError()) is None


def test_secrets_stay_out_of_reprs_and_keys() -> None:
    config = EndpointConfig(model="m", api_key="sk-very-secret")
    assert "sk-very-secret" not in repr(config)
    key = request_key("m", [{"role": "user", "content": "x"}], config.sampling_params(), "scoring@1")
    assert len(key) == 64


@pytest.mark.parametrize("json_mode", [False, True])
def test_sampling_params(json_mode: bool) -> None:
    params = EndpointConfig(model="m", json_mode=json_mode).sampling_params()
    assert ("response_format" in params) is json_mode


def test_batch_mode_fills_the_cache_and_resumes(tmp_path: Path) -> None:
    from rad3d_pipeline.llm.batch import BatchRequest, run_batch

    requests = [
        BatchRequest(SCORING.messages(Question=f"Where is nodule {i}?", Answer="Right upper lobe"), "scoring@1")
        for i in range(6)
    ]
    cache = ResponseCache(tmp_path / "b.sqlite")
    with LocalLlmServer() as server:
        config = endpoint(server)
        report = run_batch(config, cache, requests, purpose="scores", poll_s=0.01)
        assert (report.submitted, report.received, report.failed) == (6, 6, 0)
        assert len(cache) == 6 and cache.open_batches("scores") == []
        # Everything is cached now: the ordinary path sends nothing.
        client = LlmClient(config, cache)
        outcomes = run_all(
            [
                lambda r=r: client.complete_parsed(r.messages, parse_scores, template_version=r.template_version)
                for r in requests
            ],
            [client],
        )
        assert all(o.value for o in outcomes) and client.accounting.requests == 0
        again = run_batch(config, cache, requests, purpose="scores", poll_s=0.01)
        assert (again.submitted, again.cached) == (0, 6)
        # A batch recorded but never collected (the build died while polling) is resumed, not resubmitted.
        fresh = ResponseCache(tmp_path / "c.sqlite")
        more = [BatchRequest(SCORING.messages(Question="Which lobe?", Answer="Left"), "scoring@1")]
        server.state.batch_polls_before_done = 10**6
        with pytest.raises(TimeoutError):
            run_batch(config, fresh, more, purpose="scores", poll_s=0.01, timeout_s=0.05)
        server.state.batch_polls_before_done = 0
        resumed = run_batch(config, fresh, more, purpose="scores", poll_s=0.01)
        assert (resumed.resumed, resumed.submitted, resumed.received) == (1, 0, 1)

"""The LLM layer against the local OpenAI-compatible server: cache, retries, rejects, bounds."""

from __future__ import annotations

import json
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
    assert (outcome.error or "").startswith("unparsable after 2 attempts: missing score")
    assert outcome.error_kind == "unparsable" and client.accounting.failures == 1


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


# --------------------------------------------------------------------------- issue 12: every fault kind

TRANSIENT = ("429", "500", "timeout", "html", "not_json", "cut_json", "error_body", "no_choices", "reset", "empty")


@pytest.mark.parametrize("kind", TRANSIENT)
def test_each_transient_fault_kind_is_retried_and_counted(tmp_path: Path, kind: str) -> None:
    from tests.llm_server import CLIENT_KIND

    with LocalLlmServer() as clean:
        ref = LlmClient(endpoint(clean), ResponseCache(tmp_path / "clean.sqlite"))
        reference = [o.value for o in run_all(score_jobs(ref, 24), [ref])]
    faults = Faults(seed=5, retry_after="0.01", retry_after_5xx="0.01", timeout_sleep_s=2.5).transient(kind, 0.25)
    timeout_s = 1.0 if kind == "timeout" else 10.0  # a loaded test machine must not time out the others
    with LocalLlmServer(faults) as server:
        config = endpoint(server, max_attempts=10, timeout_s=timeout_s)
        client = LlmClient(config, ResponseCache(tmp_path / "f.sqlite"))
        outcomes = run_all(score_jobs(client, 24), [client])
        injected = server.state.injected[kind]
    assert [o.value for o in outcomes] == reference
    assert injected > 0
    acc = client.accounting
    assert acc.failures == 0 and acc.rejects == 0
    # every injected fault was one counted retry of its kind, and nothing else was retried
    if kind == "timeout":  # a slow machine may time out a clean reply too
        assert set(acc.retries_by_kind) == {"timeout"} and acc.retries_by_kind["timeout"] >= injected
    else:
        assert acc.retries_by_kind == {CLIENT_KIND[kind]: injected}
        assert acc.retries == injected and acc.requests == 24 + injected


@pytest.mark.parametrize("retry_after", ["0.02", "date", "soon", "-3"])
def test_any_retry_after_value_is_retried(tmp_path: Path, retry_after: str) -> None:
    faults = Faults(rate_429=0.3, retry_after=retry_after, seed=2)
    with LocalLlmServer(faults) as server:
        client = LlmClient(endpoint(server, max_attempts=10), ResponseCache(tmp_path / "r.sqlite"))
        outcomes = run_all(score_jobs(client, 12), [client])
        assert server.state.injected["429"] > 0
    assert all(o.value is not None for o in outcomes)
    assert client.accounting.retries_by_kind == {"HTTP 429": server.state.injected["429"]}


def test_retry_after_dates_and_garbage() -> None:
    import email.utils
    import time

    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")

    def after(value: str) -> float | None:
        response = httpx.Response(429, headers={"retry-after": value}, request=request)
        return retry_after_seconds(openai.RateLimitError("x", response=response, body=None))

    assert after("soon") is None and after("") is None and after("Wed, 99 Foo") is None
    assert after("-5") == 0.0 and after("100000") == 300.0
    assert 8.0 <= (after(email.utils.formatdate(time.time() + 10, usegmt=True)) or 0) <= 10.0
    assert after(email.utils.formatdate(time.time() - 60, usegmt=True)) == 0.0


def test_reply_cut_at_length_is_a_reject_kept_and_asked_again(tmp_path: Path) -> None:
    with LocalLlmServer() as clean:
        ref = LlmClient(endpoint(clean), ResponseCache(tmp_path / "clean.sqlite"))
        reference = [o.value for o in run_all(score_jobs(ref, 20), [ref])]
    path = tmp_path / "l.sqlite"
    with LocalLlmServer(Faults(rate_length=0.3, seed=4)) as server:
        client = LlmClient(endpoint(server, max_parse_attempts=8), ResponseCache(path))
        outcomes = run_all(score_jobs(client, 20), [client])
        cut = server.state.injected["length"]
        assert cut > 0
        rejects = [r for o in outcomes for r in o.rejects]
        assert [o.value for o in outcomes] == reference
        assert len(rejects) == cut == client.accounting.rejects and client.accounting.retries == 0
        assert all(r.reason.startswith("truncated") and r.raw_text for r in rejects)
        # The cut reply is cached as what it is: a rerun reads it as a reject again, asks nothing.
        again = LlmClient(endpoint(server), ResponseCache(path))
        sent = server.state.requests
        second = run_all(score_jobs(again, 20), [again])
        assert server.state.requests == sent and [o.value for o in second] == reference
        assert sum(len(o.rejects) for o in second) == cut


@pytest.mark.parametrize("kind", ["500", "malformed"])
def test_permanent_failures_are_failures_and_a_rerun_asks_only_for_them(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "p.sqlite"
    faults = Faults(permanent_rate=0.25, permanent_kind=kind, seed=1)
    with LocalLlmServer(faults) as server:
        client = LlmClient(endpoint(server, max_attempts=3, max_parse_attempts=2), ResponseCache(path))
        outcomes = run_all(score_jobs(client, 40), [client])
        failed_for_good = set(server.state.permanent)
    failed = [o for o in outcomes if o.value is None]
    assert 4 <= len(failed) == len(failed_for_good) <= 16
    expected_kind = "HTTP 500" if kind == "500" else "unparsable"
    assert {o.error_kind for o in failed} == {expected_kind}
    assert client.accounting.failures == len(failed) and client.accounting.failures_by_kind == {
        expected_kind: len(failed)
    }
    assert all(o.attempts == (3 if kind == "500" else 2) for o in failed)
    with LocalLlmServer() as healthy:
        rerun = LlmClient(endpoint(healthy), ResponseCache(path))
        second = run_all(score_jobs(rerun, 40), [rerun])
        assert {d for _, d in healthy.state.prompts} == failed_for_good
        assert healthy.state.requests == len(failed)
    with LocalLlmServer() as clean:
        ref = LlmClient(endpoint(clean), ResponseCache(tmp_path / "clean.sqlite"))
        reference = [o.value for o in run_all(score_jobs(ref, 40), [ref])]
    assert [o.value for o in second] == reference


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_unusable_endpoint_is_named_and_not_hammered(tmp_path: Path) -> None:
    with LocalLlmServer(known_models={"judge-a"}) as server:
        client = LlmClient(endpoint(server, model="no-such-model", max_concurrency=2), ResponseCache(tmp_path / "a"))
        outcomes = run_all(score_jobs(client, 20), [client])
        assert server.state.requests <= 2  # the first replies said 404; the rest were never sent
    assert all(o.value is None for o in outcomes)
    assert client.fatal and server.base_url in client.fatal and "no-such-model" in client.fatal
    assert "HTTP 404" in client.fatal and "does not exist" in client.fatal
    with LocalLlmServer(api_key="sk-right") as server:
        client = LlmClient(endpoint(server, max_concurrency=1), ResponseCache(tmp_path / "b"))
        run_all(score_jobs(client, 5), [client])
        assert server.state.requests == 1
    assert client.fatal and "HTTP 401" in client.fatal and "sk-test-secret" not in client.fatal
    config = EndpointConfig(model="m", base_url=f"http://127.0.0.1:{_closed_port()}/v1", api_key="k", max_attempts=2)
    client = LlmClient(config, ResponseCache(tmp_path / "c"))
    outcomes = run_all(score_jobs(client, 3), [client])
    assert all(o.error_kind in {"connection error", "endpoint unusable"} for o in outcomes)
    assert client.fatal and config.base_url in client.fatal and "(model m)" in client.fatal
    assert "refused" in client.fatal.lower()


def test_an_endpoint_that_worked_is_not_declared_unusable(tmp_path: Path) -> None:
    with LocalLlmServer(Faults(permanent_rate=0.3, permanent_kind="500", seed=3)) as server:
        client = LlmClient(endpoint(server, max_attempts=2), ResponseCache(tmp_path / "w"))
        outcomes = run_all(score_jobs(client, 20), [client])
    assert any(o.value is None for o in outcomes) and any(o.value is not None for o in outcomes)
    assert client.fatal is None


def test_structured_outputs_ask_with_each_prompts_strict_schema(tmp_path: Path) -> None:
    on = EndpointConfig(model="m", structured_outputs=True)
    for name in ("task12", "task3_stage1", "task3_stage2", "scoring", "spatial_judge"):
        rf = on.sampling_params(name)["response_format"]
        assert rf["type"] == "json_schema" and rf["json_schema"]["strict"] is True, name
    assert "response_format" not in on.sampling_params("jury")  # no schema: the text formats
    assert "response_format" not in EndpointConfig(model="m").sampling_params("scoring")
    with LocalLlmServer(reply_format="json") as server:
        client = LlmClient(endpoint(server, structured_outputs=True), ResponseCache(tmp_path / "s"))
        outcomes = run_all(score_jobs(client, 3), [client])
        assert all(o.value is not None for o in outcomes)
        formats = [b.get("response_format") for b in server.state.bodies]
    assert all(f and f["json_schema"]["strict"] and "Linguistic Quality" in json.dumps(f) for f in formats)


def test_only_endpoint_wide_errors_make_an_endpoint_unusable() -> None:
    from rad3d_pipeline.llm.client import is_fatal, is_retryable

    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")

    def status(code: int) -> openai.APIStatusError:
        return openai.APIStatusError("x", response=httpx.Response(code, request=request), body=None)

    assert [is_fatal(status(c)) for c in (400, 401, 403, 404, 413, 422, 429, 500)] == [
        False, True, True, True, False, False, False, False,
    ]  # fmt: skip
    assert [is_retryable(status(c)) for c in (400, 404, 408, 429, 500, 503)] == [False, False, True, True, True, True]
    assert not is_fatal(openai.APITimeoutError(request=request))
    assert is_fatal(openai.APIConnectionError(request=request))

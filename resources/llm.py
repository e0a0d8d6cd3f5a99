"""LLM endpoints as a resource: backend choice, one model per role, the shared response cache.

Endpoints use the OpenAI client's own variables: OPENAI_BASE_URL and OPENAI_API_KEY. The
composition root reads them from the settings table (``resources/environment.py``) and hands
them over, the key (and every judge's ``api_key_env``) as ``EnvVar`` so it never appears in run
config, logs or metadata; this resource never reads the environment itself. Any
OpenAI-compatible server works (OpenAI, vLLM, Ollama, llama.cpp).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

from rad3d_pipeline.llm.cache import ResponseCache
from rad3d_pipeline.llm.client import EndpointConfig, LlmClient
from rad3d_pipeline.quality.judges import OFFLINE_JUDGES, JudgeSpec, parse_judges
from resources import environment

BACKENDS = ("auto", "rules", "openai")
NO_KEY = "not-needed"  # what a keyless local server (vLLM, Ollama, llama.cpp) is sent


class LlmResource(ConfigurableResource):
    """Which backend makes Tasks 1-3 and how to reach it."""

    backend: str = Field(
        default=environment.LLM.default_value(),
        description="rules (offline), openai (any OpenAI-compatible endpoint), or auto: "
        "openai when an endpoint (base_url or api_key) is given, else rules.",
    )
    base_url: str | None = Field(
        default=environment.OPENAI_BASE_URL.default_value(), description="Endpoint URL (OPENAI_BASE_URL)."
    )
    api_key: str | None = Field(default=None, description="API key; pass EnvVar('OPENAI_API_KEY'), never a literal.")
    generator_model: str = Field(
        default=environment.GENERATOR_MODEL.default_value(), description="Model that writes QA (Figures 11-13)."
    )
    scorer_model: str = Field(
        default=environment.SCORER_MODEL.default_value(), description="Model that scores QA (Figure 17)."
    )
    max_concurrency: int = Field(
        default=environment.LLM_CONCURRENCY.default_value(), description="Requests in flight per endpoint."
    )
    requests_per_minute: float = Field(
        default=environment.LLM_RPM.default_value(), description="Request-rate limit per endpoint; 0 = none."
    )
    timeout_s: float = Field(default=environment.LLM_TIMEOUT.default_value(), description="Timeout of one request.")
    max_attempts: int = Field(
        default=environment.LLM_ATTEMPTS.default_value(),
        description="Transport attempts per request (429, 5xx, timeouts).",
    )
    max_parse_attempts: int = Field(
        default=environment.LLM_PARSE_ATTEMPTS.default_value(), description="Fresh requests after an unparsable reply."
    )
    temperature: float = Field(default=0.0, description="Sampling temperature.")
    json_mode: bool = Field(default=False, description="Ask for JSON output where the endpoint supports it.")
    structured_outputs: bool = Field(
        default=environment.LLM_STRUCTURED.default_value(),
        description="Ask with a strict JSON schema per prompt (response_format json_schema, strict: OpenAI's "
        "structured outputs, vLLM's guided decoding); the paper's text formats stay the fallback.",
    )
    max_failure_rate: float = Field(
        default=environment.LLM_MAX_FAILURE_RATE.default_value(),
        description="Failure budget of each LLM stage: the share of its requests that may end without an "
        "answer (recorded under <out>/llm/failures/) before the stage fails.",
    )
    task3_stage1: str = Field(
        default=environment.TASK3_STAGE1.default_value(),
        description="Task 3 stage 1: 'sentences' (the sentence asset) or 'llm' (Figure 12).",
    )
    price_prompt_per_1m: float = Field(
        default=environment.LLM_PRICE_PROMPT.default_value(),
        description="USD per million prompt tokens (cost estimate).",
    )
    price_completion_per_1m: float = Field(
        default=environment.LLM_PRICE_COMPLETION.default_value(), description="USD per million completion tokens."
    )
    batch: bool = Field(
        default=environment.LLM_BATCH.default_value(),
        description="Send first attempts through the OpenAI Batch API (resumable).",
    )
    batch_poll_s: float = Field(
        default=environment.LLM_BATCH_POLL_S.default_value(), description="Seconds between Batch API status polls."
    )
    judges: str = Field(
        default=environment.JUDGES.default_value(), description="Comma-separated judge models for scoring consistency."
    )
    judges_file: str | None = Field(
        default=environment.JUDGES_FILE.default_value(), description="YAML file giving judges their own endpoints."
    )
    spatial_model: str = Field(
        default=environment.SPATIAL_MODEL.default_value(), description="The LLM judge of spatial questions."
    )
    judge_api_keys: dict[str, str] = Field(
        default={},
        description="The keys of the judges file's api_key_env variables, by variable name; pass "
        "EnvVar(name) for each, never a literal.",
    )
    cache_dir: str | None = Field(default=None, description="Response cache folder; default <out>/llm.")

    def failure_budget(self) -> float:
        if not 0.0 <= self.max_failure_rate <= 1.0:
            raise ValueError(f"llm.max_failure_rate={self.max_failure_rate!r}: use a share between 0 and 1")
        return self.max_failure_rate

    def resolved_backend(self) -> str:
        if self.backend not in BACKENDS:
            raise ValueError(f"llm.backend={self.backend!r}: use one of {', '.join(BACKENDS)}")
        if self.backend == "auto":
            return "openai" if (self.base_url or self.api_key) else "rules"
        return self.backend

    def cache(self, out_dir: Path) -> ResponseCache:
        folder = Path(self.cache_dir) if self.cache_dir else out_dir / "llm"
        return ResponseCache(folder / "cache.sqlite")

    def endpoint(self, model: str) -> EndpointConfig:
        return EndpointConfig(
            model=model,
            base_url=self.base_url or None,
            api_key=self.api_key or NO_KEY,
            max_concurrency=self.max_concurrency,
            requests_per_minute=self.requests_per_minute,
            timeout_s=self.timeout_s,
            max_attempts=self.max_attempts,
            max_parse_attempts=self.max_parse_attempts,
            temperature=self.temperature,
            json_mode=self.json_mode,
            structured_outputs=self.structured_outputs,
            price_prompt_per_1m=self.price_prompt_per_1m,
            price_completion_per_1m=self.price_completion_per_1m,
            batch=self.batch,
            batch_poll_s=self.batch_poll_s,
        )

    def client(self, model: str, out_dir: Path) -> LlmClient:
        return LlmClient(self.endpoint(model), self.cache(out_dir))

    def judge_specs(self) -> list[JudgeSpec]:
        """Configured judges; offline, the heuristic and MiniLM judges when none is configured."""
        specs = parse_judges(self.judges, self.judges_file)
        if not specs and self.resolved_backend() == "rules":
            specs = [JudgeSpec(name, name) for name in OFFLINE_JUDGES]
        return specs

    def judge_client(self, spec: JudgeSpec, out_dir: Path) -> LlmClient:
        config = self.endpoint(spec.model)
        if spec.base_url:
            key = self.judge_api_keys.get(spec.api_key_env, NO_KEY) if spec.api_key_env else NO_KEY
            config = replace(config, base_url=spec.base_url, api_key=key)
        return LlmClient(config, self.cache(out_dir))

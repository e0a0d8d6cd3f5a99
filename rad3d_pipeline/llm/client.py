"""Async client for any OpenAI-compatible endpoint, with the cache, retries and accounting.

- Bounded concurrency (a semaphore) and a per-endpoint request-rate limit.
- Retries with tenacity on 429, 5xx, timeouts and connection errors: exponential backoff
  with jitter, honouring a ``Retry-After`` header.
- Every reply is cached before it is parsed; a reply that fails to parse is recorded as a
  reject and the request is retried as a new attempt (a bounded number of times).
- The API key never appears in a repr, a log line or metadata.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

from rad3d_pipeline.llm.cache import ResponseCache, request_key
from rad3d_pipeline.llm.parsers import ParseError

log = logging.getLogger("rad3d.llm")
T = TypeVar("T")

RETRYABLE_STATUS = {408, 409, 425, 429}
MAX_RETRY_AFTER_S = 300.0


@dataclass(frozen=True)
class EndpointConfig:
    """One model on one OpenAI-compatible endpoint."""

    model: str
    base_url: str | None = None  # None: the client's own OPENAI_BASE_URL (or OpenAI's default)
    api_key: str | None = field(default=None, repr=False)  # None: OPENAI_API_KEY
    max_concurrency: int = 8
    requests_per_minute: float = 0.0  # 0: unlimited
    timeout_s: float = 120.0
    max_attempts: int = 6  # transport retries per request
    max_parse_attempts: int = 3  # fresh requests after an unparsable reply
    temperature: float = 0.0
    max_tokens: int | None = 1024
    json_mode: bool = False
    price_prompt_per_1m: float = 0.0  # USD per million prompt tokens, for the cost estimate
    price_completion_per_1m: float = 0.0
    batch: bool = False  # first attempts through the OpenAI Batch API (see rad3d_pipeline.llm.batch)
    batch_poll_s: float = 30.0

    def sampling_params(self) -> dict[str, Any]:
        params: dict[str, Any] = {"temperature": self.temperature}
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        if self.json_mode:
            params["response_format"] = {"type": "json_object"}
        return params


@dataclass
class Accounting:
    """What a stage cost: requests sent, cache hits, retries, rejects, tokens, dollars."""

    requests: int = 0
    cache_hits: int = 0
    retries: int = 0
    rejects: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, other: Accounting) -> None:
        for name in self.__dataclass_fields__:
            setattr(self, name, getattr(self, name) + getattr(other, name))

    def as_dict(self) -> dict[str, float | int]:
        return {name: getattr(self, name) for name in self.__dataclass_fields__}


@dataclass(frozen=True)
class Reject:
    """A reply that failed to parse (kept: it was paid for)."""

    key: str
    attempt: int
    model: str
    raw_text: str
    reason: str


@dataclass
class Outcome(Generic[T]):
    """The parsed value of one logical request (None when every attempt failed)."""

    value: T | None
    key: str
    rejects: list[Reject] = field(default_factory=list)
    error: str | None = None


class RateLimiter:
    """Spaces request starts at least 60 / rpm seconds apart."""

    def __init__(self, requests_per_minute: float) -> None:
        self.interval = 60.0 / requests_per_minute if requests_per_minute > 0 else 0.0
        self._next = 0.0
        self._lock = asyncio.Lock()

    async def wait(self) -> None:
        if self.interval <= 0:
            return
        async with self._lock:
            now = time.monotonic()
            start = max(now, self._next)
            self._next = start + self.interval
        delay = start - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError | openai.RateLimitError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500 or exc.status_code in RETRYABLE_STATUS
    return False


def retry_after_seconds(exc: BaseException | None) -> float | None:
    """The server's Retry-After (seconds or an HTTP date), when it sent one."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    raw = headers.get("retry-after-ms")
    if raw:
        try:
            return min(float(raw) / 1000.0, MAX_RETRY_AFTER_S)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return min(max(float(raw), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        parsed = email.utils.parsedate_to_datetime(raw)
        return min(max(parsed.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER_S)


class _WaitRetryAfterOrBackoff:
    def __init__(self) -> None:
        self.backoff = wait_random_exponential(multiplier=0.5, max=30)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = retry_after_seconds(exc)
        return after if after is not None else float(self.backoff(state))


def slim_messages(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Messages as stored beside a cached reply: inline images replaced by their sha256 (they can be large)."""
    out = []
    for message in messages:
        content = message.get("content")
        if isinstance(content, list):
            parts = []
            for part in content:
                url = part.get("image_url", {}).get("url", "") if isinstance(part, dict) else ""
                if url.startswith("data:"):
                    digest = hashlib.sha256(url.encode()).hexdigest()
                    parts.append({"type": "image_url", "image_url": {"url": f"sha256:{digest}"}})
                else:
                    parts.append(part)
            message = {**message, "content": parts}
        out.append(message)
    return out


class LlmClient:
    """Chat completions for one endpoint, through the cache."""

    def __init__(
        self,
        endpoint: EndpointConfig,
        cache: ResponseCache,
        *,
        sdk_client: openai.AsyncOpenAI | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.cache = cache
        self.accounting = Accounting()
        self._sdk = sdk_client
        self._semaphore: asyncio.Semaphore | None = None
        self._limiter: RateLimiter | None = None

    def _client(self) -> openai.AsyncOpenAI:
        if self._sdk is None:
            self._sdk = openai.AsyncOpenAI(
                base_url=self.endpoint.base_url,
                api_key=self.endpoint.api_key,
                max_retries=0,  # tenacity retries, honouring Retry-After
                timeout=self.endpoint.timeout_s,
            )
        return self._sdk

    def _ensure_loop_state(self) -> None:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.endpoint.max_concurrency)
            self._limiter = RateLimiter(self.endpoint.requests_per_minute)

    async def _send(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> tuple[str, int, int]:
        assert self._semaphore is not None and self._limiter is not None
        async for attempt in AsyncRetrying(
            retry=retry_if_exception(is_retryable),
            wait=_WaitRetryAfterOrBackoff(),
            stop=stop_after_attempt(self.endpoint.max_attempts),
            reraise=True,
            before_sleep=self._count_retry,
        ):
            with attempt:
                async with self._semaphore:
                    await self._limiter.wait()
                    self.accounting.requests += 1
                    response = await self._client().chat.completions.create(
                        model=self.endpoint.model,
                        messages=messages,  # type: ignore[arg-type]
                        **params,
                    )
        text = response.choices[0].message.content or ""
        usage = response.usage
        return text, (usage.prompt_tokens if usage else 0), (usage.completion_tokens if usage else 0)

    def _count_retry(self, state: RetryCallState) -> None:
        self.accounting.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        log.info("retrying %s after %s", self.endpoint.model, type(exc).__name__)

    async def complete(
        self, messages: list[dict[str, Any]], *, template_version: str, attempt: int = 0
    ) -> tuple[str, str]:
        """The reply text and its cache key; from the cache when it has it."""
        self._ensure_loop_state()
        params = self.endpoint.sampling_params()
        key = request_key(self.endpoint.model, messages, params, template_version, attempt)
        cached = self.cache.get(key)
        if cached is not None:
            self.accounting.cache_hits += 1
            return cached.text, key
        text, prompt_tokens, completion_tokens = await self._send(messages, params)
        # Stored before anything parses it.
        self.cache.put(
            key,
            model=self.endpoint.model,
            text=text,
            request={
                "messages": slim_messages(messages),
                "params": params,
                "template_version": template_version,
                "attempt": attempt,
            },
            prompt_tokens=prompt_tokens,
            completion_tokens=completion_tokens,
        )
        self.accounting.prompt_tokens += prompt_tokens
        self.accounting.completion_tokens += completion_tokens
        self.accounting.cost_usd += (
            prompt_tokens * self.endpoint.price_prompt_per_1m
            + completion_tokens * self.endpoint.price_completion_per_1m
        ) / 1e6
        return text, key

    async def complete_parsed(
        self, messages: list[dict[str, Any]], parse: Callable[[str], T], *, template_version: str
    ) -> Outcome[T]:
        """Request, parse; on a parse error record a reject and ask again (a new attempt)."""
        rejects: list[Reject] = []
        first_key = ""
        for attempt in range(self.endpoint.max_parse_attempts):
            try:
                text, key = await self.complete(messages, template_version=template_version, attempt=attempt)
            except Exception as exc:  # transport failure after every retry
                self.accounting.failures += 1
                return Outcome(None, first_key, rejects, f"{type(exc).__name__}: {exc}")
            first_key = first_key or key
            try:
                return Outcome(parse(text), first_key, rejects)
            except ParseError as exc:
                self.accounting.rejects += 1
                rejects.append(Reject(key, attempt, self.endpoint.model, text, str(exc)))
        return Outcome(None, first_key, rejects, f"unparsable after {self.endpoint.max_parse_attempts} attempts")

    async def aclose(self) -> None:
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = None
        self._semaphore = None
        self._limiter = None


def run_all(jobs: Sequence[Callable[[], Awaitable[T]]], clients: Sequence[LlmClient] = ()) -> list[T]:
    """Run coroutines concurrently from synchronous code (each client bounds its own concurrency)."""

    async def _main() -> list[T]:
        try:
            return list(await asyncio.gather(*(job() for job in jobs)))
        finally:
            for client in clients:
                await client.aclose()

    return asyncio.run(_main())

"""Async client for any OpenAI-compatible endpoint, with the cache, retries and accounting.

- Bounded concurrency (a semaphore) and a per-endpoint request-rate limit.
- Every transient fault is retried with tenacity (exponential backoff with jitter, honouring a
  ``Retry-After`` header in seconds or as an HTTP date; an unparsable one falls back to the
  backoff) and counted by kind: HTTP 429/5xx, timeouts, connection errors (refused, reset
  mid-body), and 200 replies that carry no answer: a body that is not JSON or is cut off, an HTML
  page from a proxy, an ``error`` object, no ``choices``, an empty ``content``.
- Every reply is cached before it is parsed; a reply that fails to parse, or that was cut at
  ``finish_reason: length``, is recorded as a reject and asked again as a new attempt (a bounded
  number of fresh requests per run; cached rejects of earlier runs do not count against it, so a
  rerun asks again for exactly the requests that ended without an answer).
- A request that ends without a parsed answer is an :class:`Outcome` with ``value None`` and the
  kind of its last error; nothing is cached as its answer. An endpoint that refuses every request
  from the start (connection refused, 401, 404 model not found) is marked unusable on the client
  (``fatal``), and the remaining requests fail at once without being sent.
- The API key never appears in a repr, a log line or metadata.
"""

from __future__ import annotations

import asyncio
import email.utils
import hashlib
import json
import logging
import os
import re
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx
import openai
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception, stop_after_attempt, wait_random_exponential

from rad3d_pipeline.common.progress import Progress
from rad3d_pipeline.llm.cache import ResponseCache, request_key
from rad3d_pipeline.llm.parsers import ParseError

log = logging.getLogger("rad3d.llm")
T = TypeVar("T")

RETRYABLE_STATUS = {408, 409, 425, 429}
FATAL_STATUS = {401, 403, 404}  # a wrong key, no access, no such model or route: every request would fail
MAX_RETRY_AFTER_S = 300.0
TRUNCATED = "truncated"  # the reject reason kind of a reply cut at finish_reason: length
UNPARSABLE = "unparsable"
ENDPOINT_UNUSABLE = "endpoint unusable"


def template_name(template_version: str) -> str:
    """``scoring@1`` -> ``scoring``."""
    return template_version.split("@", 1)[0]


def structured_response_format(template: str) -> dict[str, Any] | None:
    """The strict JSON schema ``response_format`` of a prompt (``rad3d_pipeline.llm.schemas``), if it has one."""
    from rad3d_pipeline.llm import schemas  # lazily: only with structured outputs on

    try:
        found: dict[str, Any] | None = schemas.response_format_for(template)
    except KeyError:
        return None
    return found


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
    structured_outputs: bool = False  # a strict json_schema response_format per prompt (OpenAI, vLLM)
    price_prompt_per_1m: float = 0.0  # USD per million prompt tokens, for the cost estimate
    price_completion_per_1m: float = 0.0
    batch: bool = False  # first attempts through the OpenAI Batch API (see rad3d_pipeline.llm.batch)
    batch_poll_s: float = 30.0

    def sampling_params(self, template: str | None = None) -> dict[str, Any]:
        """Sampling parameters of a request; with structured outputs on, the prompt's strict schema."""
        params: dict[str, Any] = {"temperature": self.temperature}
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        schema = structured_response_format(template) if self.structured_outputs and template else None
        if schema is not None:
            params["response_format"] = schema
        elif self.json_mode:
            params["response_format"] = {"type": "json_object"}
        return params


def _add_counts(a: dict[str, int], b: dict[str, int]) -> dict[str, int]:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


@dataclass
class Accounting:
    """What a stage cost: logical requests (prompts), HTTP requests sent, cache hits, retries and
    failures by kind, rejects, tokens, dollars."""

    prompts: int = 0  # logical requests asked (each ends with an answer or a failure)
    requests: int = 0  # HTTP requests sent
    cache_hits: int = 0
    retries: int = 0
    retries_by_kind: dict[str, int] = field(default_factory=dict)
    rejects: int = 0  # fresh replies that did not parse (or were cut off)
    failures: int = 0  # prompts that ended without a parsed answer
    failures_by_kind: dict[str, int] = field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def add(self, other: Accounting) -> None:
        for name in self.__dataclass_fields__:
            mine, theirs = getattr(self, name), getattr(other, name)
            setattr(self, name, _add_counts(mine, theirs) if isinstance(mine, dict) else mine + theirs)

    def as_dict(self) -> dict[str, Any]:
        return {
            name: dict(sorted(v.items())) if isinstance(v := getattr(self, name), dict) else v
            for name in self.__dataclass_fields__
        }


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
    error_kind: str | None = None  # the kind of the last error when value is None
    attempts: int = 0  # HTTP requests sent for it in this run


class ReplyError(Exception):
    """A 200 that carries no answer (not JSON, cut off, an HTML page, an error object, no choices,
    empty content): transient, retried like a 5xx."""

    def __init__(self, kind: str, message: str) -> None:
        super().__init__(message)
        self.kind = kind


class EndpointUnusable(Exception):
    """The endpoint refused every request so far (connection refused, 401, 404): not sent."""


class RequestFailed(Exception):
    """A request that ended without a reply after every retry."""

    def __init__(self, kind: str, message: str, attempts: int) -> None:
        super().__init__(message)
        self.kind = kind
        self.attempts = attempts


@dataclass(frozen=True)
class Reply:
    text: str
    finish_reason: str
    prompt_tokens: int
    completion_tokens: int


def _content_text(content: Any) -> str:
    if isinstance(content, list):  # some servers send content parts
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict))
    return content if isinstance(content, str) else ""


def reply_from_body(content_type: str, body: str) -> Reply:
    """The answer of a 200 chat-completions body, or :class:`ReplyError` saying what is wrong with it."""
    stripped = body.strip()
    if "html" in content_type.lower() or stripped[:1] == "<":
        title = re.search(r"<title>(.*?)</title>", stripped, re.IGNORECASE | re.DOTALL)
        what = title.group(1).strip() if title else stripped[:80]
        raise ReplyError("HTML page", f"an HTML page instead of JSON ({' '.join(what.split())!r})")
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError as exc:
        if stripped[:1] in "{[" and stripped[-1:] not in "}]":
            raise ReplyError("cut-off body", f"the body is cut off after {len(body)} characters") from None
        raise ReplyError("non-JSON body", f"the body is not JSON ({exc.msg}): {stripped[:80]!r}") from None
    if not isinstance(data, dict):
        raise ReplyError("non-JSON body", f"the body is JSON but not an object: {stripped[:80]!r}")
    choices = data.get("choices")
    if data.get("error") and not choices:
        error = data["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        raise ReplyError("error object", f"an error object instead of choices: {str(message)[:200]}")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise ReplyError("no choices", "a reply without choices")
    choice = choices[0]
    message = choice.get("message") if isinstance(choice.get("message"), dict) else {}
    text = _content_text(message.get("content") if message else None)
    finish = str(choice.get("finish_reason") or "")
    usage = data.get("usage") if isinstance(data.get("usage"), dict) else {}
    prompt_tokens = int(usage.get("prompt_tokens") or 0) if usage else 0
    completion_tokens = int(usage.get("completion_tokens") or 0) if usage else 0
    if not text.strip() and finish != "length":
        raise ReplyError("empty content", f"an empty content (finish_reason {finish or 'none'})")
    return Reply(text, finish or "stop", prompt_tokens, completion_tokens)


def error_kind(exc: BaseException) -> str:
    """The kind of a transport fault, as counted in the accounting and the failure records."""
    if isinstance(exc, RequestFailed | ReplyError):
        return exc.kind
    if isinstance(exc, EndpointUnusable):
        return ENDPOINT_UNUSABLE
    if isinstance(exc, openai.APITimeoutError):
        return "timeout"
    if isinstance(exc, openai.APIConnectionError):
        return "connection error"
    if isinstance(exc, openai.APIStatusError):
        return f"HTTP {exc.status_code}"
    return type(exc).__name__


def describe_error(exc: BaseException) -> str:
    """One line: the error and its innermost cause (``Connection error. (ConnectError: [Errno 111] ...)``)."""
    if isinstance(exc, openai.APIStatusError):
        body = exc.body
        if isinstance(body, dict):
            inner = body.get("error", body)
            message = inner.get("message") if isinstance(inner, dict) else None
            text = f"HTTP {exc.status_code}: {message or body}"
        else:
            text = f"HTTP {exc.status_code}: {exc.message}"
    else:
        text = f"{type(exc).__name__}: {exc}"
        cause = exc.__cause__ or exc.__context__
        seen = 0
        while cause is not None and (cause.__cause__ or cause.__context__) is not None and seen < 10:
            cause = cause.__cause__ or cause.__context__
            seen += 1
        if cause is not None and str(cause) and str(cause) not in text:
            text += f" ({type(cause).__name__}: {cause})"
    return " ".join(text.split())[:500]


def is_retryable(exc: BaseException) -> bool:
    if isinstance(exc, ReplyError):
        return True
    if isinstance(exc, openai.APITimeoutError | openai.APIConnectionError | openai.RateLimitError):
        return True
    if isinstance(exc, openai.APIStatusError):
        return exc.status_code >= 500 or exc.status_code in RETRYABLE_STATUS
    return isinstance(exc, httpx.TransportError)


def is_fatal(exc: BaseException) -> bool:
    """Faults that, before any request has succeeded, mean the endpoint cannot be used at all."""
    if isinstance(exc, openai.APITimeoutError):
        return False
    if isinstance(exc, openai.APIConnectionError):
        return True
    if isinstance(exc, openai.APIStatusError):  # not 400/413/422: those can be one prompt's fault
        return exc.status_code in FATAL_STATUS
    return False


def retry_after_seconds(exc: BaseException | None) -> float | None:
    """The server's Retry-After (seconds or an HTTP date), when it sent one that parses."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if not headers:
        return None
    raw = headers.get("retry-after-ms")
    if raw:
        try:
            return min(max(float(raw) / 1000.0, 0.0), MAX_RETRY_AFTER_S)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if not raw:
        return None
    try:
        return min(max(float(raw), 0.0), MAX_RETRY_AFTER_S)
    except ValueError:
        pass
    try:
        parsed = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None  # "soon" and the like: the exponential backoff decides
    return min(max(parsed.timestamp() - time.time(), 0.0), MAX_RETRY_AFTER_S)


class _WaitRetryAfterOrBackoff:
    def __init__(self) -> None:
        self.backoff = wait_random_exponential(multiplier=0.5, max=30)

    def __call__(self, state: RetryCallState) -> float:
        exc = state.outcome.exception() if state.outcome else None
        after = retry_after_seconds(exc)
        return after if after is not None else float(self.backoff(state))


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


@dataclass(frozen=True)
class _Fetched:
    text: str
    finish_reason: str
    cached: bool
    sent: int


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
        self.fatal: str | None = None  # why the endpoint cannot be used, once it refused everything
        self._successes = 0
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

    def describe(self) -> str:
        """``the LLM endpoint http://host/v1 (model m)``: for one-line errors (never the key)."""
        base = self.endpoint.base_url or os.environ.get("OPENAI_BASE_URL") or "https://api.openai.com/v1"
        return f"the LLM endpoint {base.rstrip('/')} (model {self.endpoint.model})"

    def _ensure_loop_state(self) -> None:
        if self._semaphore is None:
            self._semaphore = asyncio.Semaphore(self.endpoint.max_concurrency)
            self._limiter = RateLimiter(self.endpoint.requests_per_minute)

    async def _post(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> Reply:
        raw = await self._client().chat.completions.with_raw_response.create(
            model=self.endpoint.model,
            messages=messages,  # type: ignore[arg-type]
            **params,
        )
        http = raw.http_response
        return reply_from_body(http.headers.get("content-type", ""), http.text)

    async def _send(self, messages: list[dict[str, Any]], params: dict[str, Any]) -> tuple[Reply, int]:
        """One reply, retrying transient faults; :class:`RequestFailed` when every attempt failed."""
        assert self._semaphore is not None and self._limiter is not None
        sent = 0
        reply: Reply | None = None
        try:
            async for attempt in AsyncRetrying(
                retry=retry_if_exception(is_retryable),
                wait=_WaitRetryAfterOrBackoff(),
                stop=stop_after_attempt(self.endpoint.max_attempts),
                reraise=True,
                before_sleep=self._count_retry,
            ):
                with attempt:
                    if self.fatal is not None:
                        raise EndpointUnusable(self.fatal)
                    async with self._semaphore:
                        if self.fatal is not None:
                            raise EndpointUnusable(self.fatal)
                        await self._limiter.wait()
                        self.accounting.requests += 1
                        sent += 1
                        reply = await self._post(messages, params)
        except Exception as exc:
            message = str(exc) if isinstance(exc, EndpointUnusable) else describe_error(exc)
            if self._successes == 0 and self.fatal is None and is_fatal(exc):
                self.fatal = f"{self.describe()} cannot be used: {message}"
                log.info("%s", self.fatal)  # the stage stops with this line (rad3d_pipeline.llm.failures)
            raise RequestFailed(error_kind(exc), message, sent) from exc
        assert reply is not None
        self._successes += 1
        return reply, sent

    def _count_retry(self, state: RetryCallState) -> None:
        self.accounting.retries += 1
        exc = state.outcome.exception() if state.outcome else None
        kind = error_kind(exc) if exc is not None else "unknown"
        self.accounting.retries_by_kind[kind] = self.accounting.retries_by_kind.get(kind, 0) + 1
        log.info("retrying %s after %s", self.endpoint.model, kind)

    async def _fetch(
        self,
        messages: list[dict[str, Any]],
        params: dict[str, Any],
        key: str,
        *,
        template_version: str,
        attempt: int,
    ) -> _Fetched:
        cached = self.cache.get(key)
        if cached is not None:
            self.accounting.cache_hits += 1
            return _Fetched(cached.text, cached.finish_reason, True, 0)
        reply, sent = await self._send(messages, params)
        # Stored before anything parses it.
        self.cache.put(
            key,
            model=self.endpoint.model,
            text=reply.text,
            request={
                "messages": slim_messages(messages),
                "params": params,
                "template_version": template_version,
                "attempt": attempt,
            },
            prompt_tokens=reply.prompt_tokens,
            completion_tokens=reply.completion_tokens,
            finish_reason=reply.finish_reason,
        )
        self.accounting.prompt_tokens += reply.prompt_tokens
        self.accounting.completion_tokens += reply.completion_tokens
        self.accounting.cost_usd += (
            reply.prompt_tokens * self.endpoint.price_prompt_per_1m
            + reply.completion_tokens * self.endpoint.price_completion_per_1m
        ) / 1e6
        return _Fetched(reply.text, reply.finish_reason, False, sent)

    async def complete(
        self, messages: list[dict[str, Any]], *, template_version: str, attempt: int = 0
    ) -> tuple[str, str]:
        """The reply text and its cache key; from the cache when it has it (raises :class:`RequestFailed`)."""
        self._ensure_loop_state()
        params = self.endpoint.sampling_params(template_name(template_version))
        key = request_key(self.endpoint.model, messages, params, template_version, attempt)
        fetched = await self._fetch(messages, params, key, template_version=template_version, attempt=attempt)
        return fetched.text, key

    async def complete_parsed(
        self, messages: list[dict[str, Any]], parse: Callable[[str], T], *, template_version: str
    ) -> Outcome[T]:
        """Request, parse; on a parse error (or a reply cut off) record a reject and ask again (a new attempt).

        Up to ``max_parse_attempts`` fresh requests per run: the cached rejects of earlier runs are
        re-read (and reported again) but not re-asked, so a rerun asks again only what failed.
        """
        self._ensure_loop_state()
        self.accounting.prompts += 1
        params = self.endpoint.sampling_params(template_name(template_version))
        model = self.endpoint.model
        first_key = request_key(model, messages, params, template_version, 0)
        rejects: list[Reject] = []
        fresh = sent = attempt = 0
        while True:
            key = first_key if attempt == 0 else request_key(model, messages, params, template_version, attempt)
            try:
                got = await self._fetch(messages, params, key, template_version=template_version, attempt=attempt)
            except RequestFailed as exc:
                sent += exc.attempts
                cause = exc.__cause__ or exc
                error = str(exc) if isinstance(cause, EndpointUnusable) else f"{type(cause).__name__}: {cause}"
                return self._failed(first_key, rejects, exc.kind, error, sent)
            sent += got.sent
            if got.finish_reason == "length":
                reason = f"{TRUNCATED}: the reply was cut at max_tokens (finish_reason: length)"
            else:
                try:
                    return Outcome(parse(got.text), first_key, rejects, attempts=sent)
                except ParseError as exc:
                    reason = str(exc)
            rejects.append(Reject(key, attempt, model, got.text, reason))
            if not got.cached:
                self.accounting.rejects += 1
                fresh += 1
            if fresh >= self.endpoint.max_parse_attempts:
                kind = TRUNCATED if reason.startswith(TRUNCATED) else UNPARSABLE
                return self._failed(first_key, rejects, kind, f"unparsable after {fresh} attempts: {reason}", sent)
            attempt += 1

    def _failed(self, key: str, rejects: list[Reject], kind: str, error: str, sent: int) -> Outcome[Any]:
        self.accounting.failures += 1
        self.accounting.failures_by_kind[kind] = self.accounting.failures_by_kind.get(kind, 0) + 1
        return Outcome(None, key, rejects, error, kind, sent)

    async def aclose(self) -> None:
        if self._sdk is not None:
            await self._sdk.close()
            self._sdk = None
        self._semaphore = None
        self._limiter = None


def run_all(
    jobs: Sequence[Callable[[], Awaitable[T]]], clients: Sequence[LlmClient] = (), label: str | None = None
) -> list[T]:
    """Run coroutines concurrently from synchronous code (each client bounds its own concurrency).

    Progress (``label: n/N requests``, rate, ETA, retries and cost so far) goes to the ``rad3d.progress``
    logger: the terminal of ``rad3d build`` and the run log.
    """
    models = ", ".join(dict.fromkeys(c.endpoint.model for c in clients)) or "LLM"

    def so_far() -> str:
        retries = sum(c.accounting.retries for c in clients)
        cost = sum(c.accounting.cost_usd for c in clients)
        return f"{retries} retries, ~${cost:.4f}"

    progress = Progress(label or f"LLM {models}", len(jobs), unit="requests", extra=so_far)

    async def counted(job: Callable[[], Awaitable[T]]) -> T:
        try:
            return await job()
        finally:
            progress.advance()

    async def _main() -> list[T]:
        try:
            return list(await asyncio.gather(*(counted(job) for job in jobs)))
        finally:
            for client in clients:
                await client.aclose()

    return asyncio.run(_main())

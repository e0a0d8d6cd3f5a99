"""OpenAI Batch API mode for large runs: JSONL upload, poll, download, into the same cache.

Batch ids are persisted in the cache database, so an interrupted build resumes polling
the batches it already paid for instead of submitting them again. Only first attempts go
through a batch; a reply that fails to parse is retried with ordinary requests.
"""

from __future__ import annotations

import io
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import openai

from rad3d_pipeline.llm.cache import ResponseCache, request_key
from rad3d_pipeline.llm.client import EndpointConfig, ReplyError, reply_from_body, template_name

log = logging.getLogger("rad3d.llm.batch")
TERMINAL = {"completed", "failed", "expired", "cancelled"}


@dataclass(frozen=True)
class BatchRequest:
    messages: list[dict[str, Any]]
    template_version: str


@dataclass
class BatchReport:
    submitted: int = 0
    resumed: int = 0
    cached: int = 0
    received: int = 0
    failed: int = 0


def _params(config: EndpointConfig, request: BatchRequest) -> dict[str, Any]:
    return config.sampling_params(template_name(request.template_version))


def _line(key: str, config: EndpointConfig, request: BatchRequest) -> str:
    body = {"model": config.model, "messages": request.messages, **_params(config, request)}
    return json.dumps({"custom_id": key, "method": "POST", "url": "/v1/chat/completions", "body": body})


def _store_results(
    client: openai.OpenAI, batch: Any, cache: ResponseCache, config: EndpointConfig, requests: dict[str, BatchRequest]
) -> tuple[int, int]:
    received = failed = 0
    if batch.output_file_id:
        content = client.files.content(batch.output_file_id).read().decode("utf-8")
        for raw in content.splitlines():
            if not raw.strip():
                continue
            item = json.loads(raw)
            key = item.get("custom_id", "")
            response = item.get("response") or {}
            body = response.get("body")
            request = requests.get(key)
            if response.get("status_code") != 200:
                failed += 1
                continue
            try:  # the same checks as an ordinary reply: no answer, nothing cached (asked again one by one)
                reply = reply_from_body("application/json", body if isinstance(body, str) else json.dumps(body))
            except ReplyError:
                failed += 1
                continue
            cache.put(
                key,
                model=config.model,
                text=reply.text,
                request={
                    "messages": request.messages if request else [],
                    "params": _params(config, request) if request else config.sampling_params(),
                    "template_version": request.template_version if request else "",
                    "attempt": 0,
                    "batch_id": batch.id,
                },
                prompt_tokens=reply.prompt_tokens,
                completion_tokens=reply.completion_tokens,
                finish_reason=reply.finish_reason,
            )
            received += 1
    return received, failed


def run_batch(
    config: EndpointConfig,
    cache: ResponseCache,
    requests: list[BatchRequest],
    *,
    purpose: str,
    poll_s: float = 30.0,
    timeout_s: float = 24 * 3600.0,
    client: openai.OpenAI | None = None,
) -> BatchReport:
    """Fill the cache with first-attempt replies for ``requests`` through the Batch API."""
    client = client or openai.OpenAI(base_url=config.base_url, api_key=config.api_key, timeout=config.timeout_s)
    by_key = {request_key(config.model, r.messages, _params(config, r), r.template_version, 0): r for r in requests}
    report = BatchReport()
    missing = {k for k in by_key if cache.get(k) is None}
    report.cached = len(by_key) - len(missing)
    pending: list[str] = []
    for batch_id, keys in cache.open_batches(purpose):
        if missing & set(keys):
            pending.append(batch_id)
            report.resumed += 1
            missing -= set(keys)
    if missing:
        keys = sorted(missing)
        payload = "\n".join(_line(k, config, by_key[k]) for k in keys).encode("utf-8")
        uploaded = client.files.create(file=("rad3d_batch.jsonl", io.BytesIO(payload)), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        cache.record_batch(batch.id, purpose, keys, batch.status)
        pending.append(batch.id)
        report.submitted = len(keys)
        log.info("submitted batch %s with %d requests", batch.id, len(keys))
    deadline = time.monotonic() + timeout_s
    while pending:
        for batch_id in list(pending):
            batch = client.batches.retrieve(batch_id)
            if batch.status in TERMINAL:
                received, failed = _store_results(client, batch, cache, config, by_key)
                report.received += received
                report.failed += failed
                cache.record_batch(batch_id, purpose, _keys_of(cache, batch_id, purpose), batch.status)
                pending.remove(batch_id)
        if pending:
            if time.monotonic() > deadline:
                raise TimeoutError(f"batches {pending} still running after {timeout_s:.0f} s; rerun to resume")
            time.sleep(poll_s)
    return report


def _keys_of(cache: ResponseCache, batch_id: str, purpose: str) -> list[str]:
    for bid, keys in cache.open_batches(purpose):
        if bid == batch_id:
            return keys
    return []

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
from rad3d_pipeline.llm.client import EndpointConfig

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


def _line(key: str, config: EndpointConfig, messages: list[dict[str, Any]]) -> str:
    body = {"model": config.model, "messages": messages, **config.sampling_params()}
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
            body = response.get("body") or {}
            if response.get("status_code") != 200 or not body.get("choices"):
                failed += 1
                continue
            text = body["choices"][0]["message"].get("content") or ""
            usage = body.get("usage") or {}
            request = requests.get(key)
            cache.put(
                key,
                model=config.model,
                text=text,
                request={
                    "messages": request.messages if request else [],
                    "params": config.sampling_params(),
                    "template_version": request.template_version if request else "",
                    "attempt": 0,
                    "batch_id": batch.id,
                },
                prompt_tokens=int(usage.get("prompt_tokens", 0)),
                completion_tokens=int(usage.get("completion_tokens", 0)),
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
    params = config.sampling_params()
    by_key = {request_key(config.model, r.messages, params, r.template_version, 0): r for r in requests}
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
        payload = "\n".join(_line(k, config, by_key[k].messages) for k in keys).encode("utf-8")
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

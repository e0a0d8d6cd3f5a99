"""Failure records and the failure budget of an LLM stage.

A request that ends without a parsed answer (every transport retry failed, or every fresh reply
was unparsable or cut off) is a failure: one record (stage, subject, request key, last error kind
and message, attempts) under ``<out>/llm/failures/<stage>/``, never an answer in the cache, so
the next build asks again for exactly these. Each stage may lose at most ``max_failure_rate`` of
its requests; past that, :func:`check_failure_budget` stops it with one line.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from rad3d_pipeline.common.errors import LlmStageError
from rad3d_pipeline.llm.client import Accounting, LlmClient, Outcome

FAILURE_COLUMNS: tuple[str, ...] = (
    "stage",
    "subject",
    "request_key",
    "model",
    "error_kind",
    "error",
    "attempts",
    "rejects",
)

# kind -> (singular, plural) as printed in the budget message and the summary
_KIND_NAMES: dict[str, tuple[str, str]] = {
    "timeout": ("timeout", "timeouts"),
    "connection error": ("connection error", "connection errors"),
    "HTML page": ("HTML page", "HTML pages"),
    "cut-off body": ("cut-off body", "cut-off bodies"),
    "non-JSON body": ("non-JSON body", "non-JSON bodies"),
    "error object": ("error object", "error objects"),
    "no choices": ("reply without choices", "replies without choices"),
    "empty content": ("empty content", "empty contents"),
    "unparsable": ("unparsable reply", "unparsable replies"),
    "truncated": ("reply cut at max_tokens", "replies cut at max_tokens"),
    "endpoint unusable": ("request not sent (endpoint unusable)", "requests not sent (endpoint unusable)"),
}


def kind_label(kind: str, count: int) -> str:
    """``700 timeouts``, ``112 HTTP 500``, ``1 unparsable reply``."""
    singular, plural = _KIND_NAMES.get(kind, (kind, kind))
    return f"{count:,} {singular if count == 1 else plural}"


def describe_kinds(counts: Mapping[str, int]) -> str:
    """Counts by kind, most frequent first: ``700 timeouts, 112 HTTP 500``."""
    ordered = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    return ", ".join(kind_label(kind, n) for kind, n in ordered if n)


def failure_record(stage: str, subject: str, model: str, outcome: Outcome[Any]) -> dict[str, Any]:
    return {
        "stage": stage,
        "subject": subject,
        "request_key": outcome.key,
        "model": model,
        "error_kind": outcome.error_kind or "",
        "error": " ".join((outcome.error or "").split()),
        "attempts": outcome.attempts,
        "rejects": len(outcome.rejects),
    }


def write_failures(records: Iterable[dict[str, Any]], path: Path) -> int:
    """The records as JSON lines (one per failed request, deduplicated by request key); an empty
    list removes an earlier file. Returns the number written."""
    unique: dict[str, dict[str, Any]] = {}
    for record in records:
        unique.setdefault(f"{record['model']}:{record['request_key']}", record)
    if not unique:
        path.unlink(missing_ok=True)
        return 0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for record in unique.values():
            handle.write(json.dumps({c: record.get(c) for c in FAILURE_COLUMNS}, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return len(unique)


def read_failures(folder: Path) -> list[dict[str, Any]]:
    """Every failure record under ``folder`` (``<out>/llm/failures`` or one stage's folder)."""
    records = []
    for path in sorted(folder.rglob("*.jsonl")) if folder.is_dir() else []:
        for line in path.read_text(encoding="utf-8").splitlines():
            if line.strip():
                records.append(json.loads(line))
    return records


def endpoint_error(stage: str, clients: Iterable[LlmClient]) -> None:
    """Stop the stage when one of its endpoints could not be used at all (refused, 401, 404)."""
    for client in clients:
        if client.fatal:
            raise LlmStageError(f"{stage}: {client.fatal}")


def check_failure_budget(
    stage: str, accounting: Accounting, max_failure_rate: float, details: Path, clients: Iterable[LlmClient] = ()
) -> None:
    """Raise :class:`LlmStageError` (one line) when more requests failed than the budget allows."""
    clients = list(clients)
    endpoint_error(stage, clients)
    asked, failed = accounting.prompts, accounting.failures
    if asked == 0 or failed == 0:
        return
    rate = failed / asked
    if rate <= max_failure_rate:
        return
    kinds = describe_kinds(accounting.failures_by_kind) or f"{failed:,} failures"
    where = ""
    if failed == asked and clients:
        where = "every request to " + ", ".join(c.describe().removeprefix("the LLM endpoint ") for c in clients)
        where += " failed; "
    message = (
        f"{stage}: {where}{failed:,} of {asked:,} requests failed ({rate * 100:.1f}%, budget "
        f"{max_failure_rate * 100:g}%): {kinds}; rerun to retry only these; details in {details}"
    )
    raise LlmStageError(" ".join(message.split()))

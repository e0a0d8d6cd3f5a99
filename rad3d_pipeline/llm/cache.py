"""Content-addressed, persistent cache of LLM replies (SQLite, WAL, one row per request).

The key covers everything that determines a reply: the model, the messages, the sampling
parameters, the prompt-template version and the attempt number (a reply that failed to
parse is retried as attempt 1, 2, ... so the bad reply stays cached and is not asked for
again). A reply is stored the moment it arrives, before anything parses it: nothing paid
for is lost, and a rerun of an unchanged build sends no request at all.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any


def request_key(
    model: str, messages: list[dict[str, Any]], params: dict[str, Any], template_version: str, attempt: int = 0
) -> str:
    """The content address of one request."""
    payload = {
        "model": model,
        "messages": messages,
        "params": params,
        "template_version": template_version,
        "attempt": attempt,
    }
    blob = json.dumps(payload, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CachedReply:
    key: str
    text: str
    model: str
    prompt_tokens: int
    completion_tokens: int
    created: float
    finish_reason: str = "stop"  # "length": cut at max_tokens (a reject, asked again)


_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    text TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    request TEXT NOT NULL,
    created REAL NOT NULL,
    finish_reason TEXT NOT NULL DEFAULT 'stop'
);
CREATE TABLE IF NOT EXISTS batches (
    batch_id TEXT PRIMARY KEY,
    purpose TEXT NOT NULL,
    keys TEXT NOT NULL,
    status TEXT NOT NULL,
    created REAL NOT NULL
);
"""


class ResponseCache:
    """Replies keyed by :func:`request_key`; safe across threads and processes."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        with self._connect() as conn:
            conn.executescript(_SCHEMA)
            columns = {row[1] for row in conn.execute("PRAGMA table_info(replies)")}
            if "finish_reason" not in columns:  # a cache written before finish reasons were kept
                try:
                    conn.execute("ALTER TABLE replies ADD COLUMN finish_reason TEXT NOT NULL DEFAULT 'stop'")
                except sqlite3.OperationalError as exc:  # another process added it first
                    if "duplicate column" not in str(exc):
                        raise

    @contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(self.path, timeout=60, isolation_level=None)
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
        yield conn

    def get(self, key: str) -> CachedReply | None:
        with self._connect() as conn:
            row = conn.execute(
                "SELECT key, text, model, prompt_tokens, completion_tokens, created, finish_reason FROM replies "
                "WHERE key = ?",
                (key,),
            ).fetchone()
        if row is None:
            return None
        return CachedReply(row[0], row[1], row[2], int(row[3]), int(row[4]), float(row[5]), str(row[6] or "stop"))

    def put(
        self,
        key: str,
        *,
        model: str,
        text: str,
        request: dict[str, Any],
        prompt_tokens: int = 0,
        completion_tokens: int = 0,
        finish_reason: str = "stop",
    ) -> None:
        """Store a reply (durably, before the caller parses it). An existing key is kept."""
        with self._connect() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO replies (key, model, text, prompt_tokens, completion_tokens, request, created, "
                "finish_reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    key,
                    model,
                    text,
                    prompt_tokens,
                    completion_tokens,
                    json.dumps(request, sort_keys=True, ensure_ascii=False),
                    time.time(),
                    finish_reason or "stop",
                ),
            )

    def __len__(self) -> int:
        with self._connect() as conn:
            return int(conn.execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    # Batch API bookkeeping: batch ids persist so an interrupted build resumes polling.
    def record_batch(self, batch_id: str, purpose: str, keys: list[str], status: str) -> None:
        with self._connect() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO batches VALUES (?, ?, ?, ?, ?)",
                (batch_id, purpose, json.dumps(keys), status, time.time()),
            )

    def open_batches(self, purpose: str) -> list[tuple[str, list[str]]]:
        with self._connect() as conn:
            rows = conn.execute(
                "SELECT batch_id, keys FROM batches WHERE purpose = ? AND status NOT IN ('completed', 'failed', "
                "'expired', 'cancelled') ORDER BY created",
                (purpose,),
            ).fetchall()
        return [(str(r[0]), list(json.loads(r[1]))) for r in rows]

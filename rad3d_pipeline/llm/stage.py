"""What one run of an LLM stage used and lost: accounting, rejects and failure records, kept on disk.

Every LLM stage (candidate generation, scoring, the judges, the spatial judge) collects its
clients' accounting, the replies it could not parse (rejects) and the requests that ended without an
answer (failures) in an :class:`LlmRun`; :func:`write_llm_record` keeps them under ``<out>/llm/``
(per partition range), where the build summary and the rerun read them.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rad3d_pipeline.common.parquet_atomic import write_parquet_atomic
from rad3d_pipeline.llm.client import Accounting, LlmClient
from rad3d_pipeline.llm.failures import write_failures
from rad3d_pipeline.open_qa.llm_generation import StageResult, rejects_frame


@dataclass
class LlmRun:
    """One stage run's backend, its clients, their summed accounting, and the rejects and failures."""

    backend: str
    accounting: Accounting = field(default_factory=Accounting)
    result: StageResult = field(default_factory=StageResult)
    clients: list[LlmClient] = field(default_factory=list)

    def used(self, client: LlmClient) -> None:
        """Count ``client``'s requests (call once, after its last request)."""
        self.accounting.add(client.accounting)


@dataclass(frozen=True)
class LlmRecord:
    """Where a run's records went (absolute paths) and its accounting."""

    rejects_file: Path
    failures_file: Path | None  # None when no request failed
    accounting: dict[str, Any]


def range_name(keys: Sequence[str]) -> str:
    """The file name of a partition range: ``first..last`` (``|`` as ``_``), ``all`` when unpartitioned."""
    return f"{keys[0]}..{keys[-1]}".replace("|", "_") if keys else "all"


def write_llm_record(out: Path, stage: str, keys: Sequence[str], run: LlmRun) -> LlmRecord:
    """Rejects (Parquet), failure records (JSONL) and accounting (JSON) of one run under ``<out>/llm/``."""
    folder = out / "llm"
    name = range_name(keys)
    rejects_file = (folder / "rejects" / stage / f"{name}.parquet").resolve()
    write_parquet_atomic(rejects_frame(run.result.rejects), rejects_file)
    failures_path = (folder / "failures" / stage / f"{name}.jsonl").resolve()
    failed = write_failures(run.result.failures, failures_path)
    (folder / "accounting").mkdir(parents=True, exist_ok=True)
    accounting = run.accounting.as_dict()
    record = {
        "backend": run.backend,
        "partitions": f"{keys[0]}..{keys[-1]}" if keys else "",
        **accounting,
        "failure_records": failed,
        "failures_file": str(failures_path) if failed else "",
    }
    (folder / "accounting" / f"{stage}.json").write_text(json.dumps(record, indent=2))
    return LlmRecord(rejects_file, failures_path if failed else None, accounting)

"""The build summary printed at the end of ``rad3d build``."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from rad3d_pipeline.release.export import RELEASE_FOLDER


def accounting_summary(out: Path) -> dict[str, dict[str, Any]]:
    """The LLM accounting of the last run of each LLM stage (requests, cache hits, tokens, cost)."""
    folder = out / "llm" / "accounting"
    if not folder.is_dir():
        return {}
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def print_volumes_summary(out: Path) -> None:
    """One line per volume profile: .npy files in the manifest, and the quarantined volumes."""
    folder = out / "tables" / "volumes"
    files = sorted(folder.glob("*.parquet")) if folder.is_dir() else []
    if not files:
        return
    manifest = pd.concat([pd.read_parquet(f, columns=["VolumeName", "profile", "status"]) for f in files])
    quarantine = out / "volumes" / "quarantine.csv"
    # Reasons can span lines (SimpleITK's messages): count records, not lines.
    bad = len(pd.read_csv(quarantine, dtype=str, keep_default_na=False)) if quarantine.exists() else 0
    for profile, group in manifest.groupby("profile", sort=True):
        written = int((group["status"] == "written").sum())
        print(
            f"Volumes {profile}: {len(group)} .npy ({written} written, {len(group) - written} unchanged) "
            f"in {(out / 'volumes' / str(profile)).resolve()}"
        )
    if bad:
        print(f"Quarantined volumes: {bad} (see {quarantine.resolve()})")


def print_crosscheck(out: Path) -> None:
    """Per split: volumes with a report but no label row and the reverse (a cut-off file shows here)."""
    path = out / "quarantine" / "crosscheck.json"
    try:
        counts = json.loads(path.read_text())
    except (OSError, ValueError):
        return
    for split, entry in sorted(counts.items()):
        if entry.get("skipped"):
            print(f"Labels against reports, {split}: not compared ({entry['skipped']})")
            continue
        gaps = int(entry.get("reports_without_labels") or 0), int(entry.get("labels_without_reports") or 0)
        if any(gaps):
            print(
                f"Labels against reports, {split}: {gaps[0]:,} volume(s) with a report but no labels, "
                f"{gaps[1]:,} with labels but no report (see {path.resolve()})"
            )


def print_summary(out: Path) -> None:
    export = out / "tables" / "release_export" / "all.parquet"
    if export.exists():
        rows = pd.read_parquet(export, columns=["release_split", "Task", "Subtask", "subtask_name"])
        print("\nQA rows per split, task and subtask:")
        for (split, task), group in rows.groupby(["release_split", "Task"], sort=True):
            subtasks = group.groupby(["Subtask", "subtask_name"]).size()
            parts = ", ".join(f"{name}={n}" for (_, name), n in subtasks.items())
            print(f"  {split} Task {task}: {len(group)} rows ({parts})")
        written = time.strftime("%Y-%m-%d %H:%M", time.localtime(export.stat().st_mtime))
        print(f"\nRelease ({written}) in {(out / RELEASE_FOLDER).resolve()}")
    quarantine_dir = out / "quarantine"
    files = sorted(quarantine_dir.glob("*.csv")) if quarantine_dir.exists() else []
    # Records, not lines: a quarantined report keeps its raw multi-line text.
    counts = {f.name: len(pd.read_csv(f, dtype=str, keep_default_na=False)) for f in files}
    total = sum(counts.values())
    print(
        f"Quarantined input rows: {total}"
        + (f" ({', '.join(f'{k}: {v}' for k, v in counts.items() if v)})" if total else "")
    )
    if total:
        print(f"  see {quarantine_dir.resolve()}")
    print_crosscheck(out)
    print_volumes_summary(out)
    accounting = accounting_summary(out)
    if accounting:
        print("LLM use in the last runs:")
        for stage, acc in accounting.items():
            print(f"  {llm_stage_line(stage, acc)}")


def _kinds(counts: dict[str, int]) -> str:
    from rad3d_pipeline.llm.failures import describe_kinds

    return describe_kinds({str(k): int(v) for k, v in counts.items()})


def llm_stage_line(stage: str, acc: dict[str, Any]) -> str:
    """``qa_scores: 120 requests sent (96 prompts), 30 cache hits, 12 retries (5 HTTP 429, ...), 4 rejects,
    2 failures (...; left out, records in ...), 1234+567 tokens, ~$0.0012``."""
    if acc.get("backend") == "rules":
        return f"{stage}: offline rules backend, no requests"
    retries = int(acc.get("retries", 0))
    by_kind = _kinds(acc.get("retries_by_kind") or {})
    failures = int(acc.get("failures", 0))
    failed = f"{failures} failures"
    if failures:
        where = acc.get("failures_file") or "<out>/llm/failures/"
        failed += f" ({_kinds(acc.get('failures_by_kind') or {})}; their rows are left out, records in {where})"
    prompts = acc.get("prompts")
    return (
        f"{stage}: {acc.get('requests', 0)} requests sent"
        + (f" for {prompts} prompts" if prompts is not None else "")
        + f", {acc.get('cache_hits', 0)} cache hits, {retries} retries"
        + (f" ({by_kind})" if by_kind else "")
        + f", {acc.get('rejects', 0)} rejects, {failed}, "
        f"{acc.get('prompt_tokens', 0)}+{acc.get('completion_tokens', 0)} tokens, ~${float(acc.get('cost_usd', 0)):.4f}"
    )

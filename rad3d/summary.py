"""The build summary printed at the end of ``rad3d build``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd

from rad3d_pipeline.release import RELEASE_FOLDER


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


def print_summary(out: Path) -> None:
    export = out / "tables" / "release_export" / "all.parquet"
    if export.exists():
        rows = pd.read_parquet(export, columns=["release_split", "Task", "Subtask", "subtask_name"])
        print("\nQA rows per split, task and subtask:")
        for (split, task), group in rows.groupby(["release_split", "Task"], sort=True):
            subtasks = group.groupby(["Subtask", "subtask_name"]).size()
            parts = ", ".join(f"{name}={n}" for (_, name), n in subtasks.items())
            print(f"  {split} Task {task}: {len(group)} rows ({parts})")
        print(f"\nRelease written to {(out / RELEASE_FOLDER).resolve()}")
    quarantine_dir = out / "quarantine"
    files = sorted(quarantine_dir.glob("*.csv")) if quarantine_dir.exists() else []
    counts = {f.name: max(0, sum(1 for _ in f.open()) - 1) for f in files}
    total = sum(counts.values())
    print(
        f"Quarantined input rows: {total}"
        + (f" ({', '.join(f'{k}: {v}' for k, v in counts.items() if v)})" if total else "")
    )
    if total:
        print(f"  see {quarantine_dir.resolve()}")
    print_volumes_summary(out)
    accounting = accounting_summary(out)
    if accounting:
        print("LLM use in the last runs:")
        for stage, acc in accounting.items():
            if acc.get("backend") == "rules":
                print(f"  {stage}: offline rules backend, no requests")
                continue
            print(
                f"  {stage}: {acc['requests']} requests, {acc['cache_hits']} cache hits, {acc['retries']} retries, "
                f"{acc['rejects']} rejects, {acc['prompt_tokens']}+{acc['completion_tokens']} tokens, "
                f"~${acc['cost_usd']:.4f}"
            )

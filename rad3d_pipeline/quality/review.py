"""Human validation (the paper's appendix D): a review sheet out, the filled sheet back in.

The sheet holds a seeded sample of curated QA with its report, blank five-dimension scores
(0-5) and a blank ``consistent`` column (1 consistent with the report, 0 not). The rubric is
written beside it. Importing the filled sheet gives the agreement table: the consistency
rate overall and after the score filter (an inconsistent pair that the filter would drop
does not count against the set), per task, and the human-vs-LLM rank agreement.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from rad3d_pipeline.llm.parsers import SCORE_DIMENSIONS
from rad3d_pipeline.llm.prompts import load_template
from rad3d_pipeline.quality.consistency import kendall_tau_b, spearman

SHEET_COLUMNS: tuple[str, ...] = (
    "review_id",
    "qa_id",
    "Task",
    "subtask_name",
    "VolumeName",
    "findings",
    "impressions",
    "question",
    "answer",
    "llm_mean",
    *SCORE_DIMENSIONS,
    "consistent",
    "notes",
)
AGREEMENT_COLUMNS: tuple[str, ...] = (
    "scope",
    "n",
    "consistency_rate",
    "consistency_after_filter",
    "human_mean",
    "llm_mean",
    "spearman_human_llm",
    "kendall_human_llm",
)


class ReviewSheetError(ValueError):
    """A filled sheet that cannot be read; the message names the file, row and reason."""


def build_review_sheet(curated: pd.DataFrame, reports: pd.DataFrame, n: int = 600, seed: int = 0) -> pd.DataFrame:
    """A seeded sample of curated open-ended QA (release columns plus qa_id, mean_score)."""
    sample = curated if len(curated) <= n else curated.sample(n=n, random_state=seed)
    texts = reports.drop_duplicates("VolumeName").set_index("VolumeName")
    sheet = pd.DataFrame(
        {
            "review_id": range(1, len(sample) + 1),
            "qa_id": sample["qa_id"].to_numpy(),
            "Task": sample["Task"].to_numpy(),
            "subtask_name": sample["subtask_name"].to_numpy(),
            "VolumeName": sample["VolumeName"].to_numpy(),
            "findings": sample["VolumeName"].map(texts["Findings_EN"]).fillna("").to_numpy(),
            "impressions": sample["VolumeName"].map(texts["Impressions_EN"]).fillna("").to_numpy(),
            "question": sample["Question"].to_numpy(),
            "answer": sample["Answer"].to_numpy(),
            "llm_mean": sample["mean_score"].to_numpy(),
        }
    )
    for column in (*SCORE_DIMENSIONS, "consistent", "notes"):
        sheet[column] = ""
    return sheet[list(SHEET_COLUMNS)]


def rubric_markdown() -> str:
    template = load_template("scoring")
    body = template.user.split("Scoring Dimensions:", 1)[-1].split("Example response format:", 1)[0]
    return (
        "# Review rubric\n\nScore each pair on the five dimensions from 0 (unusable) to 5 (excellent), and set "
        "`consistent` to 1 when the pair agrees with the report, 0 when it does not (a hallucination or an "
        "error).\n\n## Scoring dimensions (the paper's Figure 17)\n" + body.strip() + "\n"
    )


def write_review_sheet(sheet: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sheet.to_csv(path, index=False)
    rubric = path.with_suffix(".rubric.md")
    rubric.write_text(rubric_markdown(), encoding="utf-8")
    return rubric


def read_filled_sheet(path: Path) -> pd.DataFrame:
    """The filled sheet, validated: scores whole numbers 0-5, ``consistent`` 0 or 1."""
    if not path.is_file():
        raise ReviewSheetError(f"{path}: file not found")
    sheet = pd.read_csv(path, dtype=str, keep_default_na=False)
    missing = [c for c in ("qa_id", "Task", "llm_mean", *SCORE_DIMENSIONS, "consistent") if c not in sheet.columns]
    if missing:
        raise ReviewSheetError(f"{path}: missing column(s) {', '.join(missing)}")
    for i, row in sheet.iterrows():
        line = int(str(i)) + 2
        for dim in SCORE_DIMENSIONS:
            if row[dim].strip() not in {"0", "1", "2", "3", "4", "5"}:
                raise ReviewSheetError(f"{path}: line {line}: {dim} must be a whole number 0-5, got {row[dim]!r}")
        if row["consistent"].strip() not in {"0", "1"}:
            raise ReviewSheetError(f"{path}: line {line}: consistent must be 0 or 1, got {row['consistent']!r}")
    out = sheet.copy()
    for dim in SCORE_DIMENSIONS:
        out[dim] = out[dim].astype(int)
    out["consistent"] = out["consistent"].astype(int)
    out["Task"] = out["Task"].astype(int)
    out["llm_mean"] = out["llm_mean"].astype(float)
    out["human_mean"] = out[list(SCORE_DIMENSIONS)].mean(axis=1)
    return out


def _agreement_row(scope: str, rows: pd.DataFrame, min_dimension: float, min_mean: float) -> dict[str, object]:
    passes = (rows[list(SCORE_DIMENSIONS)] >= min_dimension).all(axis=1) & (rows["human_mean"] >= min_mean)
    inconsistent_kept = int(((rows["consistent"] == 0) & passes).sum())
    n = len(rows)
    return {
        "scope": scope,
        "n": n,
        "consistency_rate": float(rows["consistent"].mean()) if n else np.nan,
        "consistency_after_filter": 1 - inconsistent_kept / n if n else np.nan,
        "human_mean": float(rows["human_mean"].mean()) if n else np.nan,
        "llm_mean": float(rows["llm_mean"].mean()) if n else np.nan,
        "spearman_human_llm": spearman(rows["human_mean"].to_numpy(), rows["llm_mean"].to_numpy()) if n > 1 else np.nan,
        "kendall_human_llm": kendall_tau_b(rows["human_mean"].to_numpy(), rows["llm_mean"].to_numpy())
        if n > 1
        else np.nan,
    }


def agreement_table(filled: pd.DataFrame, min_dimension: float = 3.0, min_mean: float = 3.0) -> pd.DataFrame:
    rows = [_agreement_row("all", filled, min_dimension, min_mean)]
    for task, group in filled.groupby("Task", sort=True):
        rows.append(_agreement_row(f"task {task}", group, min_dimension, min_mean))
    return pd.DataFrame(rows, columns=list(AGREEMENT_COLUMNS))

"""Quality stages: several judges on one sample (scoring consistency) and the spatial-question subset.

The quality assets' whole logic. The judges score a seeded sample with the Figure 17 rubric (the
offline heuristic and MiniLM judges, or LLM judges on their own endpoints); their pairwise agreement,
each judge's average and the heatmaps go to ``<out>/reports/``. The spatial judge (keywords or an
LLM) marks which curated questions need spatial reasoning; a verdict it failed to give is a recorded
failure with ``spatial`` missing, never "not spatial".
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from rad3d_pipeline.evaluation.embeddings import SentenceEmbedder
from rad3d_pipeline.llm.client import LlmClient, Outcome, run_all
from rad3d_pipeline.llm.parsers import SCORE_DIMENSIONS
from rad3d_pipeline.llm.prompts import load_template
from rad3d_pipeline.llm.stage import LlmRun
from rad3d_pipeline.open_qa.llm_generation import StageResult, score_candidates
from rad3d_pipeline.quality.benchmark_statistics import heatmap
from rad3d_pipeline.quality.consistency import judge_averages, pairwise_consistency
from rad3d_pipeline.quality.judges import JudgeSpec, heuristic_judge_scores, minilm_scores
from rad3d_pipeline.quality.spatial_questions import (
    CATEGORIES,
    classify_frame,
    parse_spatial_judgement,
    write_spatial_jsonl,
)

PAIR_COLUMNS = ("judge_a", "judge_b", "top100_overlap", "ndcg_at_100", "spearman", "kendall", "mae", "n")
RANKING_METRICS = ["top100_overlap", "ndcg_at_100", "spearman", "kendall", "mae"]
SPATIAL_TABLE_COLUMNS = (
    "qa_id",
    "VolumeName",
    "split",
    "Task",
    "subtask_name",
    "question",
    "answer",
    "spatial",
    "category",
    "judge",
    "reason",
    "image_path",
)


def no_pairs() -> pd.DataFrame:
    """The (empty) pair table when no judge is configured."""
    return pd.DataFrame(columns=list(PAIR_COLUMNS))


def score_with_judges(
    sample: pd.DataFrame, judges: Sequence[JudgeSpec], make_client: Callable[[JudgeSpec], LlmClient]
) -> tuple[pd.DataFrame, LlmRun]:
    """Every judge's five scores and mean per sampled qa_id (long: one row per qa_id x judge), and the LLM use."""
    frames = []
    run = LlmRun("rules")
    for spec in judges:
        if spec.name == "heuristic" and spec.offline:
            scores = heuristic_judge_scores(sample)
        elif spec.name == "minilm-grounding" and spec.offline:
            scores = minilm_scores(sample, SentenceEmbedder())
        else:
            client = make_client(spec)
            run.clients.append(client)
            scores, result = score_candidates(client, sample)
            run.result.extend(result)
            run.used(client)
        frames.append(scores[["qa_id", *SCORE_DIMENSIONS, "mean"]].assign(judge=spec.name))
    run.backend = "openai" if run.clients else "rules"
    return pd.concat(frames, ignore_index=True)[["qa_id", "judge", *SCORE_DIMENSIONS, "mean"]], run


@dataclass
class Consistency:
    """Pairwise agreement of the judges, each judge's averages, and the files written."""

    pairs: pd.DataFrame
    ranking: pd.DataFrame
    folder: Path
    heatmaps: list[Path] = field(default_factory=list)


def _save_png(png: bytes, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(png)
    return path


def write_consistency(judge_scores: pd.DataFrame, judge_names: Sequence[str], folder: Path) -> Consistency:
    """Pairwise Top-100 overlap, NDCG@100, Spearman, Kendall and MAE; CSVs and heatmaps under ``folder``."""
    means = judge_scores.pivot(index="qa_id", columns="judge", values="mean")[list(judge_names)]
    pairs = pairwise_consistency(means)
    ranking = judge_averages(pairs) if len(pairs) else pd.DataFrame()
    folder.mkdir(parents=True, exist_ok=True)
    judge_scores.to_csv(folder / "judge_scores.csv", index=False)
    pairs.to_csv(folder / "scoring_consistency.csv", index=False)
    ranking.to_csv(folder / "judge_ranking.csv", index=False)
    result = Consistency(pairs, ranking, folder)
    if len(pairs):
        spearman = pairs.pivot(index="judge_a", columns="judge_b", values="spearman")
        overlap = pairs.pivot(index="judge_a", columns="judge_b", values="top100_overlap")
        averages = ranking.set_index("judge")[RANKING_METRICS]
        result.heatmaps = [
            _save_png(heatmap(spearman, "Spearman's rho between judges"), folder / "consistency_spearman.png"),
            _save_png(heatmap(overlap, "Top-100 overlap", "{:.0f}"), folder / "consistency_top100.png"),
            _save_png(heatmap(averages, "Each judge's average against the others"), folder / "judge_averages.png"),
        ]
    return result


def unscored(judge_scores: pd.DataFrame, judge_names: Sequence[str], sample_size: int) -> dict[str, int]:
    """Per judge that did not score the whole sample: how many sampled rows it left unscored."""
    counts = judge_scores.groupby("judge")["qa_id"].nunique()
    return {j: int(sample_size - counts.get(j, 0)) for j in judge_names if counts.get(j, 0) < sample_size}


def spatial_jobs(client: Any, pairs: list[tuple[str, str]]) -> list[Callable[[], Awaitable[Outcome[tuple[bool, str]]]]]:
    """One request per (question, answer): the spatial judge's prompt (the build's and the plan's)."""
    template = load_template("spatial_judge")

    def job(question: str, answer: str) -> Callable[[], Awaitable[Outcome[tuple[bool, str]]]]:
        messages = template.messages(Question=question, Answer=answer)
        return lambda: client.complete_parsed(
            messages, parse_spatial_judgement, template_version=template.template_version
        )

    return [job(q, a) for q, a in pairs]


def llm_spatial(client: LlmClient, frame: pd.DataFrame, result: StageResult) -> pd.DataFrame:
    """The LLM judge's verdicts; a failed or unparsable verdict is a reject and a failure, never "not spatial"
    (its ``spatial`` is missing, and the row is left out of the spatial subset)."""
    pairs = sorted(set(zip(frame["question"].astype(str), frame["answer"].astype(str), strict=True)))
    jobs = spatial_jobs(client, pairs)
    outcomes: dict[tuple[str, str], Outcome[tuple[bool, str]]] = dict(zip(pairs, run_all(jobs, [client]), strict=True))
    rows = []
    for qa_id, q, a in zip(frame["qa_id"], frame["question"].astype(str), frame["answer"].astype(str), strict=True):
        outcome = outcomes[(q, a)]
        result.add_rejects("spatial_judge", str(qa_id), outcome, client.endpoint.model)
        spatial: bool | None
        if outcome.value is None:
            spatial, category, reason = None, "", f"judge failed ({outcome.error_kind}): {outcome.error}"
        else:
            spatial, category = outcome.value
            reason = "llm judge"
        rows.append(
            {"qa_id": qa_id, "spatial": spatial, "category": category, "judge": client.endpoint.model, "reason": reason}
        )
    judged = pd.DataFrame(rows, columns=["qa_id", "spatial", "category", "judge", "reason"])
    judged["spatial"] = judged["spatial"].astype("boolean")
    return judged


def judge_spatial(
    frame: pd.DataFrame, backend: str, make_client: Callable[[], LlmClient]
) -> tuple[pd.DataFrame, LlmRun]:
    """Verdicts per qa_id (``question``/``answer`` columns): keywords offline, else the LLM judge."""
    run = LlmRun(backend)
    if backend == "rules":
        return classify_frame(frame), run
    client = make_client()
    run.clients.append(client)
    judged = llm_spatial(client, frame, run.result)
    run.used(client)
    return judged, run


@dataclass
class SpatialSubset:
    """Every curated row with its verdict, the JSONL subset written, and its figures."""

    table: pd.DataFrame  # SPATIAL_TABLE_COLUMNS
    jsonl: Path
    written: int
    judge: str
    unjudged: int
    per_category: pd.Series


def spatial_subset(
    frame: pd.DataFrame, judged: pd.DataFrame, image_path: Callable[[str], str], jsonl: Path
) -> SpatialSubset:
    """Merge the verdicts into the curated rows; write the spatial ones as the companion benchmark's JSONL."""
    merged = frame.merge(judged, on="qa_id", how="left")
    merged["spatial"] = merged["spatial"].astype("boolean")
    merged["image_path"] = [image_path(str(v)) for v in merged["VolumeName"]]
    spatial = merged[merged["spatial"].fillna(False).astype(bool)]
    written = write_spatial_jsonl(spatial, jsonl)
    per_category = spatial["category"].value_counts().reindex(list(CATEGORIES), fill_value=0)
    return SpatialSubset(
        table=merged[list(SPATIAL_TABLE_COLUMNS)],
        jsonl=jsonl,
        written=written,
        judge=str(judged["judge"].iloc[0]) if len(judged) else "",
        unjudged=int(merged["spatial"].isna().sum()),
        per_category=per_category,
    )

"""Curation of scored candidates (the paper's filter, rank and cap of 10)."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from rad3d_pipeline.llm.parsers import SCORE_DIMENSIONS


@dataclass(frozen=True)
class CurationSettings:
    min_dimension: float = 3.0  # every dimension at least this
    min_mean: float = 3.0  # and the mean at least this
    cap: int = 10  # no question string and no answer string more than this often per release file


def passes_filter(scores: pd.DataFrame, settings: CurationSettings) -> pd.Series:
    dims = scores[list(SCORE_DIMENSIONS)]
    return (dims >= settings.min_dimension).all(axis=1) & (scores["mean"] >= settings.min_mean)


def curate(candidates: pd.DataFrame, scores: pd.DataFrame, settings: CurationSettings) -> pd.DataFrame:
    """Keep candidates that pass the filter; rank by mean score; select top-down under the cap.

    The cap applies per release file: split x task x subtask. Ties in the mean keep a
    stable order (qa_id), so the result does not depend on the order rows arrive in.
    """
    merged = candidates.merge(scores, on="qa_id", how="inner", validate="one_to_one")
    kept = merged.loc[passes_filter(merged, settings)]
    ranked = kept.sort_values(["mean", "qa_id"], ascending=[False, True], kind="stable")
    chosen: list[int] = []
    for _, group in ranked.groupby(["split", "task", "subtask_name"], sort=True):
        questions: dict[str, int] = {}
        answers: dict[str, int] = {}
        for idx, question, answer in zip(group.index, group["question"], group["answer"], strict=True):
            if questions.get(question, 0) >= settings.cap or answers.get(answer, 0) >= settings.cap:
                continue
            questions[question] = questions.get(question, 0) + 1
            answers[answer] = answers.get(answer, 0) + 1
            chosen.append(idx)
    return ranked.loc[ranked.index.isin(chosen)].reset_index(drop=True)

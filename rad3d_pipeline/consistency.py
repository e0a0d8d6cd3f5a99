"""Cross-judge scoring consistency (the paper's appendix B): rank agreement between judges.

For two judges scoring the same QA pairs (mean of the five dimensions per pair):

- ``top100_overlap``: how many pairs both judges put in their top 100;
- ``ndcg_at_100``: judge A's ranking scored with judge B's mean scores as graded relevance,
  normalised by B's own ideal ranking (so it is not symmetric);
- ``spearman``: Pearson correlation of the average ranks (ties share their mean rank);
- ``kendall``: Kendall's tau-b (tie-corrected);
- ``mae``: mean absolute difference of the mean scores.

Rankings break ties by qa_id, so they are reproducible.
"""

from __future__ import annotations

import itertools

import numpy as np
import pandas as pd

PAIR_COLUMNS: tuple[str, ...] = (
    "judge_a",
    "judge_b",
    "top100_overlap",
    "ndcg_at_100",
    "spearman",
    "kendall",
    "mae",
    "n",
)


def average_ranks(values: np.ndarray) -> np.ndarray:
    """Ranks 1..n, ties get the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    sorted_values = values[order]
    ranks = np.empty(len(values), dtype=np.float64)
    start = 0
    n = len(values)
    while start < n:
        end = start
        while end + 1 < n and sorted_values[end + 1] == sorted_values[start]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2.0 + 1.0
        start = end + 1
    return ranks


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    ra, rb = average_ranks(np.asarray(a, dtype=float)), average_ranks(np.asarray(b, dtype=float))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    denom = float(np.sqrt((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / denom) if denom > 0 else float("nan")


def kendall_tau_b(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b over all pairs (O(n^2); n is a few hundred)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    dx = np.sign(x[:, None] - x[None, :])
    dy = np.sign(y[:, None] - y[None, :])
    upper = np.triu_indices(len(x), k=1)
    sx, sy = dx[upper], dy[upper]
    concordant_minus_discordant = float((sx * sy).sum())
    n_x = float((sx != 0).sum())
    n_y = float((sy != 0).sum())
    denom = np.sqrt(n_x * n_y)
    return concordant_minus_discordant / denom if denom > 0 else float("nan")


def ranking(scores: pd.Series) -> list[str]:
    """qa_ids from best to worst mean score, ties by qa_id."""
    frame = pd.DataFrame({"qa_id": scores.index.astype(str), "score": scores.to_numpy()})
    return frame.sort_values(["score", "qa_id"], ascending=[False, True], kind="stable")["qa_id"].tolist()


def top_k_overlap(a: pd.Series, b: pd.Series, k: int = 100) -> int:
    return len(set(ranking(a)[:k]) & set(ranking(b)[:k]))


def ndcg_at_k(ranked_by: pd.Series, relevance: pd.Series, k: int = 100) -> float:
    order = ranking(ranked_by)[:k]
    gains = relevance.reindex(order).to_numpy(dtype=float)
    discounts = 1.0 / np.log2(np.arange(2, len(gains) + 2))
    dcg = float((gains * discounts).sum())
    ideal = np.sort(relevance.to_numpy(dtype=float))[::-1][:k]
    idcg = float((ideal * discounts[: len(ideal)]).sum())
    return dcg / idcg if idcg > 0 else float("nan")


def pairwise_consistency(judge_means: pd.DataFrame, k: int = 100) -> pd.DataFrame:
    """One row per ordered judge pair from a qa_id x judge table of mean scores (complete rows only)."""
    complete = judge_means.dropna()
    rows = []
    for a, b in itertools.permutations(complete.columns, 2):
        sa, sb = complete[a], complete[b]
        rows.append(
            {
                "judge_a": a,
                "judge_b": b,
                "top100_overlap": top_k_overlap(sa, sb, k),
                "ndcg_at_100": ndcg_at_k(sa, sb, k),
                "spearman": spearman(sa.to_numpy(), sb.to_numpy()),
                "kendall": kendall_tau_b(sa.to_numpy(), sb.to_numpy()),
                "mae": float(np.abs(sa.to_numpy() - sb.to_numpy()).mean()) if len(sa) else float("nan"),
                "n": len(sa),
            }
        )
    return pd.DataFrame(rows, columns=list(PAIR_COLUMNS))


def judge_averages(pairs: pd.DataFrame) -> pd.DataFrame:
    """Each judge's average of every metric against the others, and its rank per metric (1 = most agreeing)."""
    metrics = ["top100_overlap", "ndcg_at_100", "spearman", "kendall", "mae"]
    both = pd.concat(
        [
            pairs.rename(columns={"judge_a": "judge"})[["judge", *metrics]],
            pairs.rename(columns={"judge_b": "judge"})[["judge", *metrics]],
        ]
    )
    averages = both.groupby("judge")[metrics].mean()
    for metric in metrics:
        ascending = metric == "mae"
        averages[f"rank_{metric}"] = (
            averages[metric].rank(ascending=ascending, method="min", na_option="bottom").astype(int)
        )
    averages["overall_rank"] = averages[[f"rank_{m}" for m in metrics]].mean(axis=1).rank(method="min").astype(int)
    return averages.reset_index().sort_values("overall_rank", kind="stable").reset_index(drop=True)

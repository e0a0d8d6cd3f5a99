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
    """Ranks 1..n, ties get the mean of the ranks they span (``scipy.stats.rankdata``, method ``average``)."""
    from scipy.stats import rankdata  # scipy costs ~0.3 s to import: only when ranks are asked for

    return np.asarray(rankdata(np.asarray(values, dtype=float), method="average"), dtype=np.float64)


def _defined(x: np.ndarray, y: np.ndarray) -> bool:
    """A rank correlation is defined: two or more pairs, neither side constant, no NaN."""
    if len(x) < 2 or np.isnan(x).any() or np.isnan(y).any():
        return False
    return bool(np.ptp(x) > 0 and np.ptp(y) > 0)


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho (Pearson correlation of the average ranks); NaN when undefined (see :func:`_defined`)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not _defined(x, y):
        return float("nan")
    from scipy.stats import spearmanr

    return float(spearmanr(x, y).statistic)


def kendall_tau_b(a: np.ndarray, b: np.ndarray) -> float:
    """Kendall's tau-b (tie-corrected); NaN when undefined (see :func:`_defined`)."""
    x, y = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if not _defined(x, y):
        return float("nan")
    from scipy.stats import kendalltau

    # method "auto" (the default): scipy's asymptotic p-value divides by n - 2 (two pairs would raise).
    return float(kendalltau(x, y, variant="b").statistic)


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

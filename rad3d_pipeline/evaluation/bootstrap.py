"""Uncertainty of the leaderboard's numbers: bootstrap confidence intervals and paired tests between models.

The unit of resampling is the **volume** (one CT scan): a resample draws the task's volumes with
replacement, and every question about a drawn volume comes along with it, so the correlation between
the questions of one scan is kept (Task 4 asks 18 questions per scan, Tasks 5/6 17). Draws are
stratified by the set of subtasks a volume has questions in (within a task), so every subtask keeps
its number of volumes in every resample and the macro average over subtasks stays defined (Tasks 5/6
have subtasks of a handful of patients each).

Statistics are the ones the tables report: per model x task x subtask the mean of the per-question
scores (NaN skipped: 3D-RAD's empty open predictions), per model x task the macro average over the
subtasks (NaN subtask means skipped, as :func:`rad3d_pipeline.evaluation.metrics.task_summary`). Intervals are
percentile intervals over ``resamples`` replicates.

Pairs of models are compared per task and metric with a **paired permutation test**: under the null
hypothesis that the two models are exchangeable, each volume's two sets of answers are swapped with
probability 1/2 (all of the volume's questions together); the p-value is
``(1 + #{|T*| >= |T|}) / (1 + permutations)`` for the difference of macro averages ``T``. Its
difference also gets a paired bootstrap interval (both models on the same resampled volumes), and
Holm's adjustment over the pairs of one task and metric.

Everything is vectorised: per-volume sums and counts are built once with ``numpy.add.at``; a
replicate is a weight vector over volumes, so all replicates are one matrix product.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

if TYPE_CHECKING:
    import pandas as pd

DEFAULT_RESAMPLES = 1000
DEFAULT_CONFIDENCE = 0.95
RESAMPLING_UNIT = "volume"

FloatArray = npt.NDArray[np.float64]
IntArray = npt.NDArray[np.int64]


@dataclass(frozen=True)
class TaskData:
    """One task's per-question scores, as integer codes.

    ``volume``, ``subtask``, ``model``: codes per question row (0-based, dense); ``values``: rows x metrics,
    NaN where a metric does not apply or was skipped.
    """

    volume: IntArray
    subtask: IntArray
    model: IntArray
    values: FloatArray
    n_volumes: int
    n_subtasks: int
    n_models: int

    @classmethod
    def from_codes(
        cls, volume: Sequence[object], subtask: Sequence[object], model: Sequence[object], values: npt.ArrayLike
    ) -> tuple[TaskData, list[object], list[object], list[object]]:
        """Codes from arbitrary labels; returns the data and the labels of volumes, subtasks and models."""
        vol_labels, vol = np.unique(np.asarray(volume, dtype=object).astype(str), return_inverse=True)
        sub_labels, sub = np.unique(np.asarray(subtask, dtype=object).astype(str), return_inverse=True)
        model_labels = list(dict.fromkeys(model))
        model_code = {m: i for i, m in enumerate(model_labels)}
        array = np.asarray(values, dtype=np.float64)
        if array.ndim == 1:
            array = array[:, None]
        data = cls(
            volume=vol.astype(np.int64),
            subtask=sub.astype(np.int64),
            model=np.array([model_code[m] for m in model], dtype=np.int64),
            values=array,
            n_volumes=len(vol_labels),
            n_subtasks=len(sub_labels),
            n_models=len(model_labels),
        )
        return data, list(vol_labels), list(sub_labels), model_labels

    @property
    def n_metrics(self) -> int:
        return int(self.values.shape[1])

    def volume_sums(self) -> tuple[FloatArray, FloatArray]:
        """(sums, counts) of the non-NaN scores per volume x model x subtask x metric."""
        shape = (self.n_volumes, self.n_models, self.n_subtasks, self.n_metrics)
        sums = np.zeros(shape)
        counts = np.zeros(shape)
        present = ~np.isnan(self.values)
        index = (self.volume, self.model, self.subtask)
        np.add.at(sums, index, np.where(present, self.values, 0.0))
        np.add.at(counts, index, present.astype(np.float64))
        return sums, counts

    def strata(self) -> IntArray:
        """Per volume, the code of its set of subtasks (the bootstrap's strata)."""
        has = np.zeros((self.n_volumes, self.n_subtasks), dtype=bool)
        has[self.volume, self.subtask] = True
        _, codes = np.unique(has, axis=0, return_inverse=True)
        return np.asarray(codes, dtype=np.int64).reshape(-1)


def bootstrap_weights(strata: IntArray, resamples: int, rng: np.random.Generator) -> FloatArray:
    """``resamples`` x volumes: how often each volume is drawn, volumes drawn with replacement within each stratum."""
    weights = np.zeros((resamples, len(strata)))
    for stratum in np.unique(strata):  # a loop over strata (a few), never over rows or replicates
        members = np.flatnonzero(strata == stratum)
        weights[:, members] = rng.multinomial(len(members), np.full(len(members), 1.0 / len(members)), size=resamples)
    return weights


def _macro(sums: FloatArray, counts: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Subtask means (NaN where nothing was scored) and their NaN-skipping mean over the subtask axis (-2)."""
    with np.errstate(invalid="ignore", divide="ignore"):
        means = np.where(counts > 0, sums / np.where(counts > 0, counts, 1.0), np.nan)
    defined = ~np.isnan(means)
    n = defined.sum(axis=-2)
    with np.errstate(invalid="ignore", divide="ignore"):
        macro = np.where(n > 0, np.where(defined, means, 0.0).sum(axis=-2) / np.where(n > 0, n, 1), np.nan)
    return means, macro


def _replicates(weights: FloatArray, sums: FloatArray, counts: FloatArray) -> tuple[FloatArray, FloatArray]:
    """Subtask means (B x M x S x K) and macro averages (B x M x K) of every replicate."""
    flat_shape = (sums.shape[0], -1)
    rep_sums = (weights @ sums.reshape(flat_shape)).reshape((weights.shape[0], *sums.shape[1:]))
    rep_counts = (weights @ counts.reshape(flat_shape)).reshape((weights.shape[0], *counts.shape[1:]))
    return _macro(rep_sums, rep_counts)


def _percentiles(samples: FloatArray, confidence: float) -> tuple[FloatArray, FloatArray]:
    tail = (1 - confidence) / 2 * 100
    with np.errstate(invalid="ignore"):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN slices: an undefined statistic
            low, high = np.nanpercentile(samples, [tail, 100 - tail], axis=0)
    return np.asarray(low), np.asarray(high)


@dataclass(frozen=True)
class TaskIntervals:
    """Point estimates and percentile intervals of one task (models x subtasks x metrics, models x metrics)."""

    subtask_value: FloatArray
    subtask_low: FloatArray
    subtask_high: FloatArray
    task_value: FloatArray
    task_low: FloatArray
    task_high: FloatArray
    replicates: FloatArray  # B x M x K: the macro averages of every replicate (for paired intervals)


def task_intervals(
    data: TaskData,
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    rng: np.random.Generator,
) -> TaskIntervals:
    sums, counts = data.volume_sums()
    subtask_value, task_value = _macro(sums.sum(axis=0), counts.sum(axis=0))
    weights = bootstrap_weights(data.strata(), resamples, rng)
    sub_reps, task_reps = _replicates(weights, sums, counts)
    sub_low, sub_high = _percentiles(sub_reps, confidence)
    task_low, task_high = _percentiles(task_reps, confidence)
    return TaskIntervals(subtask_value, sub_low, sub_high, task_value, task_low, task_high, task_reps)


@dataclass(frozen=True)
class PairTest:
    """Model ``a`` minus model ``b`` per metric: difference, paired bootstrap interval, permutation p-value."""

    a: int
    b: int
    difference: FloatArray  # K
    low: FloatArray
    high: FloatArray
    p_value: FloatArray


def permutation_pvalues(
    data: TaskData, a: int, b: int, *, permutations: int = DEFAULT_RESAMPLES, rng: np.random.Generator
) -> tuple[FloatArray, FloatArray]:
    """(observed macro difference a - b, two-sided p-value) per metric; volumes' answers swapped at random."""
    sums, counts = data.volume_sums()
    sa, sb, ca, cb = sums[:, a], sums[:, b], counts[:, a], counts[:, b]  # V x S x K
    _, macro_a = _macro(sa.sum(axis=0), ca.sum(axis=0))
    _, macro_b = _macro(sb.sum(axis=0), cb.sum(axis=0))
    observed = macro_a - macro_b
    flips = rng.integers(0, 2, size=(permutations, data.n_volumes)).astype(np.float64)
    shape = (permutations, *sa.shape[1:])
    d_sum = (flips @ (sb - sa).reshape(data.n_volumes, -1)).reshape(shape)
    d_cnt = (flips @ (cb - ca).reshape(data.n_volumes, -1)).reshape(shape)
    # a swapped volume moves its answers from a to b and back: a' = a + F(b - a), b' = b - F(b - a)
    _, perm_a = _macro(sa.sum(axis=0) + d_sum, ca.sum(axis=0) + d_cnt)
    _, perm_b = _macro(sb.sum(axis=0) - d_sum, cb.sum(axis=0) - d_cnt)
    stats = perm_a - perm_b
    # a tolerance for floating-point ties (a swap that leaves the difference unchanged)
    extreme = np.abs(stats) >= np.abs(observed) - 1e-12 * np.maximum(1.0, np.abs(observed))
    valid = ~np.isnan(stats)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = (1 + (extreme & valid).sum(axis=0)) / (1 + valid.sum(axis=0))
    p = np.where(np.isnan(observed), np.nan, p)
    return observed, p


def pair_tests(
    data: TaskData,
    intervals: TaskIntervals,
    *,
    permutations: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    rng: np.random.Generator,
) -> list[PairTest]:
    """Every pair of models (in code order): difference, paired bootstrap interval, permutation p-value."""
    out = []
    for a in range(data.n_models):
        for b in range(a + 1, data.n_models):
            observed, p = permutation_pvalues(data, a, b, permutations=permutations, rng=rng)
            low, high = _percentiles(intervals.replicates[:, a] - intervals.replicates[:, b], confidence)
            out.append(PairTest(a, b, observed, low, high, p))
    return out


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjustment (NaN stays NaN and is not counted)."""
    p = np.asarray(p_values, dtype=np.float64)
    adjusted = np.full(p.shape, np.nan)
    idx = np.flatnonzero(~np.isnan(p))
    if not len(idx):
        return [float(v) for v in adjusted]
    order = idx[np.argsort(p[idx], kind="stable")]
    m = len(order)
    running = 0.0
    for rank, i in enumerate(order):  # m values, not rows
        running = max(running, min(1.0, (m - rank) * p[i]))
        adjusted[i] = running
    return [float(v) for v in adjusted]


# --------------------------------------------------------------------------- frames (the leaderboard's view)


@dataclass(frozen=True)
class Uncertainty:
    """Intervals per model x task x metric and per subtask, and the pairwise tests, as tables.

    Values are in the scores' own scale (0-1); ``tasks``: model, Task, metric, value, low, high;
    ``subtasks``: model, Task, Subtask, subtask_name, metric, value, low, high; ``pairs``: Task, metric,
    model_a, model_b, difference (a - b), low, high, p_value, p_holm.
    """

    tasks: pd.DataFrame
    subtasks: pd.DataFrame
    pairs: pd.DataFrame
    resamples: int
    confidence: float
    seed: int

    def note(self) -> str:
        return (
            f"{self.confidence:.0%} percentile bootstrap intervals over {self.resamples} resamples of volumes "
            f"(every question of a scan moves with it; volumes drawn within strata of equal subtask sets; "
            f"seed {self.seed})"
        )

    def pairs_note(self) -> str:
        return (
            f"difference = model_a - model_b (macro average over subtasks); interval: {self.confidence:.0%} paired "
            f"bootstrap over {self.resamples} resamples of volumes; p: two-sided paired permutation test "
            f"({self.resamples} random swaps of the two models' answers per volume); p_holm: Holm-adjusted over "
            f"the pairs of one task and metric"
        )


def uncertainty(
    predictions: pd.DataFrame,
    scores: pd.DataFrame,
    metrics: Sequence[str],
    *,
    resamples: int = DEFAULT_RESAMPLES,
    confidence: float = DEFAULT_CONFIDENCE,
    seed: int = 0,
) -> Uncertainty:
    """Bootstrap intervals and pairwise tests for every model, task, subtask and metric of ``metrics``.

    ``predictions`` has ``model``, ``Task``, ``Subtask``, ``VolumeName`` (and optionally
    ``subtask_name``); ``scores`` the per-question values (same index), NaN where not scored.
    Replicates are seeded per task (``seed``, task), so a model's interval does not depend on
    which other models are on the board.
    """
    import pandas as pd

    if resamples < 1:
        raise ValueError(f"resamples must be at least 1, got {resamples}")
    task_rows: list[dict[str, Any]] = []
    sub_rows: list[dict[str, Any]] = []
    pair_rows: list[dict[str, Any]] = []
    names = predictions["subtask_name"] if "subtask_name" in predictions else predictions["Subtask"]
    for task in sorted(int(t) for t in predictions["Task"].unique()):
        mask = (predictions["Task"].astype(int) == task).to_numpy()
        part = predictions[mask]
        present = [m for m in metrics if m in scores and scores.loc[mask, m].notna().any()]
        if not present or part.empty:
            continue
        data, _, sub_codes, models = TaskData.from_codes(
            part["VolumeName"].tolist(),
            part["Subtask"].astype(int).astype(str).str.zfill(6).tolist(),  # numeric order
            part["model"].astype(str).tolist(),
            scores.loc[mask, present].to_numpy(dtype=np.float64),
        )
        sub_name = dict(zip(part["Subtask"].astype(int), names[mask].astype(str), strict=True))
        result = task_intervals(
            data, resamples=resamples, confidence=confidence, rng=np.random.default_rng([seed, task])
        )
        for m, model in enumerate(models):
            for k, metric in enumerate(present):
                task_rows.append(
                    {
                        "model": model,
                        "Task": task,
                        "metric": metric,
                        "value": result.task_value[m, k],
                        "low": result.task_low[m, k],
                        "high": result.task_high[m, k],
                    }
                )
                for s, label in enumerate(int(str(code)) for code in sub_codes):
                    if np.isnan(result.subtask_value[m, s, k]):
                        continue
                    sub_rows.append(
                        {
                            "model": model,
                            "Task": task,
                            "Subtask": label,
                            "subtask_name": sub_name[label],
                            "metric": metric,
                            "value": result.subtask_value[m, s, k],
                            "low": result.subtask_low[m, s, k],
                            "high": result.subtask_high[m, s, k],
                        }
                    )
        tests = pair_tests(
            data, result, permutations=resamples, confidence=confidence, rng=np.random.default_rng([seed, task, 1])
        )
        for k, metric in enumerate(present):
            adjusted = holm([float(t.p_value[k]) for t in tests])
            for test, p_holm in zip(tests, adjusted, strict=True):
                pair_rows.append(
                    {
                        "Task": task,
                        "metric": metric,
                        "model_a": models[test.a],
                        "model_b": models[test.b],
                        "difference": test.difference[k],
                        "low": test.low[k],
                        "high": test.high[k],
                        "p_value": test.p_value[k],
                        "p_holm": p_holm,
                    }
                )
    columns = ["model", "Task", "metric", "value", "low", "high"]
    return Uncertainty(
        tasks=pd.DataFrame(task_rows, columns=columns),
        subtasks=pd.DataFrame(sub_rows, columns=[*columns[:2], "Subtask", "subtask_name", *columns[2:]]),
        pairs=pd.DataFrame(
            pair_rows,
            columns=["Task", "metric", "model_a", "model_b", "difference", "low", "high", "p_value", "p_holm"],
        ),
        resamples=resamples,
        confidence=confidence,
        seed=seed,
    )

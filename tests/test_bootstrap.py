"""Bootstrap intervals and paired permutation tests: against direct loops, and their rates over seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from rad3d_pipeline.evaluation import bootstrap as bs


def synthetic(rng: np.random.Generator, volumes: int = 40, models: int = 3, nan_share: float = 0.1) -> pd.DataFrame:
    """Rows of (model, volume, subtask, two metrics); volumes cover different subtask sets, some scores NaN."""
    rows = []
    for v in range(volumes):
        subtasks = [1, 2, 3] if v % 3 == 0 else ([1] if v % 3 == 1 else [2, 3])
        for s in subtasks:
            for q in range(1 + (v + s) % 3):
                for m in range(models):
                    value = float(rng.random() < 0.3 + 0.1 * m + 0.05 * s)
                    other = np.nan if rng.random() < nan_share else float(rng.random())
                    rows.append((f"m{m}", f"vol{v:03d}", s, q, value, other))
    return pd.DataFrame(rows, columns=["model", "VolumeName", "Subtask", "q", "acc", "text"])


def direct_macro(frame: pd.DataFrame, models: list[str], metrics: list[str]) -> np.ndarray:
    """Plain pandas: per model, subtask means (NaN skipped), then their NaN-skipping mean."""
    out = np.full((len(models), len(metrics)), np.nan)
    for i, model in enumerate(models):
        part = frame[frame["model"] == model]
        for k, metric in enumerate(metrics):
            out[i, k] = part.groupby("Subtask")[metric].mean().mean()
    return out


def test_replicates_equal_a_direct_resampling_loop() -> None:
    rng = np.random.default_rng(1)
    frame = synthetic(rng)
    metrics = ["acc", "text"]
    data, volumes, _, models = bs.TaskData.from_codes(
        frame["VolumeName"].tolist(), frame["Subtask"].tolist(), frame["model"].tolist(), frame[metrics].to_numpy()
    )
    strata = data.strata()
    weights = bs.bootstrap_weights(strata, 60, np.random.default_rng(2))
    for stratum in np.unique(strata):  # every stratum keeps its number of volumes
        assert (weights[:, strata == stratum].sum(axis=1) == (strata == stratum).sum()).all()
    sums, counts = data.volume_sums()
    _, macro = bs._replicates(weights, sums, counts)
    by_volume = {v: frame[frame["VolumeName"] == v] for v in volumes}
    for b in range(len(weights)):  # the slow way: build each resampled data set row by row
        drawn = [by_volume[v] for v, w in zip(volumes, weights[b], strict=True) for _ in range(int(w))]
        expected = direct_macro(pd.concat(drawn), models, metrics)
        np.testing.assert_allclose(macro[b], expected, rtol=1e-12, atol=1e-12)
    # the point estimate is the plain macro average
    result = bs.task_intervals(data, resamples=50, rng=np.random.default_rng(3))
    np.testing.assert_allclose(result.task_value, direct_macro(frame, models, metrics), rtol=1e-12)
    assert (result.task_low <= result.task_value + 1e-12).all() and (
        result.task_value <= result.task_high + 1e-12
    ).all()


def test_permutation_statistics_equal_a_direct_swapping_loop() -> None:
    rng = np.random.default_rng(4)
    frame = synthetic(rng, volumes=25, models=2)
    metrics = ["acc", "text"]
    data, volumes, _, models = bs.TaskData.from_codes(
        frame["VolumeName"].tolist(), frame["Subtask"].tolist(), frame["model"].tolist(), frame[metrics].to_numpy()
    )
    permutations = 80
    observed, p = bs.permutation_pvalues(data, 0, 1, permutations=permutations, rng=np.random.default_rng(5))
    flips = np.random.default_rng(5).integers(0, 2, size=(permutations, data.n_volumes))  # the same draws
    base = direct_macro(frame, models, metrics)
    np.testing.assert_allclose(observed, base[0] - base[1], rtol=1e-12)
    stats = []
    for b in range(permutations):
        swapped = frame.copy()
        flipped = swapped["VolumeName"].isin([v for v, f in zip(volumes, flips[b], strict=True) if f])
        swapped.loc[flipped, "model"] = swapped.loc[flipped, "model"].map({models[0]: models[1], models[1]: models[0]})
        macro = direct_macro(swapped, models, metrics)
        stats.append(macro[0] - macro[1])
    stats_array = np.array(stats)
    expected_p = (1 + (np.abs(stats_array) >= np.abs(observed) - 1e-12).sum(axis=0)) / (1 + permutations)
    np.testing.assert_allclose(p, expected_p)


def test_uncertainty_tables_and_seed() -> None:
    frame = synthetic(np.random.default_rng(6)).assign(Task=4)
    frame["subtask_name"] = "label " + frame["Subtask"].astype(str)
    scores = frame[["acc", "text"]]
    result = bs.uncertainty(frame, scores, ["acc", "text", "absent"], resamples=200, seed=7)
    assert set(result.tasks["metric"]) == {"acc", "text"} and len(result.tasks) == 3 * 2
    assert len(result.pairs) == 3 * 2 and set(result.pairs["model_a"]) == {"m0", "m1"}
    assert (result.pairs["p_holm"] >= result.pairs["p_value"]).all()
    assert set(result.subtasks["subtask_name"]) == {"label 1", "label 2", "label 3"}
    again = bs.uncertainty(frame, scores, ["acc", "text"], resamples=200, seed=7)
    pd.testing.assert_frame_equal(result.tasks, again.tasks)
    # a model's interval does not depend on the other models on the board
    alone = frame[frame["model"] == "m1"]
    single = bs.uncertainty(alone, scores.loc[alone.index], ["acc"], resamples=200, seed=7).tasks
    both = result.tasks[(result.tasks["model"] == "m1") & (result.tasks["metric"] == "acc")]
    np.testing.assert_allclose(single[["value", "low", "high"]].to_numpy(), both[["value", "low", "high"]].to_numpy())
    with pytest.raises(ValueError, match="resamples"):
        bs.uncertainty(frame, scores, ["acc"], resamples=0)


def test_holm() -> None:
    assert bs.holm([0.01, 0.04, 0.03, np.nan]) == pytest.approx([0.03, 0.06, 0.06, np.nan], nan_ok=True)


def clustered(rng: np.random.Generator, volumes: int, questions: int, effect: float) -> bs.TaskData:
    """Two models answering the same scans; a scan's difficulty is shared by its questions and both models."""
    difficulty = rng.normal(0.0, 1.0, volumes)
    logits = np.stack([difficulty + 0.2, difficulty + 0.2 - effect])  # model x volume
    p = 1 / (1 + np.exp(-np.repeat(logits, questions, axis=1)))
    correct = (rng.random(p.shape) < p).astype(float)
    volume = np.tile(np.repeat(np.arange(volumes), questions), 2)
    subtask = np.tile(np.tile(np.arange(questions) % 2, volumes), 2)
    model = np.repeat([0, 1], volumes * questions)
    data, *_ = bs.TaskData.from_codes(volume.tolist(), subtask.tolist(), model.tolist(), correct.reshape(-1))
    return data


def test_permutation_test_rates_over_seeds() -> None:
    """A null difference is found at about the 5% level; a true one of 0.8 logits (12 points) in 90% of seeds."""
    sims, alpha = 300, 0.05
    null = [
        bs.permutation_pvalues(
            clustered(np.random.default_rng(s), 60, 6, 0.0),
            0,
            1,
            permutations=199,
            rng=np.random.default_rng(10_000 + s),
        )[1][0]
        for s in range(sims)
    ]
    false_positive = np.mean(np.array(null) < alpha)
    assert 0.02 <= false_positive <= 0.09, false_positive
    real = [
        bs.permutation_pvalues(
            clustered(np.random.default_rng(s), 60, 6, 0.8),
            0,
            1,
            permutations=199,
            rng=np.random.default_rng(20_000 + s),
        )[1][0]
        for s in range(100)
    ]
    assert np.mean(np.array(real) < alpha) >= 0.9


def test_interval_coverage_over_seeds() -> None:
    """95% intervals of a clustered mean contain the true value about 95% of the time."""
    sims, volumes, questions = 300, 50, 8
    a, b = 2.0, 3.0  # per-scan accuracy ~ Beta(2, 3): true mean 0.4, strongly clustered
    covered = []
    for s in range(sims):
        rng = np.random.default_rng(s)
        p = rng.beta(a, b, volumes)
        correct = (rng.random((volumes, questions)) < p[:, None]).astype(float).reshape(-1)
        volume = np.repeat(np.arange(volumes), questions)
        data, *_ = bs.TaskData.from_codes(volume.tolist(), [1] * len(volume), [0] * len(volume), correct)
        result = bs.task_intervals(data, resamples=400, rng=np.random.default_rng(50_000 + s))
        covered.append(result.task_low[0, 0] <= a / (a + b) <= result.task_high[0, 0])
    coverage = float(np.mean(covered))
    assert 0.89 <= coverage <= 0.985, coverage
    # resampling questions instead of volumes would ignore the clustering: the volume interval is wider
    assert result.task_high[0, 0] - result.task_low[0, 0] > 2 * 1.96 * np.sqrt(0.24 / (volumes * questions)) * 1.2

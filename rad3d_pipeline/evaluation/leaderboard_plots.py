"""The leaderboard's charts (matplotlib, imported on the first chart): grouped bars with error bars,
the per-category panels, the correctness matrix and the answer-length histograms.

Each function returns PNG bytes; :func:`rad3d_pipeline.evaluation.leaderboard.write_leaderboard` decides the files.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from rad3d_pipeline.common.plots import png_bytes, pyplot
from rad3d_pipeline.common.tasks import TASK_NAMES


def _draw_bars(
    ax: Any,
    frame: pd.DataFrame,
    low: pd.DataFrame | None = None,
    high: pd.DataFrame | None = None,
    colors: dict[str, Any] | None = None,
) -> None:
    """Grouped bars on ``ax``: rows = x groups, columns = series; error bars from ``low``/``high`` where given.

    A bar of height 0 is labelled ``0`` and a missing value ``n/a`` at the baseline, so neither looks
    like a bar that was forgotten.
    """
    n_groups, n_series = frame.shape
    width = 0.8 / max(n_series, 1)
    x = np.arange(n_groups)
    top = float(np.nanmax(frame.to_numpy(dtype=float))) if frame.notna().any().any() else 1.0
    if high is not None and high.notna().any().any():
        top = max(top, float(np.nanmax(high.to_numpy(dtype=float))))
    offset = 0.01 * max(top, 1.0)
    for k, column in enumerate(frame.columns):
        values = frame[column].to_numpy(dtype=float)
        positions = x + (k - (n_series - 1) / 2) * width
        errors = None
        if low is not None and high is not None and column in low and column in high:
            lo = low[column].reindex(frame.index).to_numpy(dtype=float)
            hi = high[column].reindex(frame.index).to_numpy(dtype=float)
            errors = np.nan_to_num(np.vstack([values - lo, hi - values]).clip(min=0))
        color = (colors or {}).get(str(column))
        ax.bar(
            positions,
            np.nan_to_num(values),
            width,
            label=str(column),
            color=color,
            yerr=errors,
            capsize=2 if errors is not None else 0,
            error_kw={"elinewidth": 0.8, "ecolor": "0.25"},
        )
        for position, value in zip(positions, values, strict=True):
            if np.isnan(value) or value == 0:
                ax.text(
                    position,
                    offset,
                    "n/a" if np.isnan(value) else "0",
                    ha="center",
                    va="bottom",
                    fontsize=8,
                    fontweight="bold",
                    rotation=90 if n_series > 3 else 0,
                    color="0.2",
                )
    rotate = n_groups > 4 or max((len(str(i)) for i in frame.index), default=0) > 14
    ax.set_xticks(x, [str(i) for i in frame.index], rotation=30 if rotate else 0, ha="right" if rotate else "center")
    ax.set_ylim(bottom=0)


def grouped_bars(
    frame: pd.DataFrame,
    title: str,
    ylabel: str,
    low: pd.DataFrame | None = None,
    high: pd.DataFrame | None = None,
    note: str = "",
) -> bytes:
    """Bars of ``frame`` (rows = x groups, columns = series), error bars from ``low``/``high`` (same shape)."""
    plt = pyplot()
    n_groups, n_series = frame.shape
    fig, ax = plt.subplots(figsize=(max(7.0, 0.9 * n_groups * max(n_series, 1) * 0.6 + 2), 4.2))
    _draw_bars(ax, frame, low, high)
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    if note:
        import textwrap

        ax.set_xlabel(textwrap.fill(note, 110), fontsize=7, color="0.3")
    if n_series > 1:
        ax.legend(fontsize=8)
    return png_bytes(fig)


def category_panels(table: pd.DataFrame, models: list[str], title: str = "Accuracy per category") -> bytes:
    """One panel per task of :func:`per_category`'s table: categories on x, one bar per model (% correct)."""
    plt = pyplot()
    tasks = list(dict.fromkeys(int(t) for t in table["Task"]))
    widths = [table[table["Task"] == t]["category"].nunique() for t in tasks]
    width = max(6.0, min(0.28 * max(widths, default=1) * max(len(models), 1) + 2.5, 24.0))
    heights = [1.0 + 0.5 * (n > 4) for n in widths]  # rotated category names need room below
    fig, axes = plt.subplots(
        len(tasks),
        1,
        figsize=(width, sum(2.6 * h for h in heights) + 0.6),
        squeeze=False,
        layout="constrained",
        gridspec_kw={"height_ratios": heights},
    )
    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    colors = {m: cycle[i % len(cycle)] for i, m in enumerate(models)}
    for ax, task in zip(axes[:, 0], tasks, strict=True):
        part = table[table["Task"] == task]
        pivot = part.pivot(index="category", columns="model", values="accuracy") * 100
        pivot = pivot.reindex(index=list(dict.fromkeys(part["category"])), columns=models)
        _draw_bars(ax, pivot, colors=colors)
        pad = max(6 - len(pivot), 0) / 2  # a task with few categories: bars centred, not stretched
        ax.set_xlim(-0.5 - pad, len(pivot) - 0.5 + pad)
        questions = part.groupby("category", sort=False)["n"].max()
        ax.set_title(
            f"Task {task} {TASK_NAMES.get(task, '')} ({int(questions.sum())} questions per model)", fontsize=10
        )
        ax.set_ylabel("% correct")
        ax.set_ylim(0, 105)
    handles, labels = axes[0, 0].get_legend_handles_labels()
    if len(models) > 1:
        fig.legend(handles, labels, loc="upper right", fontsize=8, ncols=min(len(models), 4))
    fig.suptitle(title, x=0.01, ha="left", fontsize=11)
    return png_bytes(fig)


def matrix_png(matrix: pd.DataFrame, models: list[str], max_rows: int = 200) -> bytes:
    plt = pyplot()
    values = matrix[models].to_numpy(dtype=float)[:max_rows]
    fig, ax = plt.subplots(figsize=(1.0 * len(models) + 2, 6))
    ax.imshow(values, aspect="auto", cmap="RdYlGn", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
    ax.set_ylabel(f"question (first {min(len(values), max_rows)} of {len(matrix)})")
    ax.set_title("Correctness matrix (green = correct)")
    return png_bytes(fig)


def length_png(lengths: pd.DataFrame) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    top = int(lengths["words"].quantile(0.99)) + 1 if len(lengths) else 1
    bins = np.arange(0, max(top, 2) + 1)
    for source, group in lengths.groupby("source", sort=False):
        ax.hist(group["words"].clip(upper=top), bins=bins, histtype="step", label=str(source), density=True)
    ax.set_xlabel("words")
    ax.set_ylabel("share of answers")
    ax.set_title("Answer length distributions")
    ax.legend(fontsize=8)
    return png_bytes(fig)

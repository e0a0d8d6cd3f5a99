"""The leaderboard: the 3D-RAD paper's Table 4 layout, bar charts, and the companion benchmark's analyses.

:func:`write_leaderboard` writes, under one folder:

* ``table4.csv`` / ``table4.md``: one row per model; per open task (1-3) BLEU, ROUGE-1, METEOR and
  BERTScore F1, per closed task (4-6) accuracy (3D-RAD's letter rule), each the macro average over
  the task's subtasks, in percent (the paper's layout and scale);
* ``subtasks.csv`` / ``subtasks.md``: the headline metric per model x task x subtask;
* ``bars_task<N>.png`` (per task, every metric) and ``bars_subtasks_task<N>.png`` (per subtask, the
  headline metric);
* ``correctness_matrix.csv`` / ``.png``: question x model, 1 when correct (closed: the letter rule;
  open: exact match, lowercase and punctuation-insensitive), as the companion benchmark builds it;
* ``per_category.csv`` / ``.png``: accuracy by question category (the spatial category where a
  question has one, else its subtask);
* ``answer_lengths.csv`` / ``.png``: words per reference answer and per model's predictions.
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rad3d_pipeline.closed_choice import m3d_correct
from rad3d_pipeline.metrics import task_summary
from rad3d_pipeline.text_metrics import exact_match

OPEN_COLUMNS = (("bleu", "BLEU"), ("rouge1", "ROUGE"), ("meteor", "METEOR"), ("bertscore_f1", "BERTScore"))
CLOSED_COLUMNS = (("accuracy", "Acc"),)
TASK_NAMES = {
    1: "Image Observation",
    2: "Anomaly Detection",
    3: "Medical Computation",
    4: "Existence Detection",
    5: "Static Temporal Diagnosis",
    6: "Longitudinal Temporal Diagnosis",
}


@dataclass
class LeaderboardFiles:
    folder: Path
    table4: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)
    pngs: dict[str, Path] = field(default_factory=dict)


def _question_type(table: pd.DataFrame, task: int) -> str:
    types = table.loc[table["Task"] == task, "QuestionType"].astype(str)
    return "Close" if len(types) and (types == "Close").all() else "Open"


def table4(metric_table: pd.DataFrame) -> pd.DataFrame:
    """Models x (task, metric) in percent, macro-averaged over subtasks; NaN where not computed."""
    summary = task_summary(metric_table)
    models = list(dict.fromkeys(metric_table["model"])) if len(metric_table) else []
    out = pd.DataFrame(index=pd.Index(models, name="Model"))
    for task in sorted(int(t) for t in summary["Task"].unique()):
        rows = summary[summary["Task"] == task].set_index("model")
        columns = CLOSED_COLUMNS if _question_type(metric_table, task) == "Close" else OPEN_COLUMNS
        for metric, label in columns:
            out[f"Task{task} {label}"] = rows[metric].reindex(models).astype(float) * 100 if metric in rows else np.nan
    return out


def subtask_table(metric_table: pd.DataFrame) -> pd.DataFrame:
    """Headline metric per task x subtask (rows) and model (columns), in percent."""
    frame = metric_table.copy()
    closed = frame["QuestionType"] == "Close"
    has_bertscore = frame["bertscore_f1"].notna()
    frame["headline"] = np.where(closed, frame["accuracy"], frame["bertscore_f1"])
    frame["headline"] = frame["headline"].where(frame["headline"].notna(), frame["rouge1"])
    # Which metric each row holds: BERTScore when computed, else ROUGE-1 (RAD3D_BERTSCORE=0).
    frame["metric"] = np.where(closed, "accuracy", np.where(has_bertscore, "BERTScore F1", "ROUGE-1"))
    keys = ["Task", "Subtask", "subtask_name", "model"]
    frame = frame.drop_duplicates(keys)
    pivot = frame.set_index(keys)["headline"].astype(float).unstack("model")
    pivot = pivot[[str(m) for m in dict.fromkeys(frame["model"])]]
    pivot.columns.name = None
    metric = frame.groupby(keys[:3])["metric"].agg(lambda values: " / ".join(sorted(set(values))))
    out = (pivot * 100).reset_index()
    out.insert(3, "metric", [metric[tuple(k)] for k in out[keys[:3]].itertuples(index=False)])
    return out


def row_correct(predictions: pd.DataFrame) -> pd.Series:
    """Per-row correctness: closed by 3D-RAD's letter rule; open by exact match (lowercase, no punctuation)."""
    preds = predictions["prediction"].fillna("").astype(str)
    closed = predictions["QuestionType"].astype(str) == "Close"
    letters = (
        predictions["AnswerChoice"].astype(str) if "AnswerChoice" in predictions else pd.Series("", predictions.index)
    )
    values = [
        m3d_correct(p, letter) if c else exact_match(p, a)
        for p, a, c, letter in zip(preds, predictions["Answer"].astype(str), closed, letters, strict=True)
    ]
    return pd.Series(values, index=predictions.index, dtype=bool)


def correctness_matrix(predictions: pd.DataFrame) -> pd.DataFrame:
    """Question x model matrix of 0/1 (the companion benchmark's ``build_correctness_matrix``)."""
    frame = predictions.assign(correct=row_correct(predictions).astype(int))
    matrix = frame.pivot_table(
        index=["Task", "Subtask", "VolumeName", "Question"], columns="model", values="correct", aggfunc="max"
    )
    matrix.columns = [str(c) for c in matrix.columns]
    matrix["n_models_correct"] = matrix.sum(axis=1)
    return matrix.reset_index()


def per_category(predictions: pd.DataFrame, categories: dict[tuple[str, str], str] | None = None) -> pd.DataFrame:
    """Accuracy (see :func:`row_correct`) per model x category; category from ``categories`` keyed by
    (volume key, normalised question), else the subtask name."""
    frame = predictions.assign(correct=row_correct(predictions))
    fallback = "Task" + frame["Task"].astype(str) + " " + frame["subtask_name"].astype(str)
    if categories:
        keys = zip(frame["VolumeName"].map(volume_key), frame["Question"].map(question_key), strict=True)
        found = pd.Series([categories.get(k, "") for k in keys], index=frame.index)
        frame["category"] = found.where(found != "", fallback)
    else:
        frame["category"] = fallback
    table = frame.groupby(["category", "model"], sort=True)["correct"].agg(["mean", "size"]).reset_index()
    return table.rename(columns={"mean": "accuracy", "size": "n"})


def volume_key(name: str) -> str:
    """Volume identity across the release (``test_``) and CT-RATE (``valid_``) names, without extension."""
    stem = str(name).rsplit("/", 1)[-1]
    for suffix in (".nii.gz", ".nii", ".npy"):
        stem = stem.removesuffix(suffix)
    return "valid_" + stem.removeprefix("test_") if stem.startswith("test_") else stem


def question_key(question: str) -> str:
    return " ".join(str(question).lower().split())


def answer_lengths(predictions: pd.DataFrame) -> pd.DataFrame:
    """Words per reference answer (source ``reference``) and per model's prediction (source = model)."""
    first_model = predictions["model"].iloc[0] if len(predictions) else ""
    refs = predictions[predictions["model"] == first_model]
    parts = [
        pd.DataFrame({"source": "reference", "QuestionType": refs["QuestionType"], "words": _words(refs["Answer"])})
    ]
    parts.append(
        pd.DataFrame(
            {
                "source": predictions["model"],
                "QuestionType": predictions["QuestionType"],
                "words": _words(predictions["prediction"]),
            }
        )
    )
    return pd.concat(parts, ignore_index=True)


def _words(texts: pd.Series) -> pd.Series:
    return texts.fillna("").astype(str).map(lambda text: len(text.split())).astype(int)


# --------------------------------------------------------------------------- plots


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    plt = _plt()
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    plt.close(fig)
    return buffer.getvalue()


def grouped_bars(frame: pd.DataFrame, title: str, ylabel: str) -> bytes:
    """Bars of ``frame`` (rows = x groups, columns = series)."""
    plt = _plt()
    n_groups, n_series = frame.shape
    fig, ax = plt.subplots(figsize=(max(5.0, 0.9 * n_groups * max(n_series, 1) * 0.6 + 2), 3.8))
    width = 0.8 / max(n_series, 1)
    x = np.arange(n_groups)
    for k, column in enumerate(frame.columns):
        values = frame[column].to_numpy(dtype=float)
        ax.bar(x + (k - (n_series - 1) / 2) * width, np.nan_to_num(values), width, label=str(column))
    ax.set_xticks(
        x, [str(i) for i in frame.index], rotation=30 if n_groups > 4 else 0, ha="right" if n_groups > 4 else "center"
    )
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if n_series > 1:
        ax.legend(fontsize=8)
    return _png(fig)


def matrix_png(matrix: pd.DataFrame, models: list[str], max_rows: int = 200) -> bytes:
    plt = _plt()
    values = matrix[models].to_numpy(dtype=float)[:max_rows]
    fig, ax = plt.subplots(figsize=(1.0 * len(models) + 2, 6))
    ax.imshow(values, aspect="auto", cmap="RdYlGn", vmin=0, vmax=1, interpolation="nearest")
    ax.set_xticks(range(len(models)), models, rotation=30, ha="right")
    ax.set_ylabel(f"question (first {min(len(values), max_rows)} of {len(matrix)})")
    ax.set_title("Correctness matrix (green = correct)")
    return _png(fig)


def length_png(lengths: pd.DataFrame) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 3.8))
    top = int(lengths["words"].quantile(0.99)) + 1 if len(lengths) else 1
    bins = np.arange(0, max(top, 2) + 1)
    for source, group in lengths.groupby("source", sort=False):
        ax.hist(group["words"].clip(upper=top), bins=bins, histtype="step", label=str(source), density=True)
    ax.set_xlabel("words")
    ax.set_ylabel("share of answers")
    ax.set_title("Answer length distributions")
    ax.legend(fontsize=8)
    return _png(fig)


# --------------------------------------------------------------------------- everything


def _markdown(frame: pd.DataFrame, index: bool = True) -> str:
    return frame.to_markdown(index=index, floatfmt=".2f")


def write_leaderboard(
    metric_table: pd.DataFrame,
    predictions: pd.DataFrame,
    folder: Path,
    categories: dict[tuple[str, str], str] | None = None,
) -> LeaderboardFiles:
    """Write every leaderboard file under ``folder`` (see the module docstring)."""
    folder.mkdir(parents=True, exist_ok=True)
    result = LeaderboardFiles(folder, table4(metric_table))

    def save_text(name: str, text: str) -> None:
        path = folder / name
        path.write_text(text, encoding="utf-8")
        result.files[name] = path

    def save_png(name: str, png: bytes) -> None:
        path = folder / name
        path.write_bytes(png)
        result.pngs[name] = path

    labels = result.table4
    save_text("table4.csv", labels.to_csv(float_format="%.4f"))
    notes = []
    if len(metric_table):
        for column, label in (("bertscore_model", "BERTScore model"), ("jury", "LLM jury")):
            values = sorted({str(v) for v in metric_table.get(column, pd.Series(dtype=str)) if str(v)})
            if values:
                notes.append(f"{label}: {'; '.join(values)}")
        versions = sorted({str(v) for v in metric_table["protocol_version"]})
        notes.append(f"protocol: {', '.join(versions)}; values in percent, macro-averaged over subtasks")
    save_text("table4.md", _markdown(labels) + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n")
    subtasks = subtask_table(metric_table) if len(metric_table) else pd.DataFrame()
    save_text("subtasks.csv", subtasks.to_csv(index=False, float_format="%.4f"))
    save_text("subtasks.md", _markdown(subtasks, index=False) + "\n")
    summary = task_summary(metric_table)
    for task in sorted(int(t) for t in summary["Task"].unique()):
        rows = summary[summary["Task"] == task].set_index("model")
        closed = _question_type(metric_table, task) == "Close"
        columns = (
            [("accuracy", "Acc (letter rule)"), ("parsed_accuracy", "Acc (parsed choice)")]
            if closed
            else list(OPEN_COLUMNS)
        )
        data = pd.DataFrame({label: rows[m] * 100 for m, label in columns if m in rows and rows[m].notna().any()})
        name = TASK_NAMES.get(task, "")
        if len(data.columns):
            save_png(f"bars_task{task}.png", grouped_bars(data, f"Task {task} {name} (macro over subtasks)", "%"))
        sub = subtasks[subtasks["Task"] == task]
        models = [c for c in sub.columns if c not in {"Task", "Subtask", "subtask_name", "metric"}]
        if len(sub) and models:
            data = sub.set_index("subtask_name")[models]
            metric = " / ".join(sorted(set(sub["metric"])))
            save_png(
                f"bars_subtasks_task{task}.png", grouped_bars(data, f"Task {task} {name}: {metric} per subtask", "%")
            )
    if len(predictions):
        matrix = correctness_matrix(predictions)
        save_text("correctness_matrix.csv", matrix.to_csv(index=False))
        models = [str(m) for m in dict.fromkeys(predictions["model"])]
        save_png("correctness_matrix.png", matrix_png(matrix, models))
        categories_table = per_category(predictions, categories)
        save_text("per_category.csv", categories_table.to_csv(index=False, float_format="%.4f"))
        pivot = categories_table.pivot(index="category", columns="model", values="accuracy")[models] * 100
        save_png("per_category.png", grouped_bars(pivot, "Accuracy per category", "% correct"))
        lengths = answer_lengths(predictions)
        stats = lengths.groupby(["source", "QuestionType"])["words"].describe().reset_index()
        save_text("answer_lengths.csv", stats.to_csv(index=False, float_format="%.3f"))
        save_png("answer_lengths.png", length_png(lengths))
    return result

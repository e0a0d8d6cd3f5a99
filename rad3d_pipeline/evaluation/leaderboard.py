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
  question has one, else its subtask, named for a reader: "Task 5, 2nd follow-up" rather than the
  scan letter), one chart panel per task; a zero bar is labelled 0, a missing one n/a;
* ``answer_lengths.csv`` / ``.png``: words per reference answer and per model's predictions;
* uncertainty (:mod:`rad3d_pipeline.evaluation.bootstrap`): every Table 4 and subtask value with its 95%
  bootstrap interval (``52.6 [50.1, 55.0]``; resampling unit: the volume, 1000 resamples by
  default), ``intervals.csv`` (the same, numeric, long format), error bars in the bar charts, and
  ``pairwise.csv`` / ``pairwise.md``: for every pair of models per task and metric the difference,
  its paired bootstrap interval and a paired permutation test's p-value (raw and Holm-adjusted).

The charts are drawn by :mod:`rad3d_pipeline.evaluation.leaderboard_plots`; this module computes the tables and
writes every file.

Per-question scores for the intervals are passed as ``scores`` (:func:`rad3d_pipeline.evaluation.metrics.sample_scores`
of ``predictions``); without them the leaderboard scores the predictions itself without BERTScore
(BLEU, ROUGE, METEOR and accuracies; the same engine, so the same values), and the BERTScore
columns show their value without an interval. An interval is only shown next to a value it
reproduces (the per-question scores' macro average equals the table's value).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rad3d_pipeline.common.tasks import TASK_NAMES as TASK_NAMES
from rad3d_pipeline.evaluation.bootstrap import DEFAULT_CONFIDENCE, DEFAULT_RESAMPLES, Uncertainty, uncertainty
from rad3d_pipeline.evaluation.closed_choice import m3d_correct
from rad3d_pipeline.evaluation.leaderboard_plots import category_panels, grouped_bars, length_png, matrix_png
from rad3d_pipeline.evaluation.metrics import REQUIRED_COLUMNS, EngineOptions, sample_scores, task_summary
from rad3d_pipeline.evaluation.models.registry import LIMIT_SUFFIX
from rad3d_pipeline.evaluation.text_metrics import exact_match, normalize_answer

# Beside each figure that reproduces a quirk of 3D-RAD's script, its strict figure (metrics.STRICT_METRICS):
# open, an empty prediction scores 0 instead of being skipped; closed, a reply naming several letters is wrong.
OPEN_COLUMNS = (
    ("bleu", "BLEU"),
    ("rouge1", "ROUGE"),
    ("meteor", "METEOR"),
    ("bertscore_f1", "BERTScore"),
    ("bleu_strict", "BLEU strict"),
    ("rouge1_strict", "ROUGE strict"),
    ("meteor_strict", "METEOR strict"),
    ("bertscore_f1_strict", "BERTScore strict"),
)
CLOSED_COLUMNS = (("accuracy", "Acc"), ("accuracy_strict", "Acc strict"))


@dataclass
class LeaderboardFiles:
    folder: Path
    table4: pd.DataFrame
    files: dict[str, Path] = field(default_factory=dict)
    pngs: dict[str, Path] = field(default_factory=dict)
    uncertainty: Uncertainty | None = None  # None when intervals were not computed (resamples=0)


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
    """Per-row correctness: closed by 3D-RAD's letter rule; open by exact match (lowercase, no punctuation).

    An empty prediction (nothing left after normalisation) is never correct, whatever the reference.
    """
    preds = predictions["prediction"].fillna("").astype(str)
    closed = predictions["QuestionType"].astype(str) == "Close"
    letters = (
        predictions["AnswerChoice"].astype(str) if "AnswerChoice" in predictions else pd.Series("", predictions.index)
    )
    values = [
        bool(normalize_answer(p)) and (m3d_correct(p, letter) if c else exact_match(p, a))
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


def _ordinal(n: int) -> str:
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def subtask_label(task: int, name: str) -> str:
    """A subtask's name for a reader: Tasks 5/6 name the current scan's letter, b = the 1st follow-up scan."""
    text = str(name).strip()
    if int(task) in (5, 6) and len(text) == 1 and "b" <= text.lower() <= "z":
        return f"{_ordinal(ord(text.lower()) - ord('a'))} follow-up"
    return text.replace("_", " ")


def per_category(predictions: pd.DataFrame, categories: dict[tuple[str, str], str] | None = None) -> pd.DataFrame:
    """Accuracy (see :func:`row_correct`) per task x category x model, with the number of questions ``n``.

    Category: from ``categories`` keyed by (volume key, normalised question) where a question has one
    (the spatial category), else the subtask's readable name (:func:`subtask_label`); ``label`` is
    ``"Task <N>, <category>"``. Models without a question in a category have no row there.
    """
    frame = predictions.assign(correct=row_correct(predictions))
    frame["Task"] = frame["Task"].astype(int)
    names = frame["subtask_name"] if "subtask_name" in frame else frame["Subtask"]
    fallback = pd.Series(
        [subtask_label(t, n) for t, n in zip(frame["Task"], names.astype(str), strict=True)], index=frame.index
    )
    if categories:
        keys = zip(frame["VolumeName"].map(volume_key), frame["Question"].map(question_key), strict=True)
        found = pd.Series([categories.get(k, "") for k in keys], index=frame.index)
        frame["category"] = found.where(found != "", fallback)
    else:
        frame["category"] = fallback
    # subtask order within a task (not alphabetical), spatial categories after them
    order = frame.groupby(["Task", "category"])["Subtask"].min().rename("_order")
    groups = frame.groupby(["Task", "category", "model"], sort=False)["correct"]
    table = groups.agg(["mean", "size"]).reset_index().join(order, on=["Task", "category"])
    table = table.sort_values(["Task", "_order", "category"], kind="stable").drop(columns="_order")
    table.insert(2, "label", "Task " + table["Task"].astype(str) + ", " + table["category"])
    return table.rename(columns={"mean": "accuracy", "size": "n"}).reset_index(drop=True)


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


# --------------------------------------------------------------------------- everything


def _markdown(frame: pd.DataFrame, index: bool = True) -> str:
    return frame.to_markdown(index=index, floatfmt=".2f")


INTERVAL_METRICS = tuple(metric for metric, _ in (*OPEN_COLUMNS, *CLOSED_COLUMNS))
_LABEL_METRIC = {label: metric for metric, label in (*OPEN_COLUMNS, *CLOSED_COLUMNS)}
_HEADLINE_METRIC = {"accuracy": "accuracy", "BERTScore F1": "bertscore_f1", "ROUGE-1": "rouge1"}


def _records(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return frame.to_dict("records")  # type: ignore[return-value]


def _matches(value: float, estimate: float) -> bool:
    return bool(np.isfinite(value) and np.isfinite(estimate) and abs(value - estimate) <= 1e-9 * max(1.0, abs(value)))


def format_interval(value: float, low: float, high: float, digits: int = 1) -> str:
    """``52.6 [50.1, 55.0]``; the value alone without an interval; empty for a missing value."""
    if value is None or not np.isfinite(value):
        return ""
    if low is None or high is None or not (np.isfinite(low) and np.isfinite(high)):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def table4_intervals(table: pd.DataFrame, result: Uncertainty | None) -> pd.DataFrame:
    """Table 4's cells (percent) with their interval: Model, column, Task, metric, value, low, high (NaN: none)."""
    found: dict[tuple[str, int, str], tuple[float, float, float]] = {}
    if result is not None:
        for row in _records(result.tasks):
            key = (str(row["model"]), int(row["Task"]), str(row["metric"]))
            found[key] = (row["value"] * 100, row["low"] * 100, row["high"] * 100)
    rows = []
    for column in table.columns:
        task_text, label = column.split(" ", 1)
        task, metric = int(task_text.removeprefix("Task")), _LABEL_METRIC.get(label, label)
        for model in table.index:
            value = float(table.loc[model, column])
            estimate, low, high = found.get((str(model), task, metric), (np.nan, np.nan, np.nan))
            if not _matches(value, estimate):
                low = high = np.nan
            rows.append((model, column, task, metric, value, low, high))
    return pd.DataFrame(rows, columns=["Model", "column", "Task", "metric", "value", "low", "high"])


def subtask_intervals(subtasks: pd.DataFrame, result: Uncertainty | None) -> pd.DataFrame:
    """The subtask table's headline cells with their interval (percent): Task, Subtask, subtask_name, model,
    metric, value, low, high."""
    found: dict[tuple[str, int, int, str], tuple[float, float, float]] = {}
    if result is not None:
        for row in _records(result.subtasks):
            key = (str(row["model"]), int(row["Task"]), int(row["Subtask"]), str(row["metric"]))
            found[key] = (row["value"] * 100, row["low"] * 100, row["high"] * 100)
    keys = {"Task", "Subtask", "subtask_name", "metric"}
    models = [c for c in subtasks.columns if c not in keys]
    rows = []
    for record in subtasks.to_dict("records"):
        metric = _HEADLINE_METRIC.get(str(record["metric"]), str(record["metric"]))
        for model in models:
            value = float(record[model])
            key = (model, int(record["Task"]), int(record["Subtask"]), metric)
            estimate, low, high = found.get(key, (np.nan, np.nan, np.nan))
            if not _matches(value, estimate):
                low = high = np.nan
            rows.append((record["Task"], record["Subtask"], record["subtask_name"], model, metric, value, low, high))
    return pd.DataFrame(rows, columns=["Task", "Subtask", "subtask_name", "model", "metric", "value", "low", "high"])


def pairwise_table(result: Uncertainty) -> pd.DataFrame:
    """Every pair of models per task and metric, differences in percentage points."""
    labels = {metric: label for metric, label in (*OPEN_COLUMNS, *CLOSED_COLUMNS)}
    pairs = result.pairs.copy()
    pairs["metric"] = pairs["metric"].map(lambda m: labels.get(m, m))
    for column in ("difference", "low", "high"):
        pairs[column] = pairs[column] * 100
    pairs["resamples"] = result.resamples
    pairs["resampling_unit"] = "volume"
    return pairs


def _pairwise_markdown(pairs: pd.DataFrame, note: str) -> str:
    shown = pd.DataFrame(
        {
            "Task": pairs["Task"],
            "metric": pairs["metric"],
            "model A": pairs["model_a"],
            "model B": pairs["model_b"],
            "A - B (pp) [95% CI]": [
                format_interval(v, lo, hi, 2)
                for v, lo, hi in zip(pairs["difference"], pairs["low"], pairs["high"], strict=True)
            ],
            "p": [f"{p:.3g}" if np.isfinite(p) else "" for p in pairs["p_value"]],
            "p (Holm)": [f"{p:.3g}" if np.isfinite(p) else "" for p in pairs["p_holm"]],
        }
    )
    text = "# Pairwise differences between models\n\n" + note + "\n\n"
    return text + (shown.to_markdown(index=False) if len(shown) else "(fewer than two models)") + "\n"


CLINICAL_LABELS = {
    "label_f1_micro": "Label F1 micro",
    "label_f1_macro": "Label F1 macro",
    "ratescore": "RaTEScore",
    "radgraph_f1": "RadGraph F1",
    "green": "GREEN",
}


def clinical_cells(clinical: pd.DataFrame) -> pd.DataFrame:
    """Model, Task and one text cell per clinical metric: the value (percent) or its status (``not computed: ...``)."""
    out = clinical[["model", "Task"]].rename(columns={"model": "Model"}).copy()
    for metric, label in CLINICAL_LABELS.items():
        if metric not in clinical:
            continue
        status = clinical.get(f"{metric}_status", pd.Series("", index=clinical.index)).fillna("").astype(str)
        values = clinical[metric].astype(float)
        out[label] = [
            f"{100 * v:.1f}" if np.isfinite(v) and (not s or s == "computed") else (s or "not computed")
            for v, s in zip(values, status, strict=True)
        ]
    return out


def clinical_markdown(clinical: pd.DataFrame) -> str:
    return clinical_cells(clinical).to_markdown(index=False)


def write_leaderboard(
    metric_table: pd.DataFrame,
    predictions: pd.DataFrame,
    folder: Path,
    categories: dict[tuple[str, str], str] | None = None,
    *,
    scores: pd.DataFrame | None = None,
    resamples: int = DEFAULT_RESAMPLES,
    seed: int = 0,
    confidence: float = DEFAULT_CONFIDENCE,
    clinical: pd.DataFrame | None = None,
) -> LeaderboardFiles:
    """Write every leaderboard file under ``folder`` (see the module docstring).

    ``scores``: per-question scores of ``predictions`` (same index,
    :func:`rad3d_pipeline.evaluation.metrics.sample_scores`) for the intervals; None scores the predictions
    here without BERTScore. ``resamples=0`` leaves the intervals and the pairwise tables out. ``clinical``:
    :func:`rad3d_pipeline.evaluation.clinical_metrics.wide_table` rows (model x task, each metric's value and
    status), written to ``clinical.csv`` and as a section of ``table4.md`` where a metric that was not
    computed says so (never 0).
    """
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

    needed = {"VolumeName", *REQUIRED_COLUMNS} if scores is None else {"VolumeName", "model", "Task", "Subtask"}
    if resamples > 0 and len(predictions) and needed <= set(predictions.columns):
        if scores is None:
            scores = sample_scores(predictions, EngineOptions(bertscore=False))
        result.uncertainty = uncertainty(
            predictions, scores, INTERVAL_METRICS, resamples=resamples, confidence=confidence, seed=seed
        )
    unc = result.uncertainty
    numeric = result.table4
    cells = table4_intervals(numeric, unc)
    shown = numeric.astype(object).copy()
    for cell in _records(cells):
        shown.loc[cell["Model"], cell["column"]] = format_interval(cell["value"], cell["low"], cell["high"])
    save_text("table4.csv", shown.to_csv())
    notes = []
    if len(metric_table):
        for column, label in (("bertscore_model", "BERTScore model"), ("jury", "LLM jury")):
            values = sorted({str(v) for v in metric_table.get(column, pd.Series(dtype=str)) if str(v)})
            if values:
                notes.append(f"{label}: {'; '.join(values)}")
        versions = sorted({str(v) for v in metric_table["protocol_version"]})
        notes.append(f"protocol: {', '.join(versions)}; values in percent, macro-averaged over subtasks")
    if unc is not None:
        notes.append(f"[low, high]: {unc.note()}; pairwise differences and p-values in pairwise.md")
        missing = cells[cells["value"].notna() & cells["low"].isna()]
        if len(missing):
            columns = ", ".join(dict.fromkeys(missing["column"]))
            notes.append(f"no interval (no per-question scores reproducing the value) for: {columns}")
    else:
        reason = "resamples=0" if resamples <= 0 else "no per-question rows with volume names"
        notes.append(f"no intervals computed ({reason})")
    for model in numeric.index:
        found = LIMIT_SUFFIX.search(str(model))
        if found:
            notes.append(
                f"{model}: the first {found.group(1)} questions per subtask only (rad3d eval --limit), "
                "not comparable with full runs"
            )
    clinical_text = ""
    if clinical is not None and len(clinical):
        save_text("clinical.csv", clinical.to_csv(index=False, float_format="%.4f"))
        clinical_text = "\n## Clinical metrics (open-ended tasks)\n\n" + clinical_markdown(clinical) + "\n"
    save_text("table4.md", shown.to_markdown() + "\n\n" + "\n".join(f"- {n}" for n in notes) + "\n" + clinical_text)
    subtasks = subtask_table(metric_table) if len(metric_table) else pd.DataFrame()
    save_text("subtasks.csv", subtasks.to_csv(index=False, float_format="%.4f"))
    sub_cells = subtask_intervals(subtasks, unc) if len(subtasks) else pd.DataFrame()
    if len(subtasks):
        sub_shown = subtasks.astype(object).copy()
        by_key = {(r["Task"], r["Subtask"], r["model"]): r for r in _records(sub_cells)}
        model_columns = [c for c in subtasks.columns if c not in {"Task", "Subtask", "subtask_name", "metric"}]
        for i, record in enumerate(_records(subtasks)):
            for model in model_columns:
                cell = by_key[(record["Task"], record["Subtask"], model)]
                sub_shown.loc[sub_shown.index[i], model] = format_interval(cell["value"], cell["low"], cell["high"])
        note = f"\n\n- [low, high]: {unc.note()}\n" if unc is not None else "\n"
        save_text("subtasks.md", sub_shown.to_markdown(index=False) + note)
    else:
        save_text("subtasks.md", "\n")
    if unc is not None:
        parts = [cells.rename(columns={"Model": "model"}).assign(level="task", Subtask=np.nan, subtask_name="")]
        if len(sub_cells):
            parts.append(sub_cells.assign(level="subtask", column=""))
        long = pd.concat(parts, ignore_index=True)[
            ["level", "model", "Task", "Subtask", "subtask_name", "column", "metric", "value", "low", "high"]
        ]
        long["resamples"] = unc.resamples
        long["resampling_unit"] = "volume"
        long["confidence"] = unc.confidence
        save_text("intervals.csv", long.to_csv(index=False, float_format="%.4f"))
        pairs = pairwise_table(unc)
        save_text("pairwise.csv", pairs.to_csv(index=False, float_format="%.6g"))
        save_text("pairwise.md", _pairwise_markdown(pairs, unc.pairs_note()))
    bar_note = f"error bars: {unc.note()}" if unc is not None else ""
    summary = task_summary(metric_table)
    for task in sorted(int(t) for t in summary["Task"].unique()):
        rows = summary[summary["Task"] == task].set_index("model")
        closed = _question_type(metric_table, task) == "Close"
        bar_columns: list[tuple[str, str]] = (
            [("accuracy", "Acc (letter rule)"), ("parsed_accuracy", "Acc (parsed choice)")]
            if closed
            else list(OPEN_COLUMNS)
        )
        data = pd.DataFrame({label: rows[m] * 100 for m, label in bar_columns if m in rows and rows[m].notna().any()})
        task_cells = cells[cells["Task"] == task]
        labels = dict(bar_columns)
        low = task_cells.assign(label=task_cells["metric"].map(labels)).pivot(
            index="Model", columns="label", values="low"
        )
        high = task_cells.assign(label=task_cells["metric"].map(labels)).pivot(
            index="Model", columns="label", values="high"
        )
        name = TASK_NAMES.get(task, "")
        if len(data.columns):
            png = grouped_bars(
                data,
                f"Task {task} {name} (macro over subtasks)",
                "%",
                low.reindex(data.index),
                high.reindex(data.index),
                bar_note,
            )
            save_png(f"bars_task{task}.png", png)
        task_subtasks = subtasks[subtasks["Task"] == task]
        models = [c for c in task_subtasks.columns if c not in {"Task", "Subtask", "subtask_name", "metric"}]
        if len(task_subtasks) and models:
            index = [subtask_label(task, n) for n in task_subtasks["subtask_name"]]
            data = task_subtasks[models].set_axis(index)
            part = sub_cells[sub_cells["Task"] == task]
            part = part.assign(label=[subtask_label(task, n) for n in part["subtask_name"]])
            low = part.pivot(index="label", columns="model", values="low").reindex(index=index, columns=models)
            high = part.pivot(index="label", columns="model", values="high").reindex(index=index, columns=models)
            metric = " / ".join(sorted(set(task_subtasks["metric"])))
            png = grouped_bars(data, f"Task {task} {name}: {metric} per subtask", "%", low, high, bar_note)
            save_png(f"bars_subtasks_task{task}.png", png)
    if len(predictions):
        matrix = correctness_matrix(predictions)
        save_text("correctness_matrix.csv", matrix.to_csv(index=False))
        models = [str(m) for m in dict.fromkeys(predictions["model"])]
        save_png("correctness_matrix.png", matrix_png(matrix, models))
        categories_table = per_category(predictions, categories)
        save_text("per_category.csv", categories_table.to_csv(index=False, float_format="%.4f"))
        title = "Accuracy per category (closed: 3D-RAD's letter rule; open: exact match)"
        save_png("per_category.png", category_panels(categories_table, models, title))
        lengths = answer_lengths(predictions)
        stats = lengths.groupby(["source", "QuestionType"])["words"].describe().reset_index()
        save_text("answer_lengths.csv", stats.to_csv(index=False, float_format="%.3f"))
        save_png("answer_lengths.png", length_png(lengths))
    return result

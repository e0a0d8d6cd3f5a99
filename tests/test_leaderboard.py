"""The leaderboard: Table 4 layout from hand-made metric tables, its files, and a sample build ending in it."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rad3d_pipeline.evaluation import leaderboard as lb
from rad3d_pipeline.evaluation.metrics import EngineOptions, evaluate_predictions


def predictions() -> pd.DataFrame:
    rows = []
    for model, outputs in {
        "good": ["B. No", "A. Yes", "left lung", "5 mm"],
        "bad": ["A. Yes", "B", "right lung", ""],
    }.items():
        rows += [
            (model, 4, 1, "Atelectasis", "Close", "Is atelectasis present?", "No", "B", outputs[0]),
            (model, 4, 2, "Emphysema", "Close", "Is emphysema present?", "Yes", "A", outputs[1]),
            (model, 1, 1, "Anatomical_observation", "Open", "Which lung?", "Left lung.", "-", outputs[2]),
            (model, 3, 1, "Diameter", "Open", "What is the diameter?", "5 mm", "-", outputs[3]),
        ]
    columns = ["model", "Task", "Subtask", "subtask_name", "QuestionType", "Question", "Answer", "AnswerChoice"]
    frame = pd.DataFrame(rows, columns=[*columns, "prediction"])
    frame["VolumeName"] = "test_1_a_1.nii.gz"
    return frame


def test_table4_and_files(tmp_path: Path) -> None:
    frame = predictions()
    table = evaluate_predictions(frame, EngineOptions(bertscore=False))
    t4 = lb.table4(table)
    assert list(t4.index) == ["bad", "good"]
    # Task 4: good answers both subtasks (macro 100); bad: "A." wrong, bare "B" wrong by the letter rule -> 0
    assert t4.loc["good", "Task4 Acc"] == 100.0 and t4.loc["bad", "Task4 Acc"] == 0.0
    # "left lung" vs "Left lung.": 13a tokens are case-sensitive, 1 of 2 match; brevity penalty exp(1 - 3/2)
    assert t4.loc["good", "Task1 ROUGE"] == pytest.approx(100.0)
    assert t4.loc["good", "Task1 BLEU"] == pytest.approx(100 * 0.5 * np.exp(1 - 3 / 2), abs=1e-9)
    # the empty prediction is skipped: bad has no Task 3 value
    assert np.isnan(t4.loc["bad", "Task3 BLEU"]) and t4.loc["good", "Task3 BLEU"] == 100.0
    files = lb.write_leaderboard(table, frame, tmp_path / "lb")
    for name in ("table4.csv", "table4.md", "subtasks.csv", "correctness_matrix.csv", "per_category.csv"):
        assert files.files[name].is_file(), name
    for name in ("bars_task4.png", "bars_subtasks_task4.png", "correctness_matrix.png", "answer_lengths.png"):
        assert files.pngs[name].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
    matrix = pd.read_csv(files.files["correctness_matrix.csv"])
    assert matrix["good"].tolist() == [1, 1, 1, 1] and matrix["bad"].tolist() == [0, 0, 0, 0]
    assert "Task4 Acc" in files.files["table4.md"].read_text()


def test_per_category_uses_spatial_categories() -> None:
    frame = predictions()
    cats = {(lb.volume_key("valid_1_a_1.nii.gz"), lb.question_key("which  LUNG?")): "laterality"}
    table = lb.per_category(frame, cats)
    assert set(table["category"]) == {"laterality", "Atelectasis", "Emphysema", "Diameter"}
    assert set(table["label"]) == {"Task 1, laterality", "Task 4, Atelectasis", "Task 4, Emphysema", "Task 3, Diameter"}
    assert table["Task"].tolist() == sorted(table["Task"])  # grouped by task, subtask order within
    assert table.set_index(["category", "model"]).loc[("laterality", "good"), "accuracy"] == 1.0
    assert lb.volume_key("test_12_b_2.nii.gz") == "valid_12_b_2" and lb.volume_key("train_1_a_1") == "train_1_a_1"


def test_subtask_labels_for_readers() -> None:
    assert lb.subtask_label(5, "b") == "1st follow-up" and lb.subtask_label(6, "c") == "2nd follow-up"
    assert lb.subtask_label(5, "d") == "3rd follow-up" and lb.subtask_label(5, "e") == "4th follow-up"
    assert lb.subtask_label(1, "Anatomical_observation") == "Anatomical observation"
    assert lb.subtask_label(4, "Lung nodule") == "Lung nodule" and lb.subtask_label(4, "b") == "b"


def release_predictions(release: Path, seed: int = 0) -> pd.DataFrame:
    """The mini release's Tasks 3-6 answered by a strong and a weak synthetic model."""
    paths = [p for task in ("Task3*", "Task4*", "Task5*", "Task6*") for p in sorted(release.glob(f"{task}/*.csv"))]
    test = pd.concat([pd.read_csv(p).assign(subtask_name=p.stem) for p in paths], ignore_index=True)
    rng = np.random.default_rng(seed)
    rows = []
    for model, skill in (("strong", 0.85), ("weak", 0.55)):
        part = test.copy()
        right = rng.random(len(part)) < skill
        wrong = np.where(part["AnswerChoice"].astype(str) == "A", "B", "A")
        letters = np.where(right, part["AnswerChoice"].astype(str), wrong)
        part["prediction"] = np.where(
            part["QuestionType"] == "Close",
            [f"{x}." for x in letters],
            np.where(right, part["Answer"].astype(str), "12 mm"),
        )
        part["model"] = model
        rows.append(part)
    return pd.concat(rows, ignore_index=True)


def test_leaderboard_intervals_and_pairwise(tmp_path: Path, fixtures: Path) -> None:
    frame = release_predictions(fixtures / "3drad_release_mini" / "test")
    table = evaluate_predictions(frame, EngineOptions(bertscore=False))
    files = lb.write_leaderboard(table, frame, tmp_path / "lb", resamples=300, seed=1)
    unc = files.uncertainty
    assert unc is not None and unc.resamples == 300
    t4 = pd.read_csv(files.files["table4.csv"], index_col=0)
    cell = t4.loc["strong", "Task4 Acc"]
    value, low, high = (float(x) for x in cell.replace("[", "").replace("]", "").replace(",", "").split())
    assert value == pytest.approx(files.table4.loc["strong", "Task4 Acc"], abs=0.05) and low < value < high
    # the bootstrap point estimates reproduce Table 4 (same per-question scores, same macro average)
    intervals = pd.read_csv(files.files["intervals.csv"])
    task_level = intervals[intervals["level"] == "task"].dropna(subset=["low"])
    assert {"Task4 Acc", "Task5 Acc", "Task6 Acc", "Task3 BLEU", "Task3 ROUGE"} <= set(task_level["column"])
    assert (task_level["low"] <= task_level["value"] + 1e-9).all() and (
        task_level["value"] <= task_level["high"] + 1e-9
    ).all()
    assert (intervals["resampling_unit"] == "volume").all() and (intervals["resamples"] == 300).all()
    md = files.files["table4.md"].read_text()
    assert "300 resamples of volumes" in md
    pairs = pd.read_csv(files.files["pairwise.csv"])
    acc = pairs[(pairs["metric"] == "Acc") & (pairs["Task"] == 4)].iloc[0]
    assert acc["model_a"] == "strong" and acc["difference"] > 0 and acc["p_value"] < 0.01 and acc["low"] > 0
    assert "paired permutation test" in files.files["pairwise.md"].read_text()
    sub = pd.read_csv(files.files["intervals.csv"]).query("level == 'subtask' and Task == 5")
    assert len(sub) and sub["low"].notna().all()
    for name in ("per_category.png", "bars_task4.png", "bars_subtasks_task5.png"):
        assert files.pngs[name].read_bytes()[:4] == b"\x89PNG"
    categories = pd.read_csv(files.files["per_category.csv"])
    assert "Task 5, 1st follow-up" in set(categories["label"])


def test_leaderboard_without_intervals(tmp_path: Path) -> None:
    frame = predictions()
    table = evaluate_predictions(frame, EngineOptions(bertscore=False))
    files = lb.write_leaderboard(table, frame, tmp_path / "lb", resamples=0)
    assert files.uncertainty is None and "pairwise.csv" not in files.files
    assert "no intervals computed" in files.files["table4.md"].read_text()
    assert pd.read_csv(files.files["table4.csv"], index_col=0).loc["good", "Task4 Acc"] == 100.0


@pytest.mark.slow
def test_sample_build_ends_in_a_leaderboard(tmp_path: Path) -> None:
    env = dict(os.environ)
    env.update(DAGSTER_HOME=str(tmp_path / "dagster_home"), RAD3D_MODELS="prior,random", RAD3D_LLM="rules")
    env.pop("RAD3D_SHARDS", None)
    env.pop("RAD3D_MODELS_FILE", None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "rad3d.cli", *args], capture_output=True, text=True, env=env, timeout=900
        )

    made = cli("sample-data", "--out", str(tmp_path / "ctrate"), "--patients", "8", "--seed", "2")
    assert made.returncode == 0, made.stderr
    out = tmp_path / "out"
    built = cli("build", "--ctrate-root", str(tmp_path / "ctrate"), "--out", str(out), "--select", "+key:leaderboard")
    assert built.returncode == 0, built.stdout + built.stderr
    folder = out / "reports" / "leaderboard"
    t4 = pd.read_csv(folder / "table4.csv", index_col=0, dtype=str)
    assert sorted(t4.index) == ["prior", "random"]
    assert {"Task4 Acc", "Task5 Acc", "Task6 Acc", "Task1 BLEU", "Task1 BERTScore"} <= set(t4.columns)
    assert t4[["Task4 Acc", "Task5 Acc", "Task6 Acc"]].notna().all().all()
    # closed tasks: "value [low, high]" (volumes resampled); every number a percentage
    for cell in t4[["Task4 Acc", "Task5 Acc", "Task6 Acc"]].to_numpy().ravel():
        value, low, high = (float(x) for x in cell.replace("[", " ").replace("]", " ").replace(",", " ").split())
        assert 0 <= low <= value <= high <= 100, cell
    assert (folder / "pairwise.csv").is_file() and "paired permutation" in (folder / "pairwise.md").read_text()
    assert "offline stand-in" in (folder / "table4.md").read_text()
    for task in range(4, 7):
        assert (folder / f"bars_task{task}.png").is_file() and (folder / f"bars_subtasks_task{task}.png").is_file()
    assert (folder / "correctness_matrix.csv").is_file() and (folder / "answer_lengths.png").is_file()
    metrics = pd.concat(pd.read_parquet(p) for p in (out / "tables" / "metric_tables").glob("*.parquet"))
    assert set(metrics["model"]) == {"prior", "random"} and (metrics["protocol_version"] == "3drad-2").all()


def test_subtask_table_names_the_metric_it_holds() -> None:
    """Open subtasks fall back to ROUGE-1 when BERTScore was not computed, and say so."""
    table = pd.DataFrame(
        {
            "Task": [3, 3, 4],
            "Subtask": [1, 1, 1],
            "subtask_name": ["Diameter", "Diameter", "Atelectasis"],
            "model": ["prior", "random", "prior"],
            "QuestionType": ["Open", "Open", "Close"],
            "accuracy": [np.nan, np.nan, 0.5],
            "bertscore_f1": [np.nan, np.nan, np.nan],
            "rouge1": [0.25, 0.5, np.nan],
        }
    )
    out = lb.subtask_table(table).set_index("subtask_name")
    assert out.loc["Diameter", "metric"] == "ROUGE-1" and out.loc["Atelectasis", "metric"] == "accuracy"
    assert out.loc["Diameter", "prior"] == 25.0 and out.loc["Diameter", "random"] == 50.0
    assert out.loc["Atelectasis", "prior"] == 50.0


def test_leaderboard_uses_given_scores_for_every_metric(tmp_path: Path, fixtures: Path) -> None:
    """Per-question scores passed in (here with a BERTScore column) give that column its interval too;
    a table value the scores do not reproduce gets none, and the notes say which."""
    from rad3d_pipeline.evaluation.metrics import metric_table, sample_scores

    frame = release_predictions(fixtures / "3drad_release_mini" / "test")
    scores = sample_scores(frame, EngineOptions(bertscore=False))
    scores["bertscore_f1"] = scores["rouge1"] * 0.5 + 0.25  # a stand-in per-question BERTScore
    table = metric_table(frame, scores)
    files = lb.write_leaderboard(table, frame, tmp_path / "lb", scores=scores, resamples=100)
    cells = lb.table4_intervals(files.table4, files.uncertainty)
    bert = cells[cells["column"] == "Task3 BERTScore"]
    assert len(bert) == 2 and bert["low"].notna().all()
    tampered = table.copy()
    tampered.loc[tampered["Task"] == 3, "bleu"] += 0.01  # no longer what the scores give
    files = lb.write_leaderboard(tampered, frame, tmp_path / "lb2", scores=scores, resamples=100)
    assert (
        "no interval (no per-question scores reproducing the value) for: Task3 BLEU"
        in files.files["table4.md"].read_text()
    )


def test_strict_columns_empty_answers_and_limited_models(tmp_path: Path) -> None:
    frame = predictions()
    # "A. B." names both letters: 3D-RAD's rule counts it correct, the strict figure does not.
    frame.loc[(frame["model"] == "good") & (frame["Subtask"] == 2) & (frame["Task"] == 4), "prediction"] = "A. B."
    frame["model"] = frame["model"].replace({"bad": "bad-limit1"})
    table = evaluate_predictions(frame, EngineOptions(bertscore=False))
    t4 = lb.table4(table)
    assert t4.loc["good", "Task4 Acc"] == 100.0 and t4.loc["good", "Task4 Acc strict"] == 50.0
    # The empty Task 3 prediction: skipped by the protocol (NaN), 0 in the strict figure.
    assert np.isnan(t4.loc["bad-limit1", "Task3 BLEU"]) and t4.loc["bad-limit1", "Task3 BLEU strict"] == 0.0
    # An empty prediction is never correct, even against an empty reference.
    empty = frame.iloc[[3]].assign(Answer="", prediction="  ")
    assert not lb.row_correct(empty).any()
    clinical = pd.DataFrame(
        {
            "model": ["good", "good"],
            "Task": [1, 3],
            "ratescore": [0.5, np.nan],
            "ratescore_status": ["computed", "not computed: ratescore_ner_model is not set"],
            "green": [np.nan, np.nan],
            "green_status": ["not computed: green_judge is off"] * 2,
        }
    )
    files = lb.write_leaderboard(table, frame, tmp_path / "lb", clinical=clinical, resamples=50)
    text = files.files["table4.md"].read_text()
    assert "Acc strict" in text and "BLEU strict" in text
    assert "bad-limit1: the first 1 questions per subtask only" in text
    section = text.split("## Clinical metrics", 1)[1]
    assert "50.0" in section and "not computed: ratescore_ner_model is not set" in section
    assert "not computed: green_judge is off" in section and " 0.0 " not in section
    assert (tmp_path / "lb" / "clinical.csv").is_file()
    intervals = pd.read_csv(files.files["intervals.csv"])
    assert {"accuracy_strict", "bleu_strict"} <= set(intervals["metric"])


def test_importing_tables_imports_no_plotting_or_scipy() -> None:
    """matplotlib and scipy are imported by the first chart or rank correlation, not with the modules."""
    code = (
        "import sys\n"
        "import rad3d_pipeline.evaluation.leaderboard, rad3d_pipeline.evaluation.leaderboard_plots\n"
        "import rad3d_pipeline.quality.benchmark_statistics\n"
        "import rad3d_pipeline.quality.consistency, rad3d_pipeline.common.plots\n"
        "print(sorted(m for m in ('matplotlib', 'scipy') if m in sys.modules))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.strip() == "[]", out.stdout + out.stderr

"""``rad3d evaluate``: the CT-SpatialVQA reference numbers from the command line, and 3D-RAD files per task."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pytest

from rad3d.cli import main

FILES = ("merlin_predictions_600.jsonl", "radfm_predictions_600.jsonl")


def test_spatial_protocol_reproduces_the_reference(fixtures: Path, tmp_path: Path) -> None:
    folder = fixtures / "spatialvqa_mini"
    out = tmp_path / "eval.json"
    paths = [str(folder / name) for name in FILES]
    code = main(
        [
            "evaluate",
            "--predictions",
            *paths,
            "--protocol",
            "spatial",
            "--lowercase",
            "--metrics",
            "bleu,rouge,meteor",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    report = json.loads(out.read_text())
    reference = json.loads((folder / "reference_metrics.json").read_text())["results"]
    assert report["protocol"] == "spatial" and report["lowercase"] is True
    assert list(report["results"]) == paths  # keyed by the path as given
    for name, path in zip(FILES, paths, strict=True):
        got, expected = report["results"][path], reference[name]
        assert list(got) == ["count", "bleu", "rouge1_f", "rouge2_f", "rougeL_f", "meteor"]
        assert got["count"] == expected["count"]
        for key in ("bleu", "rouge1_f", "rouge2_f", "rougeL_f", "meteor"):
            assert got[key] == expected[key], (name, key)  # exactly, not approximately


def test_3drad_protocol_per_task_and_subtask(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = tmp_path / "model_x.csv"
    csv.write_text(
        "Task,Subtask,subtask_name,QuestionType,Question,Answer,AnswerChoice,prediction\n"
        "4,1,Atelectasis,Close,Is atelectasis present?,No,B,B. No\n"
        "4,1,Atelectasis,Close,Is atelectasis present?,Yes,A,B\n"
        "4,2,Emphysema,Close,Is emphysema present?,Yes,A,A. Yes\n"
        "3,1,Diameter,Open,What is the diameter?,5 mm,-,5 mm\n"
        "3,1,Diameter,Open,What is the diameter?,7 mm,-,\n"
    )
    out = tmp_path / "x.json"
    code = main(
        [
            "evaluate",
            "--predictions",
            str(csv),
            "--protocol",
            "3drad",
            "--metrics",
            "bleu,rouge,meteor",
            "--jury",
            "offline-rules",
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out.splitlines()
    # The terminal table: a line per task, indented lines per subtask.
    assert any(line.startswith("  task 4 (Close): n=3, accuracy 0.75") for line in printed), printed
    assert any(line.startswith("    Atelectasis: n=2, accuracy 0.5") for line in printed), printed
    assert any(line.startswith("    Emphysema: n=1, accuracy 1") for line in printed), printed
    result = json.loads(out.read_text())["results"][str(csv)]
    task4 = result["tasks"]["4"]
    assert task4["question_type"] == "Close" and task4["count"] == 3
    assert task4["subtasks"]["Atelectasis"]["accuracy"] == 0.5
    assert task4["subtasks"]["Atelectasis"]["parsed_accuracy"] == 0.5
    assert task4["macro"]["accuracy"] == pytest.approx(0.75)  # (0.5 + 1) / 2
    diameter = result["tasks"]["3"]["subtasks"]["Diameter"]
    assert (diameter["count"], diameter["scored"]) == (2, 1)  # the empty prediction is skipped
    assert diameter["bleu"] == 1.0 and diameter["rouge1_f"] == 1.0 and diameter["exact_match"] == 0.5
    assert diameter["accuracy"] is None and "bertscore_f1" not in diameter
    assert result["jury"].startswith("offline-rules")


def test_errors_are_clear(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "none.jsonl"
    assert main(["evaluate", "--predictions", str(missing), "--protocol", "spatial", "--out", "x.json"]) == 2
    assert "none.jsonl" in capsys.readouterr().err
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"answer": "a", "prediction": "b"}\n{not json\n')
    assert (
        main(
            [
                "evaluate",
                "--predictions",
                str(bad),
                "--protocol",
                "spatial",
                "--metrics",
                "bleu",
                "--out",
                str(tmp_path / "o.json"),
            ]
        )
        == 2
    )
    assert "bad.jsonl: line 2" in capsys.readouterr().err
    code = main(
        ["evaluate", "--predictions", str(bad), "--protocol", "spatial", "--metrics", "cider", "--out", "o.json"]
    )
    assert code == 2 and "--metrics: unknown cider" in capsys.readouterr().err


def test_3drad_file_without_tasks_mixing_open_and_closed(tmp_path: Path) -> None:
    """Rows with no task column are task 0; open and closed rows get one entry each, neither lost."""
    jsonl = tmp_path / "mixed.jsonl"
    jsonl.write_text(
        '{"question": "What is the diameter?", "answer": "5 mm", "prediction": "5 mm"}\n'
        '{"question": "Is there a nodule?", "answer": "Yes", "AnswerChoice": "A", "prediction": "A. Yes"}\n'
    )
    out = tmp_path / "mixed.json"
    code = main(
        ["evaluate", "--predictions", str(jsonl), "--protocol", "3drad", "--metrics", "bleu", "--out", str(out)]
    )
    assert code == 0
    tasks = json.loads(out.read_text())["results"][str(jsonl)]["tasks"]
    assert set(tasks) == {"0-open", "0-close"}
    assert tasks["0-open"]["macro"]["bleu"] == 1.0 and tasks["0-open"]["subtasks"]["all"]["bleu"] == 1.0
    assert tasks["0-close"]["macro"]["accuracy"] == 1.0 and tasks["0-close"]["subtasks"]["all"]["accuracy"] == 1.0


def test_3drad_release_as_predictions_and_the_letter_rule_inflation(
    fixtures: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The real release CSVs, answered perfectly and by listing every choice: the letter rule scores the
    listing 100% (3D-RAD's quirk, reproduced); the strict figure beside it shows 0%."""
    release = fixtures / "3drad_release_mini" / "test"
    frame = pd.concat(
        [pd.read_csv(path, dtype=str, keep_default_na=False) for path in sorted(release.glob("Task[1456]_*/*.csv"))]
    )
    closed = frame["QuestionType"] == "Close"
    perfect = frame.assign(prediction=frame["Answer"].where(~closed, frame["AnswerChoice"] + ". " + frame["Answer"]))
    listing = frame.assign(prediction=frame["Answer"].where(~closed, "A. B. C. D."))
    raw = tmp_path / "release_rows.csv"
    frame.to_csv(raw, index=False)
    for name, table in (("perfect", perfect), ("listing", listing)):
        table.to_csv(tmp_path / f"{name}.csv", index=False)
    out = tmp_path / "eval.json"
    args = ["evaluate", "--protocol", "3drad", "--metrics", "bleu", "--out", str(out)]
    assert main([*args[:1], "--predictions", str(raw), *args[1:]]) == 2  # the release itself has no predictions
    assert f"{raw}: no 'prediction' column (columns found: Task, Subtask, VolumeName," in capsys.readouterr().err
    files = [str(tmp_path / "perfect.csv"), str(tmp_path / "listing.csv")]
    assert main([*args[:1], "--predictions", *files, *args[1:]]) == 0
    results = json.loads(out.read_text())["results"]
    perfect_tasks, listing_tasks = results[files[0]]["tasks"], results[files[1]]["tasks"]
    assert set(perfect_tasks) == {"1", "4", "5", "6"}
    assert perfect_tasks["1"]["count"] == (frame["Task"] == "1").sum()
    assert perfect_tasks["1"]["macro"]["bleu"] == 1.0 and perfect_tasks["1"]["macro"]["bleu_strict"] == 1.0
    for task in ("4", "5", "6"):
        assert perfect_tasks[task]["macro"]["accuracy"] == perfect_tasks[task]["macro"]["accuracy_strict"] == 1.0
        assert listing_tasks[task]["macro"]["accuracy"] == 1.0  # the quirk: every choice listed is "correct"
        assert listing_tasks[task]["macro"]["accuracy_strict"] == 0.0
        assert listing_tasks[task]["macro"]["parsed_accuracy"] == 0.0
    assert "task 4 (Close): n=" in capsys.readouterr().out

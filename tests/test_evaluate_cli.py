"""``rad3d evaluate``: the CT-SpatialVQA reference numbers from the command line, and 3D-RAD files per task."""

from __future__ import annotations

import json
from pathlib import Path

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
    for name in FILES:
        got, expected = report["results"][name], reference[name]
        assert list(got) == ["count", "bleu", "rouge1_f", "rouge2_f", "rougeL_f", "meteor"]
        assert got["count"] == expected["count"]
        for key in ("bleu", "rouge1_f", "rouge2_f", "rougeL_f", "meteor"):
            assert abs(got[key] - expected[key]) <= 1e-9, (name, key)


def test_3drad_protocol_per_task_and_subtask(tmp_path: Path) -> None:
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
    result = json.loads(out.read_text())["results"]["model_x.csv"]
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
    with pytest.raises(SystemExit):
        main(["evaluate", "--predictions", str(bad), "--protocol", "spatial", "--metrics", "cider", "--out", "o.json"])


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
    tasks = json.loads(out.read_text())["results"]["mixed.jsonl"]["tasks"]
    assert set(tasks) == {"0-open", "0-close"}
    assert tasks["0-open"]["macro"]["bleu"] == 1.0 and tasks["0-open"]["subtasks"]["all"]["bleu"] == 1.0
    assert tasks["0-close"]["macro"]["accuracy"] == 1.0 and tasks["0-close"]["subtasks"]["all"]["accuracy"] == 1.0

"""``rad3d evaluate`` refuses every bad input before computing anything, with one line naming the file and place.

The inputs are written the way real exports break: CSV from Excel (byte-order mark, CRLF), latin-1
bytes in the middle of a UTF-8 file, a cut-off last line, a header-only CSV, an empty file, JSONL
with blank lines. Every refusal: exit code 2, exactly one line on stderr naming the file (and the line
or byte offset), nothing on stdout (nothing was scored) and nothing written to ``--out``. Then the
good cases the checks must not break: two files with one base name, the strict figures beside
3D-RAD's quirks, an empty prediction that is never an exact match.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from rad3d.cli import main
from rad3d_pipeline.evaluation import metrics
from tests.conftest import REPO

HEADER = "Task,Subtask,subtask_name,QuestionType,Question,Answer,AnswerChoice,prediction"
GOOD_ROWS = (
    "4,1,Atelectasis,Close,Is atelectasis present?,No,B,B. No",
    "1,1,Anatomy,Open,Where is the nodule?,Right lower lobe.,-,right lower lobe",
)


def excel_csv(path: Path, *rows: str, header: str = HEADER) -> Path:
    """A CSV as Excel's "CSV UTF-8" writes it: byte-order mark, CRLF line ends."""
    path.write_bytes(("\ufeff" + "\r\n".join((header, *rows)) + "\r\n").encode("utf-8"))
    return path


def jsonl(path: Path, *records: dict[str, object], blank_after: int | None = None) -> Path:
    lines = [json.dumps(r) for r in records]
    if blank_after is not None:
        lines.insert(blank_after, "")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def refused(capsys: pytest.CaptureFixture[str], out: Path, *args: str, protocol: str = "3drad") -> str:
    """Run the command in-process; assert the refusal contract and return the one stderr line."""
    before = out.read_bytes() if out.is_file() else None
    code = main(["evaluate", "--predictions", *args, "--protocol", protocol, "--metrics", "bleu", "--out", str(out)])
    captured = capsys.readouterr()
    lines = captured.err.splitlines()
    assert code == 2, captured
    assert len(lines) == 1 and lines[0].startswith("rad3d evaluate: "), lines
    assert captured.out == "", "something was scored before the refusal"
    after = out.read_bytes() if out.is_file() else None
    assert after == before, "--out was written"
    return lines[0]


# --------------------------------------------------------------------------- missing columns


def test_no_prediction_column_lists_the_columns_in_file_order(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = excel_csv(tmp_path / "export.csv", "Q,A,P", header="Question,Answer,model_output")
    line = refused(capsys, tmp_path / "eval.json", str(bad))
    assert f"{bad}: no 'prediction' column" in line
    assert "columns found: Question, Answer, model_output;" in line  # file order, the BOM not in the first name


@pytest.mark.parametrize("protocol", ["spatial", "3drad"])
def test_no_answer_column_is_an_input_error(tmp_path: Path, capsys: pytest.CaptureFixture[str], protocol: str) -> None:
    """Under the spatial protocol this gave count 0 and all metrics 0 with exit 0."""
    bad = jsonl(tmp_path / "preds.jsonl", {"question": "Where?", "prediction": "left", "image_path": "a.npy"})
    line = refused(capsys, tmp_path / "eval.json", str(bad), protocol=protocol)
    assert f"{bad}: no 'answer' column (columns found: question, prediction, image_path;" in line


def test_no_question_column(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = jsonl(tmp_path / "preds.jsonl", {"answer": "left", "prediction": "left"}, {"answer": "x", "output": "y"})
    line = refused(capsys, tmp_path / "eval.json", str(bad), protocol="spatial")
    assert f"{bad}: no 'question' column (columns found: answer, prediction, output;" in line


# --------------------------------------------------------------------------- unreadable files


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf\r\n", b"\n\n  \n"], ids=["0-bytes", "bom-crlf", "blank-lines"])
@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_empty_file(tmp_path: Path, capsys: pytest.CaptureFixture[str], content: bytes, suffix: str) -> None:
    bad = tmp_path / f"empty{suffix}"
    bad.write_bytes(content)
    line = refused(capsys, tmp_path / "eval.json", str(bad))
    assert f"{bad}: empty file" in line and "column" not in line


def test_header_only_csv(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = excel_csv(tmp_path / "header.csv")
    line = refused(capsys, tmp_path / "eval.json", str(bad))
    assert f"{bad}: header only, no rows (columns: Task, Subtask," in line


def test_header_only_parquet(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "none.parquet"
    pd.DataFrame({"question": [], "answer": [], "prediction": []}, dtype=str).to_parquet(bad)
    line = refused(capsys, tmp_path / "eval.json", str(bad), protocol="spatial")
    assert f"{bad}: no rows (columns: question, answer, prediction)" in line


def test_latin1_bytes_mid_file_name_line_and_byte_offset(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "latin1.csv"
    text = "\r\n".join(
        (HEADER, GOOD_ROWS[0], "1,1,Anatomy,Open,Where is the nodule?,Left lung apex,-,Pleural thickening")
    )
    data = text.encode("utf-8").replace(b"Pleural", "Pl\u00e9ural".encode("latin-1"))
    bad.write_bytes(b"\xef\xbb\xbf" + data + b"\r\n")
    offset = (b"\xef\xbb\xbf" + data).index(b"\xe9")
    line = refused(capsys, tmp_path / "eval.json", str(bad))
    assert f"{bad}: line 3: not UTF-8 (byte 0xe9 at byte offset {offset}, column 58)" in line
    # the same in a JSONL file, after a blank line
    bad_jsonl = tmp_path / "latin1.jsonl"
    good = json.dumps({"question": "Q", "answer": "A", "prediction": "P"}).encode()
    bad_jsonl.write_bytes(good + b"\n\n" + good.replace(b'"P"', b'"caf\xe9"') + b"\n")
    line = refused(capsys, tmp_path / "eval.json", str(bad_jsonl), protocol="spatial")
    offset = bad_jsonl.read_bytes().index(b"\xe9")
    assert f"{bad_jsonl}: line 3: not UTF-8 (byte 0xe9 at byte offset {offset}, column {offset - len(good) - 1}" in line


def test_truncated_last_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    csv = excel_csv(tmp_path / "cut.csv", *GOOD_ROWS)
    csv.write_bytes(csv.read_bytes() + b"4,2,Emphysema,Close,Is emphysema pres")  # the export died mid-row
    line = refused(capsys, tmp_path / "eval.json", str(csv))
    assert f"{csv}: line 4: 5 fields where the header has 8 (cut off?)" in line
    quoted = tmp_path / "cut_quoted.csv"
    quoted.write_text(HEADER + "\n" + GOOD_ROWS[0] + '\n4,2,Emphysema,Close,"Is emphysema', encoding="utf-8")
    assert f"{quoted}: line 3: not valid CSV" in refused(capsys, tmp_path / "eval.json", str(quoted))
    record = {"question": "Q", "answer": "A", "prediction": "P"}
    cut = tmp_path / "cut.jsonl"
    cut.write_text(json.dumps(record) + "\n\n" + json.dumps(record)[:20], encoding="utf-8")
    assert f"{cut}: line 3: not JSON" in refused(capsys, tmp_path / "eval.json", str(cut), protocol="spatial")


# --------------------------------------------------------------------------- bad values


def test_task_that_is_not_1_to_6(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """ "four" was grouped as task 0."""
    bad = excel_csv(tmp_path / "tasks.csv", *GOOD_ROWS, "four,1,Atelectasis,Close,Is it?,No,B,B. No")
    assert f"{bad}: line 4: Task 'four' is not one of 1-6" in refused(capsys, tmp_path / "eval.json", str(bad))
    rows = [{"Task": t, "question": "Q", "answer": "A", "prediction": "P"} for t in (1, 7, 0)]
    bad_jsonl = jsonl(tmp_path / "tasks.jsonl", *rows, blank_after=1)
    line = refused(capsys, tmp_path / "eval.json", str(bad_jsonl))
    assert line.endswith(f"{bad_jsonl}: line 3: Task '7' is not one of 1-6 (2 rows like this)")


def test_empty_reference_names_file_and_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = [{"question": "Q", "answer": "A", "prediction": "P"}, {"question": "Q", "answer": "  ", "prediction": ""}]
    bad = jsonl(tmp_path / "preds.jsonl", *records, blank_after=1)  # the blank line still counts as a line
    for protocol in ("spatial", "3drad"):
        assert f"{bad}: line 3: empty answer" in refused(capsys, tmp_path / "e.json", str(bad), protocol=protocol)
    bad_csv = excel_csv(tmp_path / "preds.csv", GOOD_ROWS[0], "1,1,Anatomy,Open,Where?,,-,")
    assert f"{bad_csv}: line 3: empty answer" in refused(capsys, tmp_path / "e.json", str(bad_csv))


def test_question_type_and_answer_letter(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = excel_csv(tmp_path / "types.csv", GOOD_ROWS[0], "4,1,Atelectasis,MCQ,Is it?,No,B,B")
    assert f"{bad}: line 3: QuestionType 'MCQ' is neither Open nor Close" in refused(
        capsys, tmp_path / "e.json", str(bad)
    )
    bad = excel_csv(tmp_path / "letters.csv", GOOD_ROWS[1], "4,1,Atelectasis,Close,Is it?,No,-,B")
    line = refused(capsys, tmp_path / "e.json", str(bad))
    assert f"{bad}: line 3: a Close question whose AnswerChoice '-' is not A-D" in line


def test_a_bad_last_file_stops_before_anything_is_scored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    good = excel_csv(tmp_path / "good.csv", *GOOD_ROWS)
    bad = excel_csv(tmp_path / "bad.csv", "seven,1,X,Open,Q,A,-,P")
    out = tmp_path / "eval.json"
    out.write_text("{}\n")  # an earlier report stays as it was
    assert f"{bad}: line 2: Task 'seven'" in refused(capsys, out, str(good), str(bad))


# --------------------------------------------------------------------------- --out and paths


def test_out_equal_to_an_input_does_not_overwrite_it(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preds = jsonl(tmp_path / "preds.jsonl", {"question": "Q", "answer": "A", "prediction": "P"})
    before = preds.read_bytes()
    other_spelling = tmp_path / "sub" / ".." / "preds.jsonl"
    (tmp_path / "sub").mkdir()
    line = refused(capsys, other_spelling, str(preds), protocol="spatial")
    assert f"--out {other_spelling} is the predictions file {preds}" in line
    assert preds.read_bytes() == before


def test_out_an_existing_directory(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preds = jsonl(tmp_path / "preds.jsonl", {"question": "Q", "answer": "A", "prediction": "P"})
    folder = tmp_path / "reports"
    folder.mkdir()
    line = refused(capsys, folder, str(preds), protocol="spatial")
    assert f"--out {folder} is an existing folder" in line and list(folder.iterdir()) == []
    beneath_a_file = preds / "eval.json"
    assert "is not a folder" in refused(capsys, beneath_a_file, str(preds), protocol="spatial")


def test_one_file_given_twice(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preds = jsonl(tmp_path / "preds.jsonl", {"question": "Q", "answer": "A", "prediction": "P"})
    line = refused(capsys, tmp_path / "e.json", str(preds), str(tmp_path / "." / "preds.jsonl"), protocol="spatial")
    assert "given twice" in line


def test_two_files_with_one_base_name_are_both_reported(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    for folder, prediction in (("a", "right lower lobe"), ("b", "left upper lobe")):
        (tmp_path / folder).mkdir()
        jsonl(
            tmp_path / folder / "x.jsonl",
            {"question": "Where?", "answer": "right lower lobe", "prediction": prediction},
        )
    code = main(
        [
            "evaluate",
            "--predictions",
            "a/x.jsonl",
            "b/x.jsonl",
            "--protocol",
            "3drad",
            "--metrics",
            "bleu",
            "--out",
            "eval.json",
        ]
    )
    assert code == 0
    results = json.loads((tmp_path / "eval.json").read_text())["results"]
    assert list(results) == ["a/x.jsonl", "b/x.jsonl"]  # keyed by the paths as given
    a, b = (results[key]["tasks"]["0"]["macro"] for key in ("a/x.jsonl", "b/x.jsonl"))
    assert (a["bleu"], a["exact_match"]) == (1.0, 1.0)
    assert (b["bleu"], b["exact_match"]) == (pytest.approx(1 / 3), 0.0)  # "lobe" of three words
    printed = capsys.readouterr().out
    assert "a/x.jsonl: 1 rows\n" in printed and "b/x.jsonl: 1 rows\n" in printed


# --------------------------------------------------------------------------- the strict figures


def test_strict_figures_beside_the_reproduced_quirks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    preds = excel_csv(
        tmp_path / "model.csv",
        "4,1,Atelectasis,Close,Is atelectasis present?,No,B,B. No",
        "4,1,Atelectasis,Close,Is atelectasis present?,No,B,A. Yes B. No",  # names both letters
        "4,1,Atelectasis,Close,Is atelectasis present?,Yes,A,The answer is A.",
        "4,1,Atelectasis,Close,Is atelectasis present?,Yes,A,",  # empty: wrong under both rules
        "1,1,Anatomy,Open,Where is the nodule?,right lower lobe,-,right lower lobe",
        "1,1,Anatomy,Open,Where is the nodule?,left upper lobe,-,",  # empty: skipped by 3D-RAD's script
    )
    out = tmp_path / "eval.json"
    code = main(
        ["evaluate", "--predictions", str(preds), "--protocol", "3drad", "--metrics", "bleu,rouge", "--out", str(out)]
    )
    assert code == 0
    tasks = json.loads(out.read_text())["results"][str(preds)]["tasks"]
    closed, open_ = tasks["4"]["macro"], tasks["1"]["macro"]
    assert closed["accuracy"] == 0.75 and closed["accuracy_strict"] == 0.5  # "A. Yes B. No" counted by the quirk
    assert open_["bleu"] == 1.0 and open_["bleu_strict"] == 0.5  # the empty prediction: skipped vs scored 0
    assert open_["rouge1_f"] == 1.0 and open_["rouge1_f_strict"] == 0.5
    assert open_["exact_match"] == 0.5 and "meteor_strict" not in open_  # meteor not asked for
    assert tasks["1"]["subtasks"]["Anatomy"]["scored"] == 1
    printed = capsys.readouterr().out
    assert "task 4 (Close): n=4, accuracy 0.75 (strict 0.5), parsed_accuracy 0.5" in printed
    assert "task 1 (Open): n=2, 1 empty predictions skipped by the protocol, bleu 1 (strict 0.5)" in printed


def test_empty_prediction_is_never_an_exact_match() -> None:
    frame = pd.DataFrame(
        {
            "model": "m",
            "Task": 1,
            "Subtask": 1,
            "QuestionType": "Open",
            "Question": "Q",
            "Answer": ["", "?", "left", "Left."],
            "prediction": ["", "...", "", "left"],
        }
    )
    scores = metrics.sample_scores(frame, metrics.EngineOptions(bertscore=False))
    assert scores["exact_match"].tolist() == [0.0, 0.0, 0.0, 1.0]  # empty vs empty gave 1.0
    assert scores["bleu"].isna().tolist() == [True, False, True, False]  # the protocol skips empties ...
    assert scores.loc[[0, 2], "bleu_strict"].tolist() == [0.0, 0.0]  # ... the strict figure scores them 0


# --------------------------------------------------------------------------- good exports still read


def test_excel_csv_reads_like_a_plain_one(tmp_path: Path) -> None:
    multi_line = '1,1,Anatomy,Open,"Where is\r\nthe nodule, exactly?",Right lower lobe.,-,right'
    excel = excel_csv(tmp_path / "excel.csv", *GOOD_ROWS, multi_line, GOOD_ROWS[0])
    plain = tmp_path / "plain.csv"
    plain.write_text("\n".join((HEADER, *GOOD_ROWS, multi_line, GOOD_ROWS[0])) + "\n", encoding="utf-8")
    a, b = metrics.load_predictions(excel, "3drad", model="m"), metrics.load_predictions(plain, "3drad", model="m")
    assert a.places == ["line 2", "line 3", "line 4", "line 6"]  # physical lines: the quoted break counts
    pd.testing.assert_frame_equal(a.rows, b.rows)
    assert a.rows["Task"].tolist() == [4, 1, 1, 4] and a.rows["Question"][2] == "Where is\r\nthe nodule, exactly?"


def test_refusal_from_a_real_process(tmp_path: Path) -> None:
    """The installed entry point: exit code 2, one line, no traceback."""
    bad = tmp_path / "latin1.jsonl"
    bad.write_bytes(b'{"question": "Q", "answer": "caf\xe9", "prediction": "P"}\n')
    out = tmp_path / "eval.json"
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    args = ["evaluate", "--predictions", str(bad), "--protocol", "spatial", "--metrics", "bleu", "--out", str(out)]
    done = subprocess.run(
        [sys.executable, "-m", "rad3d.cli", *args], capture_output=True, text=True, cwd=REPO, env=env, timeout=120
    )
    assert done.returncode == 2, done.stderr
    assert done.stderr.splitlines() == [
        f"rad3d evaluate: {bad}: line 1: not UTF-8 (byte 0xe9 at byte offset 32, column 33); save the file as UTF-8"
    ]
    assert done.stdout == "" and not out.exists()


def test_a_spatial_call_loads_no_heavy_library(tmp_path: Path) -> None:
    """The per-call cost: the spatial path reads, checks and scores without pandas, NLTK, torch or scipy."""
    predictions = tmp_path / "p.jsonl"
    predictions.write_text('{"question": "Which side?", "answer": "left lung", "prediction": "left"}\n')
    code = (
        "import sys; from rad3d.cli import main; "
        f"code = main(['evaluate', '--predictions', {str(predictions)!r}, '--protocol', 'spatial', "
        f"'--metrics', 'bleu,rouge,meteor', '--workers', '1', '--out', {str(tmp_path / 'r.json')!r}]); "
        "heavy = sorted(m for m in ('pandas', 'nltk', 'torch', 'scipy', 'sacrebleu', 'rouge_score', 'dagster') "
        "if m in sys.modules); print('HEAVY', heavy); sys.exit(code)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stdout, result.stdout

"""The release holds exactly what the build says; the rest is moved aside (docs/release-layout.md)."""

from __future__ import annotations

import warnings
from pathlib import Path

import pandas as pd
import pytest

from rad3d.cli import main
from rad3d_pipeline.open_qa.qa_rows import RELEASE_COLUMNS
from rad3d_pipeline.release.export import (
    STALE_FOLDER,
    current_rows,
    frame_csv_bytes,
    release_rows,
    verify_release,
    write_release,
)

warnings.filterwarnings("ignore", module="dagster")


def release_files(out: Path) -> dict[str, bytes]:
    root = out / "3DRAD"
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def stale_files(out: Path) -> list[str]:
    """Stale files by their release path (the stamp folder dropped)."""
    root = out / STALE_FOLDER
    return sorted("/".join(p.relative_to(root).parts[1:]) for p in root.rglob("*") if p.is_file())


def qa_row(split: str, task: int, subtask: str, volume: str, answer: str = "Yes") -> dict[str, object]:
    closed = task >= 4
    return {
        "Task": task,
        "Subtask": 1,
        "VolumeName": volume,
        "Question": f"Is there {subtask}?",
        "Answer": answer,
        "QuestionType": "Close" if closed else "Open",
        "AnswerChoice": ("A" if answer == "Yes" else "B") if closed else "-",
        "Choice A": "Yes" if closed else "-",
        "Choice B": "No" if closed else "-",
        "Choice C": "-",
        "Choice D": "-",
        "split": split,
        "patient_id": volume.rsplit("_", 2)[0],
        "subtask_name": subtask,
        "label": subtask,
    }


def qa_table(*rows: dict[str, object]) -> pd.DataFrame:
    return pd.DataFrame(list(rows))


# ---------------------------------------------------------------- the core rules


def test_a_subtask_no_longer_built_and_a_stray_file_are_moved_aside(tmp_path: Path) -> None:
    first = qa_table(
        qa_row("valid", 4, "Emphysema", "valid_1_a_1.nii.gz"),
        qa_row("valid", 4, "Atelectasis", "valid_1_a_1.nii.gz"),
    )
    write_release(release_rows(first), tmp_path)
    (tmp_path / "3DRAD" / "test" / "notes.txt").write_text("mine")
    (tmp_path / "3DRAD" / ".test.tmp-deadbeef").mkdir()  # left by a killed export
    second = qa_table(qa_row("valid", 4, "Emphysema", "valid_1_a_1.nii.gz", "No"))
    summary = write_release(release_rows(second), tmp_path)
    assert sorted(release_files(tmp_path)) == ["test/Task4_Existence_Detection/Emphysema.csv"]
    assert stale_files(tmp_path) == ["test/Task4_Existence_Detection/Atelectasis.csv", "test/notes.txt"]
    assert sorted(summary.stale) == stale_files(tmp_path)
    assert not (tmp_path / "3DRAD" / ".test.tmp-deadbeef").exists()
    assert summary.files == {"test/Task4_Existence_Detection/Emphysema.csv": 1}
    assert verify_release(summary) == []


def test_a_split_outside_the_build_is_moved_aside_with_its_fractions(tmp_path: Path) -> None:
    both = qa_table(
        qa_row("valid", 4, "Emphysema", "valid_1_a_1.nii.gz"),
        qa_row("train", 4, "Emphysema", "train_2_a_1.nii.gz"),
    )
    write_release(release_rows(both), tmp_path, splits=("valid", "train"))
    assert {f.split("/")[0] for f in release_files(tmp_path)} == {"test", "train", "train_1pct", "train_10pct"}
    rows, dropped = current_rows(both, ("valid",))
    assert dropped == {"train": 1} and rows["split"].tolist() == ["valid"]
    summary = write_release(release_rows(rows), tmp_path, splits=("valid",))
    assert sorted(release_files(tmp_path)) == ["test/Task4_Existence_Detection/Emphysema.csv"]
    assert stale_files(tmp_path) == [
        f"{folder}/Task4_Existence_Detection/Emphysema.csv" for folder in ("train", "train_10pct", "train_1pct")
    ]
    assert summary.rows == 1 and verify_release(summary) == []
    with pytest.raises(ValueError, match="outside the build"):
        write_release(release_rows(both), tmp_path, splits=("valid",))


def test_verify_release_names_extra_files_and_wrong_letters(tmp_path: Path) -> None:
    summary = write_release(release_rows(qa_table(qa_row("valid", 4, "Emphysema", "valid_1_a_1.nii.gz"))), tmp_path)
    assert verify_release(summary) == []
    path = tmp_path / "3DRAD" / "test" / "Task4_Existence_Detection" / "Emphysema.csv"
    path.write_text(path.read_text().replace(",Yes,Close,A,", ",Yes,Close,B,"))
    (tmp_path / "3DRAD" / "test" / "extra.csv").write_text("x\n")
    problems = verify_release(summary)
    assert any("did not write" in p for p in problems)
    assert any("Emphysema.csv: 1 rows whose AnswerChoice is not the Answer" in p for p in problems)


@pytest.mark.parametrize(
    "frame",
    [
        pd.DataFrame({"a": [1, 22], "b": ['say "hi"', "x,y"], "c": ["line\nbreak", ""]}),
        pd.DataFrame({"a": ["cr\r", "é ü"], "b": [True, False], "c": pd.Series(["p", "q"], dtype="category")}),
        pd.DataFrame({"a": [1.5, 2.0], "b": ["x", "y"]}),  # floats: pandas writes it
        pd.DataFrame({"a": ["x", None], "b": ["y", "z"]}),  # nulls: pandas writes it
        pd.DataFrame({"a": pd.Series([], dtype=object), "b": pd.Series([], dtype="int64")}),
    ],
)
def test_fast_csv_equals_pandas(frame: pd.DataFrame) -> None:
    assert frame_csv_bytes(frame) == frame.to_csv(index=False).encode("utf-8")


# ---------------------------------------------------------------- through the command line


def sample(tmp_path: Path) -> Path:
    ctrate = tmp_path / "ctrate"
    assert main(["sample-data", "--out", str(ctrate), "--patients", "12", "--volumes", "none"]) == 0
    return ctrate


def build(ctrate: Path, out: Path, *extra: str) -> None:
    assert main(["build", "--ctrate-root", str(ctrate), "--out", str(out), "--llm", "rules", *extra]) == 0


def test_a_narrower_split_moves_the_other_split_aside(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ctrate, out = sample(tmp_path), tmp_path / "out"
    build(ctrate, out, "--tasks", "4,5,6")
    full = release_files(out)
    assert {f.split("/")[0] for f in full} == {"test", "train", "train_1pct", "train_10pct"}
    capsys.readouterr()
    build(ctrate, out, "--tasks", "4,5,6", "--split", "valid")
    printed = capsys.readouterr().out
    now = release_files(out)
    assert {f.split("/")[0] for f in now} == {"test"}
    assert {f: b for f, b in full.items() if f.startswith("test/")} == now  # same rows, same bytes
    assert stale_files(out) == sorted(f for f in full if not f.startswith("test/"))
    export = pd.read_parquet(out / "tables" / "release_export" / "all.parquet")
    assert set(export["release_split"]) == {"test"}
    assert sum(1 for f in now if f.endswith(".csv")) == export.groupby(["Task", "subtask_name"]).ngroups
    assert "train Task" not in printed and "test Task 4" in printed
    assert list(pd.read_csv(out / "3DRAD" / "test" / "Task4_Existence_Detection" / "Emphysema.csv").columns) == list(
        RELEASE_COLUMNS
    )


@pytest.mark.slow
def test_tasks_4_to_6_over_a_full_build_keep_tasks_1_to_3(tmp_path: Path) -> None:
    ctrate, out = sample(tmp_path), tmp_path / "out"
    select = "group:ctrate or group:sentences or group:open_qa or group:closed_qa or key:release_export"
    build(ctrate, out, "--select", select)
    full = release_files(out)
    open_files = {f: b for f, b in full.items() if f.split("/")[0] in ("test", "train") and "/Task4" not in f}
    open_files = {f: b for f, b in open_files.items() if "/Task5" not in f and "/Task6" not in f}
    assert any("/Task1_" in f for f in open_files) and any(f.startswith("train/Task3_") for f in open_files)
    # Same splits, other seed: Tasks 4-6 are rewritten, Tasks 1-3 kept from their tables byte for byte.
    build(ctrate, out, "--tasks", "4,5,6", "--seed", "1")
    now = release_files(out)
    assert {f: now[f] for f in open_files} == open_files
    task4 = "test/Task4_Existence_Detection/Emphysema.csv"
    assert now[task4] != full[task4]
    main_folders = ("test", "train")
    assert {f for f in now if f.split("/")[0] in main_folders} == {f for f in full if f.split("/")[0] in main_folders}
    # The fractions are a seeded sample: another seed samples other rows, so some subtask files come or go.
    assert all(f.split("/")[0].endswith("pct") for f in stale_files(out))
    # A narrower split: the train Tasks 1-3 files go aside with the rest of train; test keeps Tasks 1-3.
    build(ctrate, out, "--tasks", "4,5,6", "--split", "valid", "--seed", "1")
    after = release_files(out)
    assert {f: after[f] for f in open_files if f.startswith("test/")} == {
        f: b for f, b in open_files.items() if f.startswith("test/")
    }
    assert not any(f.startswith("train") for f in after)
    assert {f for f in open_files if f.startswith("train/")} <= set(stale_files(out))

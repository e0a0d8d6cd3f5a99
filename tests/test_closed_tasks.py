"""Tasks 4-6 on hand-made label tables, and row for row against the public release."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from rad3d_pipeline.closed_qa.existence import build_task4, select_task4_volumes
from rad3d_pipeline.closed_qa.question_templates import TEMPORAL_CHOICES
from rad3d_pipeline.closed_qa.temporal import (
    build_sequences,
    build_task5,
    build_task6,
    check_temporal_rule,
    format_history,
    temporal_class,
)
from rad3d_pipeline.ingest.ctrate import CtrateLayout, read_labels
from rad3d_pipeline.ingest.labels import CTRATE_LABELS, TASK4_SUBTASK, TEMPORAL_LABELS
from rad3d_pipeline.ingest.patients import build_patients, shard_key, shard_of
from rad3d_pipeline.release.export import read_release, release_rows, write_release


def labels_table(rows: dict[str, dict[str, int]]) -> pd.DataFrame:
    records = []
    for name, values in rows.items():
        split, patient, scan, recon = name.removesuffix(".nii.gz").split("_")
        record: dict[str, object] = {
            "VolumeName": name,
            "split": split,
            "patient_id": f"{split}_{patient}",
            "patient": int(patient),
            "scan": scan,
            "recon": int(recon),
        }
        record.update({label: values.get(label, 0) for label in CTRATE_LABELS})
        records.append(record)
    return pd.DataFrame(records)


@pytest.mark.parametrize(
    ("history", "current", "letter"),
    [([1], 1, "A"), ([0, 1], 1, "A"), ([1, 0], 0, "B"), ([0, 0], 1, "C"), ([0], 0, "D"), ([0, 0, 0], 0, "D")],
)
def test_temporal_rule(history: list[int], current: int, letter: str) -> None:
    assert temporal_class(history, current) == letter


def test_shards_are_stable_and_in_range() -> None:
    assert shard_of("valid_1006", 16) == shard_of("valid_1006", 16)
    assert 0 <= shard_of("train_7", 5) < 5
    assert shard_key("valid_1006", 16) in {f"{i:02d}" for i in range(16)}
    counts = pd.Series([shard_of(f"train_{i}", 16) for i in range(4000)]).value_counts()
    assert counts.min() > 150  # roughly uniform


def test_task4_selects_first_scan_first_recon_and_asks_18() -> None:
    labels = labels_table(
        {
            "valid_7_b_1.nii.gz": {"Cardiomegaly": 1},
            "valid_7_a_2.nii.gz": {"Emphysema": 1},
            "valid_7_a_1.nii.gz": {"Atelectasis": 1},
            "valid_8_a_1.nii.gz": {},
        }
    )
    assert select_task4_volumes(labels)["VolumeName"].tolist() == ["valid_7_a_1.nii.gz", "valid_8_a_1.nii.gz"]
    qa = build_task4(labels, seed=3)
    assert len(qa) == 36
    row = qa[(qa.VolumeName == "valid_7_a_1.nii.gz") & (qa.label == "Atelectasis")].iloc[0]
    assert (row.Answer, row.AnswerChoice, row.Subtask) == ("Yes", "A", TASK4_SUBTASK["Atelectasis"])
    assert "atelectasis" in row.Question
    # 18 different phrasings per volume, deterministic per seed.
    assert qa[qa.VolumeName == "valid_8_a_1.nii.gz"]["Question"].str.replace(r"\w+ ?", "", regex=True).size == 18
    assert build_task4(labels, seed=3).equals(qa)
    assert not build_task4(labels, seed=4)["Question"].equals(qa["Question"])


def test_temporal_sequences_and_tasks_5_6() -> None:
    labels = labels_table(
        {
            "valid_9_a_1.nii.gz": {"Cardiomegaly": 1, "Emphysema": 0, "Lung nodule": 1},
            "valid_9_b_1.nii.gz": {"Cardiomegaly": 0, "Emphysema": 0, "Lung nodule": 0},
            "valid_9_b_2.nii.gz": {"Cardiomegaly": 1},  # second recon: ignored
            "valid_9_c_1.nii.gz": {"Cardiomegaly": 1, "Emphysema": 1, "Lung nodule": 0},
            "valid_10_a_1.nii.gz": {"Cardiomegaly": 1},  # single scan: no temporal rows
        }
    )
    seq = build_sequences(labels)
    assert len(seq) == len(TEMPORAL_LABELS) and set(seq.VolumeName) == {"valid_9_c_1.nii.gz"}
    by_label = seq.set_index("label")
    assert by_label.at["Cardiomegaly", "history"] == [1, 0]
    assert by_label.at["Cardiomegaly", "temporal_class"] == "A"
    assert by_label.at["Emphysema", "temporal_class"] == "C"
    assert by_label.at["Lung nodule", "temporal_class"] == "B"
    assert by_label.at["Atelectasis", "temporal_class"] == "D"
    t5, t6 = build_task5(seq), build_task6(seq)
    assert (t5.Subtask == 2).all() and (t5.subtask_name == "c").all()
    assert t6.Answer.tolist() == [TEMPORAL_CHOICES[x] for x in seq.temporal_class]
    q = t6[t6.label == "Cardiomegaly"].Question.iloc[0]
    assert "cardiomegaly" in q and "[1, 0]" in q and "(Note: 0 indicates absence, and 1 indicates presence.)" in q
    assert check_temporal_rule(pd.concat([t5, t6]), seq) == []
    broken = t6.copy()
    broken.loc[broken.label == "Cardiomegaly", "AnswerChoice"] = "D"
    assert check_temporal_rule(broken, seq) == ["valid_9_c_1.nii.gz Cardiomegaly: answer D, rule gives A"]
    assert format_history([0, 1]) == "[0, 1]"


def test_patients_table() -> None:
    labels = labels_table({"valid_9_a_1.nii.gz": {}, "valid_9_a_2.nii.gz": {}, "valid_9_b_1.nii.gz": {}})
    table = build_patients(labels, 16)
    assert table.loc[0, "scans"] == ["a", "b"] and table.loc[0, "volumes_per_scan"] == [2, 1]
    assert table.loc[0, "n_scans"] == 2


def _conformance_key(frame: pd.DataFrame, task: int) -> list[tuple[object, ...]]:
    keys = []
    by_length = sorted(CTRATE_LABELS, key=len, reverse=True)
    for row in frame.itertuples(index=False):
        question = row.Question.lower()
        label = row.subtask_name if task == 4 else next(lb for lb in by_length if lb.lower() in question)
        history = re.search(r"\[[01, ]*\]", row.Question).group(0) if task == 6 else ""  # type: ignore[union-attr]
        keys.append((row.VolumeName, label, row.Answer, row.AnswerChoice, row.Subtask, row.subtask_name, history))
    return sorted(keys)


def test_conformance_with_the_public_release(fixtures: Path, tmp_path: Path) -> None:
    """Tasks 4-6 built from ctrate_mini equal the 3D-RAD release row for row (question wording aside)."""
    labels = read_labels(CtrateLayout.resolve(fixtures / "ctrate_mini"), "valid")
    assert labels.quarantine.empty
    seq = build_sequences(labels.table)
    qa = pd.concat([build_task4(labels.table), build_task5(seq), build_task6(seq)])
    write_release(release_rows(qa), tmp_path)
    built = read_release(tmp_path / "3DRAD" / "test")
    expected = read_release(fixtures / "3drad_release_mini" / "test")
    for task in (4, 5, 6):
        got, want = built[built.Task == task], expected[expected.Task == task]
        assert len(got) == len(want), f"task {task}"
        assert _conformance_key(got, task) == _conformance_key(want, task), f"task {task}"
    files = sorted(p.relative_to(tmp_path / "3DRAD" / "test") for p in (tmp_path / "3DRAD" / "test").rglob("*.csv"))
    want_files = sorted(
        p.relative_to(fixtures / "3drad_release_mini" / "test")
        for p in (fixtures / "3drad_release_mini" / "test").rglob("*.csv")
        if p.parts[-2].startswith(("Task4", "Task5", "Task6"))
    )
    assert files == want_files

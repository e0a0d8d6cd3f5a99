"""CT-RATE reading: layouts, VolumeName parsing, and every validation error."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rad3d_pipeline.ingest.ctrate import (
    CtrateInputError,
    CtrateLayout,
    parse_splits,
    parse_volume_name,
    read_labels,
    read_metadata,
    read_reports,
)
from rad3d_pipeline.ingest.labels import CTRATE_LABELS


def write_labels(base: Path, rows: list[list[object]], split: str = "valid", columns: list[str] | None = None) -> Path:
    path = base / "multi_abnormality_labels" / f"{split}_predicted_labels.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame(rows, columns=columns or ["VolumeName", *CTRATE_LABELS]).to_csv(path, index=False)
    return path


def label_row(name: str, value: object = 0) -> list[object]:
    return [name, *([value] * len(CTRATE_LABELS))]


def test_parse_volume_name() -> None:
    vid = parse_volume_name("valid_1006_c_2.nii.gz")
    assert (vid.split, vid.patient, vid.scan, vid.recon, vid.patient_id) == ("valid", 1006, "c", 2, "valid_1006")
    with pytest.raises(ValueError, match="malformed VolumeName"):
        parse_volume_name("valid_1006_2.nii.gz")


def test_parse_splits() -> None:
    assert parse_splits("all") == ("train", "valid")
    assert parse_splits("test") == ("valid",)
    with pytest.raises(ValueError, match="unknown split"):
        parse_splits("dev")


def test_layout_with_and_without_dataset_folder(tmp_path: Path) -> None:
    write_labels(tmp_path / "a" / "dataset", [label_row("valid_1_a_1.nii.gz")])
    write_labels(tmp_path / "b", [label_row("valid_1_a_1.nii.gz")])
    assert CtrateLayout.resolve(tmp_path / "a").base == tmp_path / "a" / "dataset"
    assert CtrateLayout.resolve(tmp_path / "b").base == tmp_path / "b"
    assert len(read_labels(CtrateLayout.resolve(tmp_path / "a"), "valid").table) == 1
    layout = CtrateLayout.resolve(tmp_path / "b")
    assert layout.volume_path("valid_12_b_2.nii.gz") == tmp_path / "b/valid/valid_12/valid_12_b/valid_12_b_2.nii.gz"


def test_missing_root_and_file_name_the_path(tmp_path: Path) -> None:
    with pytest.raises(CtrateInputError, match="root folder not found"):
        CtrateLayout.resolve(tmp_path / "nowhere")
    layout = CtrateLayout.resolve(tmp_path)
    with pytest.raises(CtrateInputError, match=r"valid_predicted_labels\.csv: file not found"):
        read_labels(layout, "valid")


def test_missing_column_names_file_and_column(tmp_path: Path) -> None:
    columns = ["VolumeName", *CTRATE_LABELS[:-1]]
    write_labels(tmp_path, [["valid_1_a_1.nii.gz", *([0] * (len(CTRATE_LABELS) - 1))]], columns=columns)
    with pytest.raises(CtrateInputError, match=r"valid_predicted_labels\.csv line 1: missing column.*Interlobular"):
        read_labels(CtrateLayout.resolve(tmp_path), "valid")


def test_bad_rows_are_quarantined_and_the_rest_flows(tmp_path: Path) -> None:
    rows = [
        label_row("valid_1_a_1.nii.gz"),
        label_row("valid_1_a.nii.gz"),  # malformed (line 3)
        label_row("valid_2_a_1.nii.gz", 2),  # not 0/1 (line 4)
        label_row("valid_1_a_1.nii.gz"),  # identical duplicate (line 5)
        label_row("train_3_a_1.nii.gz"),  # wrong split (line 6)
        label_row("valid_4_b_1.nii.gz", 1),
    ]
    path = write_labels(tmp_path, rows)
    result = read_labels(CtrateLayout.resolve(tmp_path), "valid")
    assert list(result.table["VolumeName"]) == ["valid_1_a_1.nii.gz", "valid_4_b_1.nii.gz"]
    assert result.table["Cardiomegaly"].tolist() == [0, 1]
    q = result.quarantine.sort_values("line").reset_index(drop=True)
    assert q["line"].tolist() == [3, 4, 5, 6]
    assert q["lines"].tolist() == [1, 1, 1, 1]
    assert q.at[1, "raw"] == "valid_2_a_1.nii.gz," + ",".join(["2"] * len(CTRATE_LABELS))
    assert result.counts == {"identical_duplicates_collapsed": 1}
    assert (q["source"] == str(path)).all()
    assert "malformed VolumeName" in q.at[0, "reason"]
    assert "label not 0/1" in q.at[1, "reason"] and "Medical material='2'" in q.at[1, "reason"]
    assert q.at[2, "reason"] == "identical duplicate of line 2 (collapsed)"
    assert "belongs to split train" in q.at[3, "reason"]


def test_reports_and_metadata(tmp_path: Path) -> None:
    reports = tmp_path / "radiology_text_reports" / "validation_reports.csv"
    reports.parent.mkdir(parents=True)
    pd.DataFrame(
        {
            "VolumeName": ["valid_1_a_1.nii.gz", "valid_2_a_1.nii.gz"],
            "Findings_EN": ["A 5 mm nodule.", ""],
            "Impressions_EN": ["Nodule.", ""],
        }
    ).to_csv(reports, index=False)
    layout = CtrateLayout.resolve(tmp_path)
    result = read_reports(layout, "valid")
    assert result.table["VolumeName"].tolist() == ["valid_1_a_1.nii.gz"]
    assert "neither findings nor impressions" in result.quarantine.at[0, "reason"]

    meta = tmp_path / "metadata" / "validation_metadata.csv"
    meta.parent.mkdir(parents=True)
    pd.DataFrame(
        {
            "VolumeName": ["valid_1_a_1.nii.gz", "valid_2_a_1.nii.gz"],
            "XYSpacing": ["[0.75, 0.75]", "[abc]"],
            "ZSpacing": ["1.5", "1"],
            "RescaleSlope": ["1", "1"],
            "RescaleIntercept": ["-1024", "-1024"],
        }
    ).to_csv(meta, index=False)
    loaded = read_metadata(layout, "valid")
    assert loaded.table["XYSpacing"].tolist() == [0.75]
    assert loaded.table["RescaleIntercept"].tolist() == [-1024.0]
    assert "unreadable XYSpacing" in loaded.quarantine.at[0, "reason"]

"""Report sentences: segmentation, sections, measurements, negation, side; fixture conformance."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd

from rad3d_pipeline.ctrate import CtrateLayout, read_reports
from rad3d_pipeline.measurements import find_measurements
from rad3d_pipeline.release import read_release
from rad3d_pipeline.sentences import SENTENCE_COLUMNS, SentenceSplitter, report_sentences

SPLITTER = SentenceSplitter()


def one_report(findings: str, impressions: str = "") -> pd.DataFrame:
    frame = pd.DataFrame(
        {"VolumeName": ["valid_1_a_1.nii.gz"], "Findings_EN": [findings], "Impressions_EN": [impressions]}
    )
    return report_sentences(frame, SPLITTER)


def test_split_keeps_decimals_and_sections() -> None:
    table = one_report("A 3.3 cm bulla is seen, e.g. in the apex. Trachea is open.", "Bulla. No effusion.")
    assert list(table.columns) == list(SENTENCE_COLUMNS)
    findings = table[table.section == "findings"]
    assert findings["text"].tolist() == ["A 3.3 cm bulla is seen, e.g. in the apex.", "Trachea is open."]
    assert findings["sentence_index"].tolist() == [0, 1]
    assert findings.iloc[0]["measurements_mm"] == [33.0] and bool(findings.iloc[0]["has_measurement"])
    assert table[table.section == "impressions"]["text"].tolist() == ["Bulla.", "No effusion."]
    assert SPLITTER.splitter_name in {"spacy:blank_en+rules", "scispacy:en_core_sci_sm"}


def test_negation_and_side() -> None:
    table = one_report(
        "No pleural effusion was detected. Nodule in the right upper lobe. Effusion on the left. "
        "Opacities in both lungs. Atelectasis on the right and left. Pericardial effusion was not observed."
    )
    assert table["negated"].tolist() == [True, False, False, False, False, True]
    assert table["side"].tolist() == ["", "right", "left", "bilateral", "bilateral", ""]


def test_empty_and_missing_sections() -> None:
    assert list(report_sentences(pd.DataFrame(), SPLITTER).columns) == list(SENTENCE_COLUMNS)
    table = report_sentences(
        pd.DataFrame({"VolumeName": ["v"], "Findings_EN": [None], "Impressions_EN": ["One."]}), SPLITTER
    )
    assert table["section"].tolist() == ["impressions"]


def test_released_task3_answers_lie_in_measurement_sentences(fixtures: Path) -> None:
    """Every number answering a released Task 3 question is in a sentence flagged as carrying a measurement."""
    reports = read_reports(CtrateLayout.resolve(fixtures / "ctrate_mini"), "valid").table
    sentences = report_sentences(reports, SPLITTER)
    # Both reconstructions of a scan carry the same report; the fixture holds one of them.
    sentences["scan"] = sentences["VolumeName"].str.replace(r"_\d+\.nii\.gz$", "", regex=True)
    pool: dict[str, set[float]] = {}
    for scan, values in zip(sentences["scan"], sentences["measurements_mm"], strict=True):
        pool.setdefault(scan, set()).update(values)
    released = read_release(fixtures / "3drad_release_mini" / "test")
    task3 = released[released.Task == 3]
    misses = []
    for volume, answer in zip(task3["VolumeName"], task3["Answer"], strict=True):
        scan = re.sub(r"_\d+\.nii\.gz$", "", volume.replace("test_", "valid_", 1))
        values = [v for m in find_measurements(answer) for v in m.values_mm]
        if not values or not all(any(abs(v - p) < 1e-6 for p in pool.get(scan, ())) for v in values):
            misses.append((volume, answer))
    coverage = 1 - len(misses) / len(task3)
    assert len(task3) > 100
    assert coverage >= 0.995, f"coverage {coverage:.4f}; misses: {misses}"

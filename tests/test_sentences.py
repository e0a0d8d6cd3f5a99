"""Report sentences: segmentation, sections, measurements, negation, side; fixture conformance."""

from __future__ import annotations

import re
from pathlib import Path

import pandas as pd
import pytest

from rad3d_pipeline.ingest.ctrate import CtrateLayout, read_reports
from rad3d_pipeline.open_qa.tasks_open import numbers_in
from rad3d_pipeline.release.export import read_release
from rad3d_pipeline.sentences.measurements import find_measurements
from rad3d_pipeline.sentences.segmentation import SENTENCE_COLUMNS, SentenceSplitter, report_sentences

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


def test_a_unit_dot_before_a_lower_case_word_ends_no_sentence() -> None:
    # as in CT-RATE: "... the largest of which is measured up to 32 mm. evaluated for metastases."
    table = one_report(
        "Lesions in the liver, the largest up to 32 mm. evaluated for metastases. A 5 mm. Trachea is open."
    )
    assert table["text"].tolist() == [
        "Lesions in the liver, the largest up to 32 mm. evaluated for metastases.",
        "A 5 mm.",
        "Trachea is open.",
    ]
    assert table["measurements_mm"].map(list).tolist() == [[32.0], [5.0], []]


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


def _scan(volume: str) -> str:
    """Both reconstructions of a scan carry the same report; the fixture holds one of them."""
    return re.sub(r"_\d+\.nii\.gz$", "", volume.replace("test_", "valid_", 1))


def _located(answers: list[tuple[str, str]], sentences: pd.DataFrame) -> tuple[int, list[tuple[str, str]]]:
    """(answers whose numbers all occur in one sentence of their report, those of them in no flagged sentence)."""
    by_scan = {scan: group for scan, group in sentences.groupby(sentences["VolumeName"].map(_scan))}
    found, misses = 0, []
    for volume, answer in answers:
        group = by_scan.get(_scan(volume))
        wanted = set(numbers_in(answer))
        if group is None or not wanted:
            continue
        holding = [flag for text, flag in zip(group["text"], group["has_measurement"], strict=True)
                   if wanted <= set(numbers_in(text))]  # fmt: skip
        if holding:
            found += 1
            if not any(holding):
                misses.append((volume, answer))
    return found, misses


def test_released_task3_answers_lie_in_flagged_sentences(fixtures: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Every released Task 3 answer whose numbers occur in its report lies in a flagged sentence of that report."""
    reports = read_reports(CtrateLayout.resolve(fixtures / "ctrate_mini"), "valid").table
    sentences = report_sentences(reports, SPLITTER)
    released = read_release(fixtures / "3drad_release_mini" / "test")
    task3 = released[released.Task == 3]
    answers = list(zip(task3["VolumeName"], task3["Answer"], strict=True))
    found, misses = _located(answers, sentences)
    share = float(sentences["has_measurement"].mean())
    with_digit = sentences["text"].str.contains(r"\d")
    digit_share = float(sentences.loc[with_digit, "has_measurement"].mean())
    with capsys.disabled():
        print(
            f"\n[measurement recall] fixture: {found - len(misses)}/{found} released Task 3 answers found in their "
            f"report lie in a flagged sentence ({len(task3)} answers); flagged sentences "
            f"{int(sentences['has_measurement'].sum())}/{len(sentences)} = {share:.1%} "
            f"(of the {int(with_digit.sum())} sentences with a digit: {digit_share:.1%})"
        )
    assert len(task3) > 100 and found == len(task3), "every fixture answer's numbers occur in its report"
    assert misses == [], f"answers outside every flagged sentence: {misses}"
    # Precision stays visible: not every sentence with a digit (dates, Covid-19, T12, segment 6) is flagged.
    assert share < 0.12 and digit_share < 0.85
    # The lengths of the flagged sentences hold every released answer's value in mm.
    pool: dict[str, set[float]] = {}
    for volume, values in zip(sentences["VolumeName"], sentences["measurements_mm"], strict=True):
        pool.setdefault(_scan(volume), set()).update(values)
    for volume, answer in answers:
        values = [v for m in find_measurements(answer) for v in m.values_mm]
        assert values and all(any(abs(v - p) < 1e-6 for p in pool[_scan(volume)]) for v in values), (volume, answer)


# Report styles the fixture lacks (unit words, typos, unit-less sizes, ranges, N x N x N, decimal commas, volumes,
# percentages) with the answer a Task 3 writer would give, and sentences with digits that carry no measurement.
STYLES: list[tuple[str, str, list[float]]] = [
    ("A nodule of 5 millimeters was observed in the right lung upper lobe posterior segment.", "5 mm", [5.0]),
    ("A hypodense lesion of 12 millimetres was observed in the left lobe of the thyroid gland.", "12 mm", [12.0]),
    ("Pleural effusion reaching 3 centimeters in its thickest part was observed on the right.", "3 cm", [30.0]),
    ("The diameter of the ascending aorta was measured as 4.2 cm. and it is dilated.", "4.2 cm", [42.0]),
    ("A nodule of 6 mmm was observed in the left lung lower lobe superior segment.", "6 mm", [6.0]),
    ("A cyst of 2 cmm was observed in the upper pole of the right kidney.", "2 cm", [20.0]),
    ("Nodules of 4 mm's were observed in both lungs.", "4 mm", [4.0]),
    ("A nodule of 7 m m was observed in the right lung middle lobe.", "7 mm", [7.0]),
    ("A 9 milimetric nodule was observed in the left lung upper lobe.", "9 mm", [9.0]),
    ("The largest lymph node in the subcarinal area is 17x12 in size.", "17x12 mm", [17.0, 12.0]),
    ("Ascending aorta diameter was measured as 46.", "46 mm", [46.0]),
    ("A nodule with a diameter of approximately 8 was observed in the right lung lower lobe.", "8 mm", []),
    ("A hypodense lesion measuring 3.2x2.5x2 was observed in the liver.", "3.2x2.5x2 cm", []),
    ("Nodules measuring 3-4 mm were observed in both lungs.", "3-4 mm", [3.0, 4.0]),
    ("Lymph nodes 8 to 10 mm in short axis were observed in the mediastinum.", "8-10 mm", [8.0, 10.0]),
    ("A mass of 3.5-4cm was observed in the anterior mediastinum.", "3.5-4 cm", [35.0, 40.0]),
    ("A hypodense nodule of 1,5 cm was observed in the right lobe of the thyroid gland.", "1.5 cm", [15.0]),
    ("A mass of 45 x 38 x 30 mm was observed in the right lung upper lobe.", "45x38x30 mm", [45.0, 38.0, 30.0]),
    ("Nodules of 3, 4 and 6 mm were observed in the right lung.", "6 mm", [3.0, 4.0, 6.0]),
    ("Pericardial effusion with a volume of approximately 40 cc was observed.", "40 cc", []),
    ("Height loss of approximately 30% was observed in the T12 vertebral body.", "30%", []),
]
NEGATIVES: list[str] = [
    "Compared with the previous examination dated 12.03.2019, there is no significant change.",
    "A calcified nodule was observed in liver segment 6.",
    "Compression fracture of the T12 vertebra.",
    "There are 2 nodules in the right lung.",
    "An old fracture of rib 5 on the right.",
    "A Bosniak 2 cyst in the left kidney.",
    "Grade 1 anterolisthesis at the L5-S1 level.",
    "The appearance is compatible with Covid-19 pneumonia.",
    "Millimetric nodules were observed in both lungs.",
]


def test_report_styles_are_flagged_and_normalised(capsys: pytest.CaptureFixture[str]) -> None:
    findings = " ".join([s for s, _, _ in STYLES] + NEGATIVES)
    table = one_report(findings)
    assert len(table) == len(STYLES) + len(NEGATIVES), table["text"].tolist()
    answers = [("valid_1_a_1.nii.gz", answer) for _, answer, _ in STYLES]
    found, misses = _located(answers, table)
    assert found == len(STYLES) and misses == []
    styles, negatives = table.iloc[: len(STYLES)], table.iloc[len(STYLES) :]
    assert styles["has_measurement"].all(), styles.loc[~styles["has_measurement"], "text"].tolist()
    assert not negatives["has_measurement"].any(), negatives.loc[negatives["has_measurement"], "text"].tolist()
    assert [list(v) for v in styles["measurements_mm"]] == [mm for _, _, mm in STYLES]
    kinds, spans = styles["other_measurement_kinds"], styles["other_measurement_texts"]
    others = dict(zip(styles["text"], zip(kinds, spans, strict=True), strict=True))
    assert others[STYLES[11][0]] == (["size"], ["approximately 8"])
    assert others[STYLES[12][0]] == (["size"], ["3.2x2.5x2"])
    assert others[STYLES[19][0]] == (["volume"], ["approximately 40 cc"])
    assert others[STYLES[20][0]] == (["percent"], ["approximately 30%"])
    with capsys.disabled():
        print(
            f"\n[measurement recall] report styles: {found - len(misses)}/{found} answers in a flagged sentence; "
            f"flagged {int(table['has_measurement'].sum())}/{len(table)} sentences ({len(NEGATIVES)} negatives)"
        )

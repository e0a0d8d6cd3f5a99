"""Measurement spans: every form the reports use, the unit-less rule, and what is not a measurement."""

from __future__ import annotations

import pytest

from rad3d_pipeline.sentences.measurements import find_all_measurements, find_measurements


@pytest.mark.parametrize(
    ("text", "mm", "qualifier"),
    [
        ("a 5 mm nodule", [5.0], None),
        ("a bulla of 3.3 cm", [33.0], None),
        ("4,5 mm nodule", [4.5], None),
        ("a 3x4 cm mass", [30.0, 40.0], None),
        ("measuring 12 x 10 mm", [12.0, 10.0], None),
        ("32x21x15 mm cyst", [32.0, 21.0, 15.0], None),
        ("3*4 cm", [30.0, 40.0], None),
        ("nodules of 5-7 mm", [5.0, 7.0], None),
        ("nodules of 5 to 7 mm", [5.0, 7.0], None),
        ("lymph nodes less than 1 cm", [10.0], "less than"),
        ("effusion up to 14 mm in thickness", [14.0], "up to"),
        ("approximately 2 cm", [20.0], "approximately"),
        # unit words
        ("A nodule of 5 millimeters was observed in the right lung upper lobe.", [5.0], None),
        ("A 1 millimeter calcified nodule.", [1.0], None),
        ("A hypodense lesion of 8 millimetres in the liver.", [8.0], None),
        ("A nodule of 6 milimeters in the left lower lobe.", [6.0], None),
        ("A mass of 4.5 centimeters in the right hilum.", [45.0], None),
        ("Pleural effusion of 2 centimetres in thickness.", [20.0], None),
        ("A 5 millimetric nodule in the right lung.", [5.0], None),
        ("The ascending aorta was measured as 42 mm.", [42.0], None),
        ("A lesion measuring 3 cm. in the left adrenal gland", [30.0], None),
        # unit typos
        ("A nodule of 6 mmm in the right upper lobe.", [6.0], None),
        ("A cyst of 2 cmm in the right kidney.", [20.0], None),
        ("Nodules of 4 mm's in both lungs.", [4.0], None),
        ("A nodule of 5 m m in the left lower lobe.", [5.0], None),
        ("A 3 c m hypodense lesion in the liver.", [30.0], None),
        ("A 5 MM nodule.", [5.0], None),
        ("A 7 mms nodule in the lingula.", [7.0], None),
        # ranges and decimals
        ("Nodules with diameters of 3-4 mm.", [3.0, 4.0], None),
        ("Nodules 3 to 4 mm in size.", [3.0, 4.0], None),
        ("A mass of 3.5-4cm in the anterior mediastinum.", [35.0, 40.0], None),
        ("A 1,5 cm nodule in the right lower lobe.", [15.0], None),
        ("A nodule of 1,5x0,8 cm in the right upper lobe.", [15.0, 8.0], None),
        ("A .5 cm nodule in the left upper lobe.", [5.0], None),
        ("A 5-mm nodule in the right middle lobe.", [5.0], None),
        ("A 3.5 x 2.1 x 1.8 cm mass.", [35.0, 21.0, 18.0], None),
    ],
)
def test_forms(text: str, mm: list[float], qualifier: str | None) -> None:
    [m] = find_measurements(text)
    assert list(m.values_mm) == mm and m.qualifier == qualifier and m.kind == "length"
    assert text[m.start : m.end].strip() == m.text


@pytest.mark.parametrize(
    ("text", "values", "mm", "source"),
    [
        # N x N (x N) needs no trigger word; 10 or more is millimetres.
        ("The largest lymph node is 15x9 in the subcarinal area.", (15.0, 9.0), (15.0, 9.0), "inferred"),
        ("Hypodense lesion 12x10x8 in the liver.", (12.0, 10.0, 8.0), (12.0, 10.0, 8.0), "inferred"),
        ("A nodule with a diameter of 12 in the right lower lobe.", (12.0,), (12.0,), "inferred"),
        ("Ascending aorta diameter was measured as 42.", (42.0,), (42.0,), "inferred"),
        ("Lymph nodes with a short axis up to 11 were observed.", (11.0,), (11.0,), "inferred"),
        # Under 10 with no unit anywhere: 8 mm or 8 cm; flagged, left unnormalised.
        ("Nodule with a diameter of 8 was observed in the right lung.", (8.0,), (), ""),
        ("A 3x2x1 lesion in the spleen.", (3.0, 2.0, 1.0), (), ""),
        ("Nodules measuring 3-4 in both lungs.", (3.0, 4.0), (), ""),
        ("A nodule approximately 6 in size in the left upper lobe.", (6.0,), (), ""),
        ("Pleural effusion with a thickness of 2,5 on the right.", (2.5,), (), ""),
    ],
)
def test_unit_less_sizes(text: str, values: tuple[float, ...], mm: tuple[float, ...], source: str) -> None:
    [m] = find_all_measurements(text)
    assert m.values == values and m.values_mm == mm and m.unit_source == source
    assert m.kind == ("length" if mm else "size") and m.unit == ("mm" if mm else "")
    assert text[m.start : m.end].strip() == m.text
    assert find_measurements(text) == ([m] if mm else [])


def test_bare_number_takes_the_unit_written_in_the_sentence() -> None:
    text = "The AP diameter of the ascending aorta is 4.5, and the AP diameter of the descending aorta is 2.8 cm."
    found = find_measurements(text)
    assert [m.values_mm for m in found] == [(45.0,), (28.0,)]
    assert [m.unit_source for m in found] == ["implied", "written"]
    # the nearest unit after the number wins, else the nearest before it
    found = find_measurements("A 2 cm mass in the left lobe and a nodule with a diameter of 4 in the right lobe.")
    assert [m.values_mm for m in found] == [(20.0,), (40.0,)]
    # a sentence that gives a length with its unit makes its other bare sizes lengths in that unit
    found = find_measurements("The ascending aorta is 4 cm, the arch 3.5, and the descending aorta 3.")
    assert [m.values_mm for m in found] == [(40.0,), (35.0,), (30.0,)]
    # lists and "between" share the unit written at their end
    assert [m.values_mm for m in find_measurements("Nodules of 3, 4 and 6 mm in both lungs.")] == [
        (3.0,),
        (4.0,),
        (6.0,),
    ]
    assert [m.values_mm for m in find_measurements("Nodules between 3 and 5 mm.")] == [(3.0,), (5.0,)]
    assert [m.values_mm for m in find_measurements("Nodules of 1.2 or 1.5 cm.")] == [(12.0,), (15.0,)]
    # no unit anywhere and under 10: flagged as a size, not a length
    assert find_measurements("The diameter is 4.5.") == []
    assert [m.kind for m in find_all_measurements("The diameter is 4.5.")] == ["size"]


@pytest.mark.parametrize(
    ("text", "kind", "values"),
    [
        ("A pericardial effusion with a volume of 30 cc.", "volume", (30.0,)),
        ("Approximately 250 ml of pleural fluid.", "volume", (250.0,)),
        ("A cyst with a volume of 12 cm3 in the left kidney.", "volume", (12.0,)),
        ("A lesion of 40 mm² in the liver.", "area", (40.0,)),
        ("Height loss of approximately 30% in the T12 vertebral body.", "percent", (30.0,)),
        ("About 50 percent narrowing of the left main coronary artery.", "percent", (50.0,)),
        ("%70 stenosis at the origin of the right coronary artery.", "percent", (70.0,)),
        ("Compression fracture with 20-25% loss of height in L1.", "percent", (20.0, 25.0)),
    ],
)
def test_other_kinds_flag_without_a_length(text: str, kind: str, values: tuple[float, ...]) -> None:
    [m] = find_all_measurements(text)
    assert (m.kind, m.values, m.values_mm) == (kind, values, ())
    assert find_measurements(text) == []


@pytest.mark.parametrize(
    "text",
    [
        "T12 vertebra",
        "segment 6",
        "2 nodules",
        "millimetric nodules",
        "density of 40 HU",
        "2019",
        "Compared with the previous examination dated 12.03.2019, no change.",
        "Compared to the CT of 03/2020, the nodule is stable in size.",
        "A nodule in liver segment 6 of approximately the same size.",
        "Compression fracture of the T12 vertebra.",
        "There are 2 nodules in the right lung.",
        "Approximately 3 lesions were seen in the liver.",
        "Fracture of rib 5 on the right.",
        "Old fractures of ribs 5 and 6 on the left, largest callus in rib 6.",
        "Bosniak 2 cyst in the left kidney, size unchanged.",
        "Grade 1 anterolisthesis at L5-S1.",
        "In approximately 2 years the size of the nodule has not changed.",
        "Lymph nodes in station 7 of normal size.",
        "A nodule in image 45 of series 3, its size cannot be measured.",
        "Pulmonary artery pressure of 40 mm Hg is estimated.",
        "Degenerative changes in the C6-C7 disc distance.",
        "Covid-19 pneumonia is considered in the differential diagnosis.",
        "Type 1 hiatal hernia.",
        "Increased size of 3 mediastinal lymph nodes.",
        "Fleischner 2017 guideline recommends a follow-up; Lung-RADS 4A.",
        "20% of the patients with this size of nodule need follow-up.",
        "Heart size increased, cardiothoracic ratio 0.6.",
        "Compared to the examination 6 months ago, the size of the nodule is unchanged.",
        "Ground glass densities with approximately 2-3 foci in the right lung.",
    ],
)
def test_not_measurements(text: str) -> None:
    assert find_all_measurements(text) == []


def test_counts_and_labels_beside_sizes_stay_out() -> None:
    found = find_all_measurements("Bosniak 2 cyst measuring 12 mm in segment 6, 3 nodules of 5 and 7 mm in rib 5.")
    assert [m.text for m in found] == ["12 mm", "5", "7 mm"]
    assert [v for m in found for v in m.values_mm] == [12.0, 5.0, 7.0]

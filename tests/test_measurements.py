"""Measurement spans: every form the reports use, and what is not a length."""

from __future__ import annotations

import pytest

from rad3d_pipeline.measurements import find_measurements


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
    ],
)
def test_forms(text: str, mm: list[float], qualifier: str | None) -> None:
    [m] = find_measurements(text)
    assert list(m.values_mm) == mm and m.qualifier == qualifier
    assert text[m.start : m.end].strip() == m.text


@pytest.mark.parametrize(
    "text",
    ["T12 vertebra", "segment 6", "2 nodules", "millimetric nodules", "a volume of 30 cc", "density of 40 HU", "2019"],
)
def test_not_lengths(text: str) -> None:
    assert find_measurements(text) == []


def test_bare_number_takes_the_unit_written_later() -> None:
    text = "The AP diameter of the ascending aorta is 4.5, and the AP diameter of the descending aorta is 2.8 cm."
    found = find_measurements(text)
    assert [m.values_mm for m in found] == [(45.0,), (28.0,)]
    assert found[0].qualifier == "implied unit"
    assert find_measurements("The diameter is 4.5.") == []  # no unit anywhere: not a length

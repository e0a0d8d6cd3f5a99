"""Measurement spans in report text: numbers with length units, normalised to millimetres.

Recognised forms: ``5 mm``, ``3.3 cm``, ``4,5 mm`` (decimal comma), ``3x4 cm``,
``3 x 4 cm``, ``32x21x15 mm``, ``3*4 cm``, ``12 x 10 mm``, ranges ``5-7 mm`` and
``5 to 7 mm``, and qualifiers before them (``less than 1 cm``, ``up to 14 mm``,
``approximately 2 cm``). Volumes (``cc``, ``ml``), densities (``HU``), counts ("2
nodules"), levels ("T12", "segment 6") and words such as "millimetric" are not lengths.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNIT_TO_MM: dict[str, float] = {"mm": 1.0, "cm": 10.0, "m": 1000.0}

_NUM = r"\d+(?:[.,]\d+)?"
_SEP = r"\s*(?:x|×|\*|X)\s*"
_RANGE = r"\s*(?:-|–|to)\s*"
_QUALIFIER = (
    r"(?P<qual>less than|smaller than|more than|greater than|larger than|up to|approximately|about|"
    r"nearly|almost|over|under|at least|at most|~|<|>|≤|≥)\s*"
)
MEASUREMENT_RE = re.compile(
    rf"(?<![\w.,])(?:{_QUALIFIER})?(?P<nums>{_NUM}(?:(?:{_SEP}|{_RANGE}){_NUM})*)\s*(?P<unit>mm|cm|m)\b(?!\s*[²³2-3]\b)",
    re.IGNORECASE,
)
_SPLIT_RE = re.compile(rf"{_SEP}|{_RANGE}", re.IGNORECASE)


@dataclass(frozen=True)
class Measurement:
    text: str
    start: int
    end: int
    values: tuple[float, ...]
    unit: str
    values_mm: tuple[float, ...]
    qualifier: str | None


def _number(raw: str) -> float:
    return float(raw.replace(",", "."))


# A bare number after a dimension word, whose unit is written later in the sentence:
# "The AP diameter of the ascending aorta is 4.5, and of the descending aorta 2.8 cm."
IMPLIED_UNIT_RE = re.compile(
    rf"\b(?:diameter|size|thickness|width|length|measur\w*)\b[^.\d]{{0,40}}?(?P<num>{_NUM})(?!\s*(?:mm|cm|m\b|%|x|×|\*|\d|[.,]\d))",
    re.IGNORECASE,
)


def _implied_unit_measurements(text: str, explicit: list[Measurement]) -> list[Measurement]:
    out = []
    for match in IMPLIED_UNIT_RE.finditer(text):
        start, end = match.span("num")
        if any(m.start <= start < m.end for m in explicit):
            continue
        later = [m for m in explicit if m.start >= end]
        unit = (later[0] if later else explicit[-1]).unit
        value = _number(match.group("num"))
        out.append(
            Measurement(
                match.group("num"), start, end, (value,), unit, (round(value * UNIT_TO_MM[unit], 6),), "implied unit"
            )
        )
    return out


def find_measurements(text: str) -> list[Measurement]:
    """Every length measurement in ``text``, left to right (bare numbers take a unit written later)."""
    found = _explicit_measurements(text)
    if found:
        found = sorted(found + _implied_unit_measurements(text, found), key=lambda m: m.start)
    return found


def _explicit_measurements(text: str) -> list[Measurement]:
    found = []
    for match in MEASUREMENT_RE.finditer(text):
        unit = match.group("unit").lower()
        parts = [p for p in _SPLIT_RE.split(match.group("nums")) if p]
        values = tuple(_number(p) for p in parts)
        factor = UNIT_TO_MM[unit]
        qualifier = match.group("qual")
        found.append(
            Measurement(
                text=match.group(0).strip(),
                start=match.start(),
                end=match.end(),
                values=values,
                unit=unit,
                values_mm=tuple(round(v * factor, 6) for v in values),
                qualifier=qualifier.lower() if qualifier else None,
            )
        )
    return found

"""Measurement spans in report text: sizes, distances, areas, volumes and percentage losses.

Every span is a :class:`Measurement` with a ``kind``:

``length``
    A number with a length unit, normalised to millimetres (``values_mm``). Units: ``mm``, ``cm``,
    ``m``, the words (``millimeter(s)``, ``millimetre(s)``, ``milimeter``, ``centimeter(s)``,
    ``centimetre(s)``), ``mm.``/``cm.``, the typos ``mmm``, ``cmm``, ``mm's``/``cm's``, ``mms``,
    ``m m``, ``c m``, "5 millimetric" (a translated "5 milimetrik"), and a lone ``m`` (no chest
    CT finding is metres long: read as ``mm``).
    Forms: ``5 mm``, ``3.3 cm``, ``4,5 mm`` (decimal comma), ``5-mm``, ``3x4 cm``, ``32x21x15 mm``,
    ``3*4 cm``, ranges ``5-7 mm``, ``5 to 7 mm``, ``3.5-4cm`` (both ends kept), lists ``3, 4 and
    6 mm`` / ``between 3 and 5 mm`` (every value takes the unit), and qualifiers before them
    (``less than 1 cm``, ``up to 14 mm``, ``approximately 2 cm``).
``size``
    A number without a unit that a radiologist reads as a size: ``N x N (x N)`` anywhere, or a
    number (or range) in a sentence that says size, sized, diameter, measuring/measured,
    approximately, about, thickness, width, length, dimension, calibre, axis, largest, reaching or
    up to, or that gives another length with its unit ("the aorta is 4 cm, the arch 3.5"), when
    the number is followed by nothing, punctuation or a word such as "in", "and", "was" (not by
    a noun: "2 nodules", "3 years" are counts) and is no label ("segment 6"). Its unit is inferred
    (see below) and the span becomes a ``length``; when it cannot be, it stays a ``size`` with
    empty ``values_mm``: the sentence is still flagged.
``area``, ``volume``, ``percent``
    ``mm²``/``cm2``/``square centimeters``; ``cc``, ``ml``, ``cm³``, ``mm3``, ``cubic centimeters``;
    a percentage (``30%``, ``30 percent``, ``%30``) in a sentence about a loss, narrowing, stenosis,
    compression, collapse, reduction, decrease, occlusion or height. ``values_mm`` is empty.

The unit of a unit-less size (the rule, in order):

1. a length unit written in the same sentence: the nearest one after the number, else the
   nearest one before it ("diameter 4.5, and of the descending aorta 2.8 cm": 4.5 cm);
   ``unit_source="implied"``;
2. otherwise magnitude: a largest value of 10 or more is millimetres (a chest CT finding of
   10 cm or more is written with its unit; "15x9", "diameter 42" are mm);
   ``unit_source="inferred"``;
3. otherwise (a largest value under 10: "8" can be 8 mm or 8 cm) no unit: ``kind="size"``.

Not measurements: counts ("2 nodules", "approximately 3 lesions"), levels and labels
("T12", "segment 6", "rib 5", "Bosniak 2", "grade 1", "station 7", "image 45"), dates and years,
times, densities (``HU``), pressures (``mmHg``), and words such as "millimetric".
"""

from __future__ import annotations

import re
from dataclasses import dataclass

UNIT_TO_MM: dict[str, float] = {"mm": 1.0, "cm": 10.0}
LENGTH_KINDS = frozenset({"length"})
FLAG_KINDS = frozenset({"length", "size", "area", "volume", "percent"})

_NUM = r"(?:\d+(?:[.,]\d+)?|\.\d+)"
_SEP = r"\s*(?:x|×|\*)\s*"
_RANGE = r"\s*(?:-|–|—|to)\s*"
_NUMS = rf"(?>{_NUM}(?:(?:{_SEP}|{_RANGE}){_NUM})*)"
_QUALIFIER = (
    r"(?:(?P<qual>less than|smaller than|more than|greater than|larger than|up to|approximately|approx\.?|"
    r"about|nearly|almost|over|under|at least|at most|maximum|max\.?|~|<|>|≤|≥)\s*)?"
)
_END = r"(?![a-zçğıöşü])(?!\s*hg\b)"
_UNITS: tuple[tuple[str, str, str], ...] = (
    # (kind, canonical unit, pattern); longer and more specific forms first.
    ("area", "mm2", r"(?:mm|mil+i?met(?:er|re)s?)(?:\^?2|\s*²)(?!\d)|square\s+mil+i?met(?:er|re)s?|sq\.?\s*mm"),
    ("area", "cm2", r"(?:cm|(?:centi|santi)met(?:er|re)s?)(?:\^?2|\s*²)(?!\d)|square\s+centimet(?:er|re)s?|sq\.?\s*cm"),
    ("volume", "mm3", r"(?:mm|mil+i?met(?:er|re)s?)(?:\^?3|\s*³)(?!\d)|cubic\s+mil+i?met(?:er|re)s?"),
    (
        "volume",
        "ml",
        r"(?:cm|(?:centi|santi)met(?:er|re)s?)(?:\^?3|\s*³)(?!\d)|cubic\s+centimet(?:er|re)s?|cc|ml|"
        r"mil+i?lit(?:er|re)s?",
    ),
    ("length", "mm", r"mil+i?met(?:er|re|ric)s?|m\s?m{1,2}(?:['’]?s)?|m"),
    ("length", "cm", r"(?:centi|santi)met(?:er|re|ric)s?|c\s?m{1,2}(?:['’]?s)?"),
)
_UNIT_KIND = {f"u{i}": (kind, unit) for i, (kind, unit, _) in enumerate(_UNITS)}
_UNIT_RE = "|".join(f"(?P<u{i}>{pattern})" for i, (_, _, pattern) in enumerate(_UNITS))

MEASUREMENT_RE = re.compile(
    rf"(?<![\w.,]){_QUALIFIER}(?P<nums>{_NUMS})(?:\s*-\s*|\s*)(?:{_UNIT_RE}){_END}",
    re.IGNORECASE,
)
PERCENT_RE = re.compile(
    rf"(?<![\w.,]){_QUALIFIER}(?:(?P<nums>{_NUMS})\s*(?:%|per\s?cent\b)|%\s*(?P<after>{_NUMS})(?![\w.,]\d))",
    re.IGNORECASE,
)
PERCENT_CONTEXT_RE = re.compile(
    r"\b(?:loss|lost|narrow\w*|stenos\w*|stenotic|compress\w*|collapse\w*|reduc\w*|decreas\w*|occlu\w*|"
    r"obstruct\w*|height|lumen|luminal|flatten\w*|shorten\w*|wedg\w*)\b",
    re.IGNORECASE,
)
BARE_RE = re.compile(
    rf"(?<![\w.,/:+-]){_QUALIFIER}(?P<nums>{_NUMS})(?![\w%°'’/:]|[.,]\d|\s*(?:[-–x×*]|to)\s*\d)",
    re.IGNORECASE,
)
SIZE_TRIGGER_RE = re.compile(
    r"\b(?:sized?|sizes|sizing|diam(?:eter)?s?|measur\w*|approx(?:imately|\.)?|thickness|width|length|"
    r"dimensions?|calib(?:er|re)|axis|largest|biggest|about|reaching|up to)\b",
    re.IGNORECASE,
)
_SPLIT_RE = re.compile(rf"{_SEP}|{_RANGE}", re.IGNORECASE)
_X_RE = re.compile(_SEP, re.IGNORECASE)
# Labels and levels before a number: "segment 6", "rib 5", "Bosniak 2", "grade 1", "T 12", "image 45".
_LABEL_BEFORE_RE = re.compile(
    r"(?:\b(?:segments?|ribs?|costae?|grade|grades|bosniak|level|levels|type|stage|score|rads|class|zone|station|"
    r"stations|vertebrae?|vertebral|thoracic|lumbar|cervical|image|images|series|slice|section|no|nr|number|"
    r"im|se|[tlcsd]|day|days|week|weeks|month|months|year|years|phase|fleischner|hounsfield|hu|"
    r"category|ratio|index)\.?\s*|#\s*)$",
    re.IGNORECASE,
)
# What may follow a unit-less single number that is a size: nothing, punctuation, or a word of this list.
_SIZE_FOLLOWER_WORDS = (
    "in at on and or was is were with without located observed seen detected noted identified which that "
    "compared previously before than versus vs respectively sized size diameter diameters thickness "
    "length width wide long thick across when while where but also reaching extending along"
)
_SIZE_FOLLOWERS = frozenset(_SIZE_FOLLOWER_WORDS.split())
_DATE_RE = re.compile(r"\b\d{1,2}([./])\d{1,2}\1\d{2,4}\b|\b(?:19|20)\d{2}\b|\b\d{1,2}:\d{2}\b|\b\d{1,2}[./]\d{4}\b")
_LIST_BEFORE_RE = re.compile(rf"(?:{_NUM}\s*(?:,\s*(?:and\s+|or\s+)?|and\s+|or\s+|-\s*|to\s+|/\s*))+$", re.IGNORECASE)
_DIGIT_RE = re.compile(r"\d")
_LIST_GAP_RE = re.compile(r"\s*(?:,\s*(?:and\s+|or\s+)?|and\s+|or\s+|/\s*)", re.IGNORECASE)


@dataclass(frozen=True)
class Measurement:
    text: str
    start: int
    end: int
    values: tuple[float, ...]
    unit: str
    values_mm: tuple[float, ...]
    qualifier: str | None
    kind: str = "length"
    unit_source: str = "written"  # "written", "implied" (a unit elsewhere in the sentence), "inferred", ""


def _number(raw: str) -> float:
    return float(raw.replace(",", "."))


def _values(nums: str) -> tuple[float, ...]:
    return tuple(_number(p) for p in _SPLIT_RE.split(nums) if p)


def _mm(values: tuple[float, ...], unit: str) -> tuple[float, ...]:
    return tuple(round(v * UNIT_TO_MM[unit], 6) for v in values)


def _qualifier(match: re.Match[str]) -> str | None:
    qualifier = match.group("qual")
    return qualifier.lower().rstrip(".") if qualifier else None


def _masked(text: str) -> str:
    """Dates, years and times blanked out (same length, offsets unchanged)."""
    return _DATE_RE.sub(lambda m: " " * len(m.group(0)), text)


def _explicit(text: str, masked: str) -> list[Measurement]:
    found = []
    for match in MEASUREMENT_RE.finditer(masked):
        group = next(name for name, value in match.groupdict().items() if name in _UNIT_KIND and value is not None)
        kind, unit = _UNIT_KIND[group]
        unit = "cc" if unit == "ml" and match.group(group).lower().startswith("c") else unit
        values = _values(match.group("nums"))
        found.append(
            Measurement(
                text=text[match.start() : match.end()].strip(),
                start=match.start(),
                end=match.end(),
                values=values,
                unit=unit,
                values_mm=_mm(values, unit) if kind == "length" else (),
                qualifier=_qualifier(match),
                kind=kind,
            )
        )
    return found


def _percents(text: str, masked: str, taken: list[Measurement]) -> list[Measurement]:
    if not PERCENT_CONTEXT_RE.search(text):
        return []
    out = []
    for match in PERCENT_RE.finditer(masked):
        if _overlaps(match.start(), match.end(), taken):
            continue
        values = _values(match.group("nums") or match.group("after"))
        out.append(
            Measurement(text[match.start() : match.end()].strip(), match.start(), match.end(), values, "%", (),
                        _qualifier(match), "percent")
        )  # fmt: skip
    return out


def _overlaps(start: int, end: int, spans: list[Measurement]) -> bool:
    return any(m.start < end and start < m.end for m in spans)


def _is_label(masked: str, start: int) -> bool:
    """The number is a label or level ("segment 6", "ribs 5 and 6"), looking back over a list of numbers."""
    before = _LIST_BEFORE_RE.sub("", masked[max(0, start - 160) : start])
    return _LABEL_BEFORE_RE.search(before) is not None


def _size_follower_ok(masked: str, end: int) -> bool:
    rest = masked[end:].lstrip()
    if not rest or not (rest[0].isalpha()):
        return True
    word = re.match(r"[a-zçğıöşü]+", rest, re.IGNORECASE)
    return word is not None and word.group(0).lower() in _SIZE_FOLLOWERS


def _bare(text: str, masked: str, lengths: list[Measurement], taken: list[Measurement]) -> list[Measurement]:
    """Unit-less sizes: in lists before a unit, ``N x N``, or numbers in a sentence that says size."""
    candidates = [m for m in BARE_RE.finditer(masked) if not _overlaps(m.start(), m.end(), taken)]
    # A sentence that says size (or already gives a length with its unit) makes a bare number a size.
    triggered = bool(lengths) or SIZE_TRIGGER_RE.search(masked) is not None
    out: list[Measurement] = []
    following = sorted(lengths, key=lambda m: m.start)
    for match in reversed(candidates):
        start, end = match.span()
        nums = match.group("nums")
        if _is_label(masked, match.start("nums")):
            continue
        values = _values(nums)
        # "3, 4 and 6 mm", "between 3 and 5 mm": a number listed right before a length takes its unit.
        listed = next(
            (m for m in following if m.start >= end and _LIST_GAP_RE.fullmatch(masked[end : m.start]) is not None),
            None,
        )
        is_grid = len(_X_RE.split(nums)) > 1
        if listed is None and not is_grid and not (triggered and _size_follower_ok(masked, end)):
            continue
        if listed is not None:
            unit, source_name = listed.unit, "implied"
        else:
            later = [m for m in lengths if m.start >= end]
            earlier = [m for m in lengths if m.end <= start]
            source = later[0] if later else (earlier[-1] if earlier else None)
            if source is not None:
                unit, source_name = source.unit, "implied"
            elif max(values) >= 10:
                unit, source_name = "mm", "inferred"
            else:
                unit, source_name = "", ""
        measurement = Measurement(
            text=text[start:end].strip(),
            start=start,
            end=end,
            values=values,
            unit=unit,
            values_mm=_mm(values, unit) if unit else (),
            qualifier=_qualifier(match),
            kind="length" if unit else "size",
            unit_source=source_name,
        )
        out.append(measurement)
        if unit:
            following = sorted([*following, measurement], key=lambda m: m.start)
    return out


def find_all_measurements(text: str) -> list[Measurement]:
    """Every measurement span of ``text`` (all kinds), left to right."""
    if not _DIGIT_RE.search(text):
        return []
    masked = _masked(text)
    explicit = _explicit(text, masked)
    percents = _percents(text, masked, explicit)
    lengths = [m for m in explicit if m.kind == "length"]
    bare = _bare(text, masked, lengths, explicit + percents)
    return sorted(explicit + percents + bare, key=lambda m: m.start)


def find_measurements(text: str) -> list[Measurement]:
    """Every length in ``text`` normalised to mm, left to right (unit written, implied or inferred)."""
    return [m for m in find_all_measurements(text) if m.kind in LENGTH_KINDS]

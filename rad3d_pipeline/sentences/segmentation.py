"""Report sentences: segmentation (spaCy), section, measurements, negation and side.

``has_measurement`` flags a sentence that carries any measurement of
:mod:`rad3d_pipeline.sentences.measurements` (a length with or without its unit, an area, a volume, a
percentage loss or narrowing). ``measurements_mm`` and ``measurement_texts`` hold its lengths
(normalised to mm; unit written, implied by the sentence or inferred from the magnitude);
``other_measurement_texts`` and ``other_measurement_kinds`` (parallel lists) the spans that flag
the sentence without a length in mm: ``size`` (a unit-less size whose unit cannot be inferred),
``area``, ``volume``, ``percent``.

scispaCy's ``en_core_sci_sm`` is used when it is installed (it cannot be downloaded at run
time here); otherwise a blank English pipeline with a rule-based sentencizer that does not
split decimals ("3.3 cm") or common abbreviations. The splitter says which one it is.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd

from rad3d_pipeline.sentences.measurements import FLAG_KINDS, LENGTH_KINDS, find_all_measurements

SENTENCE_COLUMNS: tuple[str, ...] = (
    "VolumeName",
    "section",
    "sentence_index",
    "text",
    "start",
    "has_measurement",
    "measurements_mm",
    "measurement_texts",
    "negated",
    "side",
    "other_measurement_texts",
    "other_measurement_kinds",
)
SECTIONS: dict[str, str] = {"Findings_EN": "findings", "Impressions_EN": "impressions"}
SCISPACY_MODEL = "en_core_sci_sm"

NEGATION_RE = re.compile(
    r"\b(no|not|without|absence of|absent|free of|negative for|ruled out|rule out|neither|nor|none|"
    r"(?:was|were|is|are) not (?:detected|observed|seen|identified|present|noted)|"
    r"(?:was|were|is|are)n't)\b",
    re.IGNORECASE,
)
BILATERAL_RE = re.compile(r"\b(bilateral(?:ly)?|both (?:lungs?|hemithora(?:x|ces)|sides|kidneys|hil(?:a|um)))\b", re.I)
RIGHT_RE = re.compile(r"\bright\b", re.IGNORECASE)
LEFT_RE = re.compile(r"\bleft\b", re.IGNORECASE)
_ABBREVIATIONS = ("approx.", "e.g.", "i.e.", "vs.", "no.", "dr.", "fig.", "cf.", "etc.")
# "a 5 mm. nodule in the right lobe": a unit's abbreviation dot followed by a lower-case word ends no sentence.
_UNIT_DOT_RE = re.compile(r"(?:\d\s*|\b)(?:m\s?m{1,2}|c\s?m{1,2}|cc|ml)\.?$", re.IGNORECASE)


def _rule_sentence_starts(doc: Any) -> Any:
    """Sentence boundaries after '.', '!' or '?' followed by a space, not inside numbers or abbreviations."""
    for i, token in enumerate(doc):
        if i == 0:
            token.is_sent_start = True
            continue
        prev = doc[i - 1]
        boundary = prev.text in {".", "!", "?"} or (prev.text.endswith(".") and len(prev.text) > 1)
        if boundary and token.text[:1].islower() and prev.text.endswith("."):
            before = prev.text if len(prev.text) > 1 else doc[i - 2].text if i > 1 else ""
            boundary = not _UNIT_DOT_RE.search(before)
        if boundary and prev.text.lower() not in _ABBREVIATIONS and prev.whitespace_:
            token.is_sent_start = True
        else:
            token.is_sent_start = False
    return doc


def _register_rules() -> None:
    """The rules as a spaCy component (spaCy is imported here, not when the module loads: code locations
    and run processes import this module without segmenting anything)."""
    from spacy.language import Language

    if not Language.has_factory("rad3d_sentence_rules"):
        Language.component("rad3d_sentence_rules")(_rule_sentence_starts)


class SentenceSplitter:
    """Sentence segmentation; built once and reused (spaCy pipelines are costly to load)."""

    def __init__(self, prefer_scispacy: bool = True) -> None:
        import spacy

        _register_rules()
        if prefer_scispacy and spacy.util.is_package(SCISPACY_MODEL):
            self.nlp = spacy.load(SCISPACY_MODEL, disable=["ner", "lemmatizer"])
            self.splitter_name = f"scispacy:{SCISPACY_MODEL}"
        else:
            self.nlp = spacy.blank("en")
            self.nlp.add_pipe("rad3d_sentence_rules")
            self.splitter_name = "spacy:blank_en+rules"

    def split(self, texts: list[str]) -> list[list[tuple[int, str]]]:
        """(start offset, sentence text) per text."""
        out = []
        for doc in self.nlp.pipe(texts, batch_size=256):
            out.append([(s.start_char, s.text.strip()) for s in doc.sents if s.text.strip()])
        return out


def sentence_side(text: str) -> str:
    if BILATERAL_RE.search(text):
        return "bilateral"
    right, left = bool(RIGHT_RE.search(text)), bool(LEFT_RE.search(text))
    if right and left:
        return "bilateral"
    return "right" if right else ("left" if left else "")


def is_negated(text: str) -> bool:
    return bool(NEGATION_RE.search(text))


def empty_sentences() -> pd.DataFrame:
    frame = pd.DataFrame({c: pd.Series(dtype="object") for c in SENTENCE_COLUMNS})
    return frame.astype({"sentence_index": "int64", "start": "int64", "has_measurement": "bool", "negated": "bool"})


def report_sentences(reports: pd.DataFrame, splitter: SentenceSplitter | None = None) -> pd.DataFrame:
    """One row per sentence of the findings and impressions of each report."""
    if reports.empty:
        return empty_sentences()
    splitter = splitter or SentenceSplitter()
    records: list[tuple[Any, ...]] = []
    for column, section in SECTIONS.items():
        if column not in reports.columns:
            continue
        texts = reports[column].fillna("").astype(str)
        names = reports["VolumeName"].astype(str).tolist()
        non_empty = [(n, t) for n, t in zip(names, texts.tolist(), strict=True) if t.strip()]
        split = splitter.split([t for _, t in non_empty])
        for (name, _), sentences in zip(non_empty, split, strict=True):
            for index, (start, text) in enumerate(sentences):
                found = [m for m in find_all_measurements(text) if m.kind in FLAG_KINDS]
                lengths = [m for m in found if m.kind in LENGTH_KINDS]
                others = [m for m in found if m.kind not in LENGTH_KINDS]
                records.append(
                    (
                        name,
                        section,
                        index,
                        text,
                        start,
                        bool(found),
                        [v for m in lengths for v in m.values_mm],
                        [m.text for m in lengths],
                        is_negated(text),
                        sentence_side(text),
                        [m.text for m in others],
                        [m.kind for m in others],
                    )
                )
    if not records:
        return empty_sentences()
    frame = pd.DataFrame.from_records(records, columns=list(SENTENCE_COLUMNS))
    return frame.astype({"sentence_index": "int64", "start": "int64", "has_measurement": "bool", "negated": "bool"})

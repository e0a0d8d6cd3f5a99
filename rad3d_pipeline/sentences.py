"""Report sentences: segmentation (spaCy), section, measurements, negation and side.

scispaCy's ``en_core_sci_sm`` is used when it is installed (it cannot be downloaded at run
time here); otherwise a blank English pipeline with a rule-based sentencizer that does not
split decimals ("3.3 cm") or common abbreviations. The splitter says which one it is.
"""

from __future__ import annotations

import re
from typing import Any

import pandas as pd
import spacy
from spacy.language import Language

from rad3d_pipeline.measurements import find_measurements

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


def _rule_sentence_starts(doc: Any) -> Any:
    """Sentence boundaries after '.', '!' or '?' followed by a space, not inside numbers or abbreviations."""
    for i, token in enumerate(doc):
        if i == 0:
            token.is_sent_start = True
            continue
        prev = doc[i - 1]
        boundary = prev.text in {".", "!", "?"} or (prev.text.endswith(".") and len(prev.text) > 1)
        if boundary and prev.text.lower() not in _ABBREVIATIONS and prev.whitespace_:
            token.is_sent_start = True
        else:
            token.is_sent_start = False
    return doc


if not Language.has_factory("rad3d_sentence_rules"):
    Language.component("rad3d_sentence_rules")(_rule_sentence_starts)


class SentenceSplitter:
    """Sentence segmentation; built once and reused (spaCy pipelines are costly to load)."""

    def __init__(self, prefer_scispacy: bool = True) -> None:
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
                measurements = find_measurements(text)
                records.append(
                    (
                        name,
                        section,
                        index,
                        text,
                        start,
                        bool(measurements),
                        [v for m in measurements for v in m.values_mm],
                        [m.text for m in measurements],
                        is_negated(text),
                        sentence_side(text),
                    )
                )
    if not records:
        return empty_sentences()
    frame = pd.DataFrame.from_records(records, columns=list(SENTENCE_COLUMNS))
    return frame.astype({"sentence_index": "int64", "start": "int64", "has_measurement": "bool", "negated": "bool"})

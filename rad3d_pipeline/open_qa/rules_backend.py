"""The offline ``rules`` backend: deterministic QA from report sentences and a heuristic judge.

It needs no endpoint, so the README's main job and the tests build Tasks 1-3 offline.
Its QA is plainer than an LLM's; every row it makes says ``backend=rules``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

import pandas as pd

from rad3d_pipeline.llm.parsers import SCORE_DIMENSIONS
from rad3d_pipeline.open_qa.tasks_open import TASK12_ASPECTS, Candidate, answer_grounded

BACKEND = "rules"
MODEL = "rules-v1"

ANATOMY: tuple[str, ...] = (
    "trachea",
    "main bronchi",
    "heart",
    "aorta",
    "pulmonary artery",
    "mediastinum",
    "esophagus",
    "thyroid",
    "liver",
    "spleen",
    "kidney",
    "adrenal",
    "pleura",
    "diaphragm",
    "bones",
    "vertebra",
)
STATES: tuple[str, ...] = (
    "normal",
    "open",
    "natural",
    "enlarged",
    "dilated",
    "calcified",
    "thickened",
    "clear",
    "patent",
    "increased",
)
FINDINGS: tuple[str, ...] = (
    "nodule",
    "mass",
    "consolidation",
    "atelectasis",
    "effusion",
    "emphysema",
    "bronchiectasis",
    "opacity",
    "ground-glass",
    "fibrosis",
    "fibrotic",
    "lymphadenopathy",
    "lymph node",
    "calcification",
    "cyst",
    "lesion",
    "cardiomegaly",
    "hernia",
    "thickening",
    "bulla",
)
FEATURES: tuple[str, ...] = (
    "ground-glass",
    "calcified",
    "lobulated",
    "spiculated",
    "subpleural",
    "peribronchial",
    "centrilobular",
    "paraseptal",
    "nodular",
    "patchy",
    "linear",
    "hypodense",
    "solid",
    "cystic",
    "mild",
    "minimal",
)
LOCATION_RE = re.compile(
    r"\b((?:right|left)\s+(?:lung\s+)?(?:upper|middle|lower)\s+lobe|lingula|both lungs|bilateral(?:ly)?|"
    r"(?:right|left)\s+(?:lung|hemithorax|kidney|adrenal(?: gland)?|thyroid lobe|hilum|pleural space)|mediastinum|"
    r"(?:upper|lower|middle)\s+lobe\s+of\s+the\s+(?:right|left)\s+lung)\b",
    re.IGNORECASE,
)
VAGUE: tuple[str, ...] = ("a few", "several", "some", "few millimeters", "millimetric", "various", "multiple")
INFERENCE: tuple[str, ...] = ("recommend", "clinical", "history", "compatible with", "consistent with", "likely")


def _first(words: Iterable[str], text: str) -> str | None:
    lowered = text.lower()
    hits = [(lowered.find(w), w) for w in words if re.search(rf"\b{re.escape(w)}", lowered)]
    return min(hits)[1] if hits else None


def _location(text: str) -> str | None:
    match = LOCATION_RE.search(text)
    return match.group(1).lower() if match else None


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def task12_from_sentences(sentences: pd.DataFrame, starters: list[str]) -> dict[int, tuple[str, str, str]]:
    """Up to six (question, answer, source sentence), keyed by Figure 11's aspect number."""
    out: dict[int, tuple[str, str, str]] = {}
    findings = sentences[sentences["section"] == "findings"]
    impressions = sentences[sentences["section"] == "impressions"]
    positive = findings[~findings["negated"].astype(bool)]
    for text in findings["text"]:
        organ, state = _first(ANATOMY, text), _first(STATES, text)
        if organ and state:
            out[1] = (f"{_starter(starters[0], 'state')} of the {organ}?", _cap(state), text)
            break
    for text in positive["text"]:
        finding, where = _first(FINDINGS, text), _location(text)
        if finding and where:
            out.setdefault(2, (f"{_starter(starters[1], 'finding')} is seen in the {where}?", _cap(finding), text))
            out.setdefault(3, (f"What type of abnormality is present in the {where}?", _cap(finding), text))
            out.setdefault(5, (f"Where is the {finding} located?", _cap(where), text))
        feature = _first(FEATURES, text)
        if finding and feature and feature != finding:
            out.setdefault(4, (f"What is the appearance of the {finding}?", _cap(feature), text))
    for text in impressions[~impressions["negated"].astype(bool)]["text"]:
        finding = _first(FINDINGS, text)
        if finding:
            where = _location(text)
            suffix = f" in the {where}" if where else ""
            out[6] = (f"Which abnormality is diagnosed{suffix}?", _cap(finding), text)
            break
    return out


def _starter(starter: str, noun: str) -> str:
    if starter == "Where":
        return f"Which {noun}" if noun != "state" else "What is the state"
    if starter == "Which":
        return f"Which {noun}" if noun != "state" else "Which state is seen"
    return "What is the state" if noun == "state" else f"What {noun}"


def _aspect(sentence: str, measurement: str) -> str:
    lowered = sentence.lower()
    if "thick" in lowered:
        return "Thickness"
    if re.search(r"\d\s*[x×*]\s*\d", measurement) or "size" in lowered or "mass" in lowered:
        return "Size"
    return "Diameter"


def task3_from_sentence(text: str, measurement: str) -> tuple[str, str, str] | None:
    """(aspect, question, answer) from one measurement of a sentence; None when not usable."""
    subject = _first(FINDINGS + ANATOMY, text)
    if subject is None:
        return None
    aspect = _aspect(text, measurement)
    where = _location(text)
    suffix = f" in the {where}" if where and where not in subject else ""
    question = f"What is the {aspect.lower()} of the {subject}{suffix}?"
    answer = measurement.strip()
    if answer_grounded(answer, text) is not None:
        return None
    return aspect, question, answer


def generate_rules(
    sentences: pd.DataFrame,
    volumes: pd.DataFrame,
    starters_by_volume: dict[str, list[str]],
    tasks: Iterable[int],
) -> list[Candidate]:
    """Candidates for the given tasks (1-3) of every volume in ``volumes`` (VolumeName, split, patient_id)."""
    wanted = set(tasks)
    by_volume = {str(name): group for name, group in sentences.groupby("VolumeName", sort=False)}
    out: list[Candidate] = []
    rows = zip(
        volumes["VolumeName"].astype(str).tolist(),
        volumes["split"].astype(str).tolist(),
        volumes["patient_id"].astype(str).tolist(),
        strict=True,
    )
    for volume, split, patient in rows:
        group = by_volume.get(volume)
        if group is None:
            continue
        if wanted & {1, 2}:
            made12 = task12_from_sentences(group, starters_by_volume.get(volume, ["What"] * 6))
            for number, (question, answer, source) in sorted(made12.items()):
                task, subtask = TASK12_ASPECTS[number]
                if task in wanted:
                    out.append(
                        Candidate(volume, split, patient, task, subtask, question, answer, source, BACKEND, MODEL)
                    )
        if 3 in wanted:
            measured = group[group["has_measurement"].astype(bool)]
            for text, texts in zip(measured["text"], measured["measurement_texts"], strict=True):
                for measurement in list(texts)[:1]:
                    made3 = task3_from_sentence(str(text), str(measurement))
                    if made3 is not None:
                        aspect, question, answer = made3
                        out.append(
                            Candidate(volume, split, patient, 3, aspect, question, answer, str(text), BACKEND, MODEL)
                        )
    return out


GENERIC_ANSWERS: tuple[str, ...] = ("lesion", "abnormality", "finding", "normal", "present", "yes", "no", "unknown")


def heuristic_scores(question: str, answer: str) -> dict[str, int]:
    """A five-dimension score in the spirit of Figure 17's rubric, from surface features.

    Visual verifiability drops for words that need clinical inference; specificity for vague
    quantities, generic answers and questions that name no structure or place; answer
    appropriateness for long answers and answers the question already gives away; Q-A
    alignment for a "where" without a place or a size question without a number; linguistic
    quality for a missing question mark, a doubled word or a rambling question.
    """
    q, a = question.lower(), answer.lower().strip(" .")
    words = len(answer.split())
    names_place = bool(_location(question)) or any(w in q for w in ANATOMY) or any(w in q for w in FINDINGS)
    verifiability = 5 - 2 * any(w in q or w in a for w in INFERENCE)
    specificity = (
        5
        - 2 * any(re.search(rf"\b{re.escape(w)}\b", a) for w in VAGUE)
        - (a in GENERIC_ANSWERS)
        - (not names_place)
        - (words > 6)
    )
    leaked = words > 0 and all(w in q for w in a.split())
    appropriateness = (5 if 0 < words <= 3 else 4 if words <= 5 else 3 if words <= 8 else 2) - leaked
    if q.startswith("where"):
        alignment = 5 if _location(answer) or any(w in a for w in ("lobe", "lung", "side", "region")) else 2
    elif re.search(r"\b(size|diameter|thickness)\b", q):
        alignment = 5 if re.search(r"\d", a) else 1
    else:
        alignment = 4 if re.search(r"\d", a) and not re.search(r"\b(size|how)\b", q) else 5
    linguistic = (
        5
        - (not question.strip().endswith("?"))
        - bool(re.search(r"\b(\w+) \1\b", q))
        - (len(question.split()) > 25)
        - (question[:1].islower())
    )
    values = (verifiability, specificity, appropriateness, alignment, linguistic)
    return {d: max(1, min(5, int(v))) for d, v in zip(SCORE_DIMENSIONS, values, strict=True)}

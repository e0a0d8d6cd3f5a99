"""Spatial questions (the companion CT-SpatialVQA benchmark): which QA pairs need spatial reasoning.

Six categories. An LLM judge decides through the LLM layer (prompt ``spatial_judge``); offline a
keyword-and-lexicon classifier stands in. The spatial subset is exported as JSONL in the
companion benchmark's format: ``image_path``, ``question``, ``answer``, ``category``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd

from rad3d_pipeline.llm.parsers import ParseError, clean_reply

CATEGORIES: dict[str, tuple[str, ...]] = {
    "laterality and bilateral symmetry": (
        "right",
        "left",
        "bilateral",
        "bilaterally",
        "both",
        "unilateral",
        "symmetric",
        "symmetrical",
        "asymmetric",
        "contralateral",
        "ipsilateral",
        "which side",
        "which lung",
    ),
    "adjacency and containment": (
        "adjacent",
        "neighboring",
        "neighbouring",
        "surrounding",
        "within",
        "inside",
        "contain",
        "abut",
        "next to",
        "near",
        "invading",
        "invasion",
        "compress",
        "between",
        "contact",
        "relationship",
    ),
    "anterior-posterior depth": ("anterior", "posterior", "ventral", "dorsal", "front", "behind", "retro"),
    "vertical position": (
        "upper",
        "lower",
        "superior",
        "inferior",
        "apical",
        "apex",
        "basal",
        "cranial",
        "caudal",
        "above",
        "below",
        "level of",
    ),
    "medial-lateral orientation": (
        "medial",
        "lateral",
        "central",
        "peripheral",
        "subpleural",
        "hilar",
        "perihilar",
        "paramediastinal",
        "paratracheal",
        "paravertebral",
    ),
    "spatial extent and boundaries": (
        "extent",
        "extend",
        "extends",
        "extending",
        "boundary",
        "boundaries",
        "border",
        "margin",
        "spread",
        "diffuse",
        "localized",
        "involve",
        "involving",
        "segment",
        "lobe",
        "zone",
        "region",
    ),
}
SPATIAL_QUESTION_RE = re.compile(r"^\s*(where|which (side|lobe|lung|segment|region|part|zone))\b", re.IGNORECASE)
SPATIAL_COLUMNS: tuple[str, ...] = ("qa_id", "spatial", "category", "judge", "reason")


def _hits(text: str) -> dict[str, int]:
    lowered = text.lower()
    return {
        category: sum(1 for word in words if re.search(rf"\b{re.escape(word)}", lowered))
        for category, words in CATEGORIES.items()
    }


def classify_keywords(question: str, answer: str) -> tuple[bool, str, str]:
    """(spatial, category, reason) from the question's and answer's spatial vocabulary."""
    q_hits, a_hits = _hits(question), _hits(answer)
    total = {c: 2 * q_hits[c] + a_hits[c] for c in CATEGORIES}
    asks_where = bool(SPATIAL_QUESTION_RE.match(question))
    best = max(total, key=lambda c: (total[c], -list(CATEGORIES).index(c)))
    if total[best] == 0 and not asks_where:
        return False, "", "no spatial vocabulary"
    if total[best] == 0:
        best = "spatial extent and boundaries"
    if not asks_where and sum(q_hits.values()) == 0 and total[best] < 2:
        return False, "", "spatial words only in the answer"
    return True, best, f"keywords: {best}"


def parse_spatial_judgement(text: str) -> tuple[bool, str]:
    """(spatial, category) from the judge's reply: ``{"spatial": true, "category": "..."}`` as the prompt
    asks, or ``Spatial: yes`` / ``Category: ...`` lines, with the usual drift (see ``parse_spatial_reply``).
    """
    from rad3d_pipeline.llm.parsers import parse_spatial_reply

    if not clean_reply(text):
        raise ParseError("empty spatial judgement")
    return parse_spatial_reply(text, tuple(CATEGORIES))


def classify_frame(frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for qa_id, q, a in zip(frame["qa_id"], frame["question"], frame["answer"], strict=True):
        spatial, category, reason = classify_keywords(str(q), str(a))
        rows.append(
            {"qa_id": str(qa_id), "spatial": spatial, "category": category, "judge": "keywords", "reason": reason}
        )
    return pd.DataFrame(rows, columns=list(SPATIAL_COLUMNS))


def write_spatial_jsonl(rows: pd.DataFrame, path: Path) -> int:
    """The spatial subset in the companion benchmark's JSONL format; returns the row count."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with tmp.open("w", encoding="utf-8") as handle:
        for image, q, a, c in zip(rows["image_path"], rows["question"], rows["answer"], rows["category"], strict=True):
            handle.write(json.dumps({"image_path": image, "question": q, "answer": a, "category": c}) + "\n")
    tmp.replace(path)
    return len(rows)

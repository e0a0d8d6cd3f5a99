"""Parsers for the paper's "Desired format" replies (Figures 11, 12, 13, 17).

Tolerant of the usual variations: numbering styles, bold/italic markers, stray
whitespace, code fences, and a ``<think>...</think>`` block from reasoning models. Each
parser raises :class:`ParseError` with the reason when a reply does not fit.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass

SCORE_DIMENSIONS: tuple[str, ...] = (
    "Visual Verifiability",
    "Specificity & Clarity",
    "Answer Appropriateness",
    "Q-A Alignment",
    "Linguistic Quality",
)
TASK3_ASPECTS: tuple[str, ...] = ("Size", "Diameter", "Thickness")

_THINK_RE = re.compile(r"<think>.*?(</think>|$)", re.DOTALL | re.IGNORECASE)
_FENCE_RE = re.compile(r"```[a-zA-Z]*")
_MARKUP_RE = re.compile(r"(\*\*|__|(?<!\w)\*(?!\s)|(?<!\s)\*(?!\w)|`)")


class ParseError(ValueError):
    """A reply that does not fit the expected format; the message says why."""


def clean_reply(text: str) -> str:
    """Drop reasoning blocks, code fences and bold/italic markers; normalise whitespace."""
    text = _THINK_RE.sub("", text)
    text = _FENCE_RE.sub("", text)
    text = _MARKUP_RE.sub("", text)
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.replace("\r\n", "\n").split("\n")]
    return "\n".join(lines).strip()


@dataclass(frozen=True)
class GeneratedQA:
    index: int  # 1-6 in the Task 1-2 prompt; 0 for Task 3
    question: str
    answer: str
    aspect: str = ""


_QA_RE = re.compile(
    r"Question\s*-?\s*(?P<n>\d)?\s*[:.)]\s*(?P<q>.+?)\s*(?:\n\s*|\s+)Answer\s*(?:-?\s*\d)?\s*[:.)]\s*(?P<a>.+?)\s*"
    r"(?=\n\s*(?:\d\s*[).]|Question|[A-Z][a-z]+ (?:observation|type|feature|position|diagnosis))|\Z)",
    re.DOTALL | re.IGNORECASE,
)


def _one_line(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().strip('"').strip()


def _json_payload(cleaned: str) -> object | None:
    """The JSON value of a JSON-mode reply, or None when the reply is not JSON."""
    match = re.search(r"[\[{].*[\]}]", cleaned, re.DOTALL)
    if match is None:
        return None
    try:
        value: object = json.loads(match.group(0))
    except json.JSONDecodeError:
        return None
    return value


def _json_pairs(payload: object) -> list[GeneratedQA] | None:
    """Pairs from JSON such as ``{"pairs": [{"question": ..., "answer": ...}, ...]}`` or a bare list."""
    items = payload
    if isinstance(payload, dict):
        lists = [v for v in payload.values() if isinstance(v, list)]
        items = lists[0] if lists else None
    if not isinstance(items, list) or not all(isinstance(i, dict) for i in items):
        return None
    pairs = []
    for number, item in enumerate(items, 1):
        lowered = {str(k).lower(): v for k, v in item.items()}
        question, answer = lowered.get("question"), lowered.get("answer")
        if not isinstance(question, str) or not isinstance(answer, str):
            return None
        aspect = str(lowered.get("aspect", ""))
        pairs.append(GeneratedQA(int(lowered.get("index", number)), _one_line(question), _one_line(answer), aspect))
    return pairs


def parse_task12(text: str) -> list[GeneratedQA]:
    """Exactly six ``Question-N: ...? Answer: ...`` pairs, numbered 1-6 (numbering inferred in order).

    JSON-mode replies (a list of objects with question and answer) are accepted too.
    """
    cleaned = clean_reply(text)
    from_json = _json_pairs(_json_payload(cleaned)) if cleaned[:1] in "[{" else None
    if from_json is not None:
        if sorted(p.index for p in from_json) != [1, 2, 3, 4, 5, 6]:
            raise ParseError(f"expected 6 question-answer pairs numbered 1-6, found {len(from_json)}")
        return sorted(from_json, key=lambda p: p.index)
    pairs = []
    for i, match in enumerate(_QA_RE.finditer(cleaned), 1):
        number = int(match.group("n")) if match.group("n") else i
        question, answer = _one_line(match.group("q")), _one_line(match.group("a"))
        if not question or not answer:
            raise ParseError(f"pair {number}: empty question or answer")
        pairs.append(GeneratedQA(number, question, answer))
    if len(pairs) != 6:
        raise ParseError(f"expected 6 question-answer pairs, found {len(pairs)}")
    numbers = sorted(p.index for p in pairs)
    if numbers != [1, 2, 3, 4, 5, 6]:
        raise ParseError(f"expected questions numbered 1-6, found {numbers}")
    return sorted(pairs, key=lambda p: p.index)


_SENTENCE_RE = re.compile(r"^\s*(?:\d+\s*[).:\-]+\s*)?Sentence\s*-?\s*\d*\s*[:.)]\s*(?P<s>.+?)\s*$", re.IGNORECASE)


def parse_task3_stage1(text: str) -> list[str]:
    """The measurement sentences of the stage-1 reply (an empty reply means none)."""
    cleaned = clean_reply(text)
    sentences = []
    for line in cleaned.split("\n"):
        match = _SENTENCE_RE.match(line)
        if match:
            sentences.append(_one_line(match.group("s")).replace("\\n", "").strip())
    if not sentences and re.search(r"\d", cleaned) and "Sentence" in cleaned:
        raise ParseError("stage-1 reply mentions sentences but none is in the 'N). Sentence-N: ...' format")
    return sentences


def parse_task3_stage2(text: str) -> GeneratedQA:
    """``Aspect`` line (Size, Diameter or Thickness) then ``Question: ...? Answer: ...`` (or JSON)."""
    cleaned = clean_reply(text)
    if cleaned[:1] == "{":
        payload = _json_payload(cleaned)
        pairs = _json_pairs([payload]) if isinstance(payload, dict) else None
        if pairs:
            aspect = pairs[0].aspect.capitalize()
            if aspect not in TASK3_ASPECTS:
                raise ParseError(f"aspect {pairs[0].aspect!r} is not Size, Diameter or Thickness")
            return GeneratedQA(0, pairs[0].question, pairs[0].answer, aspect)
    aspect_match = re.search(r"\b(Size|Diameter|Thickness)\b", cleaned, re.IGNORECASE)
    qa_match = re.search(
        r"Question\s*[:.)]\s*(?P<q>.+?)\s*Answer\s*[:.)]\s*(?P<a>.+)", cleaned, re.DOTALL | re.IGNORECASE
    )
    if qa_match is None:
        raise ParseError("no 'Question: ... Answer: ...' in the reply")
    if aspect_match is None or aspect_match.start() > qa_match.start():
        # The aspect line comes first; fall back to the question's own wording.
        aspect_match = re.search(r"\b(Size|Diameter|Thickness)\b", qa_match.group("q"), re.IGNORECASE)
    if aspect_match is None:
        raise ParseError("no aspect (Size, Diameter or Thickness) in the reply")
    answer = _one_line(qa_match.group("a").split("\n")[0])
    question = _one_line(qa_match.group("q"))
    if not question or not answer:
        raise ParseError("empty question or answer")
    return GeneratedQA(0, question, answer, aspect_match.group(1).capitalize())


def _normalise_dimension(name: str) -> str | None:
    squashed = re.sub(r"[^a-z]", "", name.lower())
    for dim in SCORE_DIMENSIONS:
        if re.sub(r"[^a-z]", "", dim.lower()) == squashed:
            return dim
    return None


def parse_scores(text: str) -> dict[str, int]:
    """The five Figure 17 dimensions, each an integer 1-5 (JSON or ``Name: n`` lines)."""
    cleaned = clean_reply(text)
    found: dict[str, int] = {}
    match = re.search(r"\{.*\}", cleaned, re.DOTALL)
    if match:
        try:
            data = json.loads(match.group(0))
        except json.JSONDecodeError:
            data = None
        if isinstance(data, dict):
            for name, value in data.items():
                dim = _normalise_dimension(str(name))
                if dim is not None:
                    try:
                        found[dim] = int(float(value))
                    except (TypeError, ValueError):
                        raise ParseError(f"score of {dim!r} is not a number: {value!r}") from None
    if len(found) < len(SCORE_DIMENSIONS):
        for line in cleaned.split("\n"):
            m = re.match(r'^\s*(?:\d+\s*[.)]\s*)?"?([A-Za-z &\-]+?)"?\s*[:=-]\s*(\d+(?:\.\d+)?)', line)
            if m:
                dim = _normalise_dimension(m.group(1))
                if dim is not None:
                    found.setdefault(dim, int(float(m.group(2))))
    missing = [d for d in SCORE_DIMENSIONS if d not in found]
    if missing:
        raise ParseError(f"missing score(s): {', '.join(missing)}")
    bad = {d: v for d, v in found.items() if not 1 <= v <= 5}
    if bad:
        raise ParseError(f"scores outside 1-5: {bad}")
    return {d: found[d] for d in SCORE_DIMENSIONS}

"""Parsers for the LLM replies: the JSON each prompt asks for and the paper's own reply formats.

Each template's reply is read first as JSON (the shape of :mod:`rad3d_pipeline.llm.schemas`,
anywhere in the reply: bare, in a code fence, after prose), then in the paper's text formats:

- Tasks 1-2 (Figure 11): six ``Question-N: ...? Answer: ...`` pairs, with or without the aspect
  headings; numbering ``Question-1:``, ``Question 1:``, ``Q1:``, ``1. Question:``, ``1)`` or none
  (inferred in order); the answer on the question's line or the next; a markdown table.
- Task 3, stage 1 (Figure 12): ``1). Sentence-1: ...`` lines (other numberings, bullets, the
  paper's literal ``\\n``); an empty reply or a statement that there is none means no sentence.
- Task 3, stage 2 (Figure 13): the aspect (a bare line, ``Aspect: Size``, ``Aspect(Size)``, ``2).
  Diameter``) then ``Question: ...? Answer: ...`` (``Q:``/``A:``, on one line or several).
- Scoring (Figure 17): the ``VolumeName, Visual Verifiability, ...`` header and a CSV row (with or
  without the reasons after it, ``test\\_806\\_a\\_2.nii.gz``-style escapes), ``Name (4):`` and
  ``**Name (4):**`` lines, ``Name: 4`` lines, markdown tables (a column or a row per dimension).
  Scores found in several places must agree.
- Spatial judge: ``{"spatial": ..., "category": ...}`` or ``Spatial: yes`` / ``Category: ...`` lines.

Everywhere: ``<think>...</think>`` blocks, code fences, bold/italic markers, markdown escapes and
prose before or after are tolerated. Question, answer and sentence texts are normalised the same
way whichever format they came in (one line, markers and escapes removed, outer quotes stripped),
so a JSON reply and its paper-format rendering give equal values. A reply that does not fit raises
:class:`ParseError` with the reason.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass

SCORE_DIMENSIONS: tuple[str, ...] = (
    "Visual Verifiability",
    "Specificity & Clarity",
    "Answer Appropriateness",
    "Q-A Alignment",
    "Linguistic Quality",
)
TASK3_ASPECTS: tuple[str, ...] = ("Size", "Diameter", "Thickness")
TASK12_ASPECTS: tuple[str, ...] = (
    "Anatomical observation",
    "Pathological observation",
    "Abnormality type",
    "Abnormality feature",
    "Abnormality position",
    "Abnormality or normality diagnosis",
)
SPATIAL_CATEGORIES: tuple[str, ...] = (
    "laterality and bilateral symmetry",
    "adjacency and containment",
    "anterior-posterior depth",
    "vertical position",
    "medial-lateral orientation",
    "spatial extent and boundaries",
)

_THINK_RE = re.compile(r"<(think|thinking|reasoning)>.*?(</\1>|\Z)", re.DOTALL | re.IGNORECASE)
_THINK_END_RE = re.compile(r"^.*</(?:think|thinking|reasoning)>", re.DOTALL | re.IGNORECASE)
_FENCE_RE = re.compile(r"```[a-zA-Z]*")
_MARKUP_RE = re.compile(r"(?<!\\)(\*\*|__|(?<!\w)\*(?!\s)|(?<!\s)\*(?!\w)|`)")
_ESCAPE_RE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!|>~<])")


class ParseError(ValueError):
    """A reply that does not fit the expected format; the message says why."""


def strip_reasoning(text: str) -> str:
    """The reply without ``<think>`` blocks (an unclosed one runs to the end; a lone closing tag ends one)."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = _THINK_RE.sub("", text)
    return _THINK_END_RE.sub("", text)


def clean_reply(text: str) -> str:
    """Drop reasoning blocks, code fences and bold/italic markers; normalise whitespace."""
    text = _FENCE_RE.sub("", strip_reasoning(text))
    text = _MARKUP_RE.sub("", text)
    lines = [re.sub(r"[ \t]+", " ", line).strip() for line in text.split("\n")]
    return "\n".join(lines).strip()


def _text_lines(text: str) -> list[str]:
    """The reply as clean lines: reasoning, fences, markers and markdown escapes removed."""
    return [_ESCAPE_RE.sub(r"\1", line) for line in clean_reply(text).split("\n")]


def normalise_text(text: str) -> str:
    """A question, answer or sentence as the parsers return it, whichever format it came in.

    One line; bold/italic markers, backticks and markdown escapes removed; outer quotes and a
    trailing separator stripped. Repeated to a fixed point, so a value rendered again reads the same.
    """
    while True:
        new = _ESCAPE_RE.sub(r"\1", _MARKUP_RE.sub("", text))
        new = re.sub(r"\s+", " ", new).strip()
        new = re.sub(r"\s+[|\-–—]+$", "", new)  # a separator left before an "Answer" label
        new = new.strip().strip('"').strip()
        if new == text:
            return new
        text = new


@dataclass(frozen=True)
class GeneratedQA:
    index: int  # 1-6 in the Task 1-2 prompt; 0 for Task 3
    question: str
    answer: str
    aspect: str = ""


# --- JSON ------------------------------------------------------------------------------------------


def _json_values(text: str) -> Iterator[object]:
    """Every JSON object or array in the reply, outermost first, left to right."""
    decoder = json.JSONDecoder()
    text = strip_reasoning(text)
    pos = 0
    while True:
        starts = [i for i in (text.find("{", pos), text.find("[", pos)) if i >= 0]
        if not starts:
            return
        start = min(starts)
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError:
            pos = start + 1
            continue
        except RecursionError:  # nested beyond reason: not a reply's JSON
            return
        yield value
        pos = end


def _lowered(item: dict[str, object]) -> dict[str, object]:
    return {str(k).strip().lower(): v for k, v in item.items()}


def _json_pair(item: object, number: int) -> GeneratedQA | None:
    if not isinstance(item, dict):
        return None
    lowered = _lowered(item)
    question, answer = lowered.get("question"), lowered.get("answer")
    if not isinstance(question, str) or not isinstance(answer, str):
        return None
    index = lowered.get("index", number)
    if isinstance(index, str) and index.strip().isdigit():
        index = int(index)
    if not isinstance(index, int) or isinstance(index, bool):
        raise ParseError(f"pair {number}: index {index!r} is not a number")
    aspect = lowered.get("aspect", "")
    return GeneratedQA(index, normalise_text(question), normalise_text(answer), str(aspect or "").strip())


def _json_pairs(payload: object) -> list[GeneratedQA] | None:
    """Pairs from JSON such as ``{"pairs": [{"question": ..., "answer": ...}, ...]}`` or a bare list."""
    items = payload
    if isinstance(payload, dict):
        lists = [v for v in payload.values() if isinstance(v, list)]
        items = lists[0] if lists else None
    if not isinstance(items, list) or not items or not all(isinstance(i, dict) for i in items):
        return None
    pairs = [_json_pair(item, number) for number, item in enumerate(items, 1)]
    if any(p is None for p in pairs):
        return None
    return [p for p in pairs if p is not None]


# --- Tasks 1-2 (Figure 11) ------------------------------------------------------------------------

_LEAD = r"[\s>*\-•#+]*"  # bullets, quote and heading marks before a label
_ASPECTS = "|".join(TASK12_ASPECTS)
_BASIS = r"\((?:based on\s*)?(?:findings|impressions)\)"
_HEADING_RE = re.compile(
    rf"^{_LEAD}(?:(?:\(?\d\s*[).:\]]+\s*)(?:{_ASPECTS})(?:\s*{_BASIS})?|(?:{_ASPECTS})\s*{_BASIS})\s*[:\-–—]?\s*",
    re.IGNORECASE,
)
_Q_LABEL = r"(?:Question|(?-i:Q))\s*[-#]?\s*(?P<n2>\d)?\s*[:.)\]\-–—]"
_Q_START_RE = re.compile(rf"^{_LEAD}(?:\(?(?P<n1>\d)\s*[).:\]]+\s*)?{_Q_LABEL}\s*", re.IGNORECASE)
_NUMBERED_RE = re.compile(rf"^{_LEAD}\(?(?P<n1>\d)\s*[).:\]]+\s+", re.IGNORECASE)
_A_LABEL_RE = re.compile(
    r"(?:^|(?<=[\s?.!]))(?:(?:Answer|Ans)\s*[-#]?\s*\d?\s*(?:[:)\]\-–—]|\.(?=\s|$))|(?-i:A)\d?\s*:)\s*",
    re.IGNORECASE,
)

_A_LABEL_ML_RE = re.compile(_A_LABEL_RE.pattern, re.IGNORECASE | re.MULTILINE)


def _split_answer(block: list[str]) -> tuple[str, str] | None:
    """(question, answer) from the lines after a question label, or None when there is no answer label."""
    for i, line in enumerate(block):
        match = _A_LABEL_RE.search(line)
        if match is None:
            continue
        question = " ".join([*block[:i], line[: match.start()]])
        answer = line[match.end() :]
        if not answer.strip():
            answer = next((x for x in block[i + 1 :] if x.strip()), "")
        return question, answer
    return None


def _table_rows(lines: list[str]) -> list[list[list[str]]]:
    """Markdown tables in the reply: lists of rows of cells (separator rows dropped)."""
    tables: list[list[list[str]]] = []
    current: list[list[str]] = []
    for line in [*lines, ""]:
        stripped = line.strip()
        if stripped.startswith("|") and stripped.count("|") >= 2:
            if re.fullmatch(r"[|:\-\s]+", stripped):
                continue
            current.append([c.strip() for c in stripped.strip("|").split("|")])
            continue
        if current:
            tables.append(current)
            current = []
    return tables


def _task12_table(lines: list[str]) -> list[GeneratedQA] | None:
    for table in _table_rows(lines):
        header = [c.lower() for c in table[0]]
        q_col = next((i for i, c in enumerate(header) if "question" in c), None)
        a_col = next((i for i, c in enumerate(header) if "answer" in c), None)
        if q_col is None or a_col is None:
            continue
        n_col = next((i for i, c in enumerate(header) if c in {"#", "no", "no.", "n", "number", "index"}), None)
        pairs = []
        for number, row in enumerate(table[1:], 1):
            if len(row) <= max(q_col, a_col):
                raise ParseError(f"table row {number} has {len(row)} cells")
            index = number
            if n_col is not None and re.fullmatch(r"\d", row[n_col].strip("().")):
                index = int(row[n_col].strip("()."))
            pairs.append(GeneratedQA(index, normalise_text(row[q_col]), normalise_text(row[a_col])))
        return pairs
    return None


def _task12_text(lines: list[str]) -> list[GeneratedQA]:
    lines = [_HEADING_RE.sub("", line, count=1) for line in lines]
    starts = [(i, m) for i, line in enumerate(lines) if (m := _Q_START_RE.match(line))]
    if not starts:  # "1. What ...? Answer: ..." with no question label
        starts = [(i, m) for i, line in enumerate(lines) if (m := _NUMBERED_RE.match(line))]
    pairs: list[GeneratedQA] = []
    unanswered: list[int] = []
    for k, (i, match) in enumerate(starts):
        end = starts[k + 1][0] if k + 1 < len(starts) else len(lines)
        split = _split_answer([lines[i][match.end() :], *lines[i + 1 : end]])
        groups = match.groupdict()
        number = int(groups.get("n2") or groups.get("n1") or len(pairs) + 1)
        if split is None:
            unanswered.append(number)
            continue
        pairs.append(GeneratedQA(number, normalise_text(split[0]), normalise_text(split[1])))
    if len(pairs) != 6 and unanswered:
        raise ParseError(f"expected 6 question-answer pairs, found {len(pairs)} (no 'Answer:' after {unanswered})")
    return pairs


def _check_six(pairs: list[GeneratedQA]) -> list[GeneratedQA]:
    if len(pairs) != 6:
        raise ParseError(f"expected 6 question-answer pairs, found {len(pairs)}")
    numbers = sorted(p.index for p in pairs)
    if numbers != [1, 2, 3, 4, 5, 6]:
        raise ParseError(f"expected questions numbered 1-6, found {numbers}")
    for p in pairs:
        if not p.question or not p.answer:
            raise ParseError(f"pair {p.index}: empty question or answer")
    return sorted(pairs, key=lambda p: p.index)


def parse_task12(text: str) -> list[GeneratedQA]:
    """Exactly six question-answer pairs numbered 1-6 (JSON, the Figure 11 format, or a table)."""
    for value in _json_values(text):
        pairs = _json_pairs(value)
        if pairs is not None:
            return _check_six(pairs)
    lines = _text_lines(text)
    table = _task12_table(lines)
    return _check_six(table if table is not None else _task12_text(lines))


# --- Task 3 (Figures 12 and 13) -------------------------------------------------------------------

_SENTENCE_RE = re.compile(
    rf"^{_LEAD}(?:\(?\d+\s*[).:\]]+\s*)?Sentence\s*[-#]?\s*\d*\s*[:.)\]\-–—]\s*(?P<s>.*)$", re.IGNORECASE
)
_LIST_ITEM_RE = re.compile(r"^(?:\(?\d+\s*[).:\]]+|[-*•+])\s+(?P<s>.+)$")
_NONE_RE = re.compile(
    r"^\W*(?:none|n/?a|nil|no output\W*)\W*$|\bno\b.*\b(?:sentences?|numerical|numbers?|measurements?|values?)\b"
    r"|\bnone\b.*\b(?:found|contain|present)",
    re.IGNORECASE,
)


def _sentence_text(raw: str) -> str:
    return normalise_text(raw.replace("\\n", " "))


def parse_task3_stage1(text: str) -> list[str]:
    """The measurement sentences of the stage-1 reply (an empty reply, or one saying there is none: [])."""
    for value in _json_values(text):
        items = value
        if isinstance(value, dict):
            lowered = _lowered(value)
            items = lowered.get("sentences", next((v for v in lowered.values() if isinstance(v, list)), None))
        if isinstance(items, list) and all(isinstance(s, str) for s in items):
            sentences = [_sentence_text(s) for s in items]
            return [s for s in sentences if s]
    # The paper's desired format ends each line with a literal "\n", which some models copy.
    lines = "\n".join(_text_lines(text)).replace("\\n", "\n").split("\n")
    labelled = [m.group("s") for line in lines if (m := _SENTENCE_RE.match(line))]
    if not labelled:
        labelled = [m.group("s") for line in lines if (m := _LIST_ITEM_RE.match(line))]
    plain = [line for line in lines if line.strip()]
    if not labelled and plain and all(re.search(r"\d", line) for line in plain):
        labelled = plain  # one sentence a line, unnumbered
    sentences = [s for s in (_sentence_text(x) for x in labelled) if s]
    if sentences:
        return sentences
    rest = " ".join(line for line in lines if line.strip())
    if not rest or _NONE_RE.search(rest):
        return []
    raise ParseError("no 'N). Sentence-N: ...' line and no statement that there is none")


_ASPECT_WORD = r"(Size|Diameter|Thickness)"
_ASPECT_LABEL_RE = re.compile(
    rf"\baspect\s*(?:is\s*)?[:(\-–—=]?\s*(?:is\s*)?[:\-]?\s*{_ASPECT_WORD}\b",
    re.IGNORECASE,
)
_ASPECT_LINE_RE = re.compile(rf"^{_LEAD}(?:\(?\d\s*[).:\]]+\s*)?{_ASPECT_WORD}\W*$", re.IGNORECASE)
_STAGE2_Q_RE = re.compile(r"(?:^|(?<=\s))(?:Question|(?-i:Q))\s*[:.)\]\-–—]\s*", re.IGNORECASE | re.MULTILINE)


def _aspect(value: str) -> str:
    aspect = value.strip().capitalize()
    if aspect not in TASK3_ASPECTS:
        raise ParseError(f"aspect {value!r} is not Size, Diameter or Thickness")
    return aspect


def parse_task3_stage2(text: str) -> GeneratedQA:
    """The aspect (Size, Diameter or Thickness) and one ``Question: ...? Answer: ...`` (or JSON)."""
    for value in _json_values(text):
        if isinstance(value, dict):
            pair = _json_pair(value, 0)
            if pair is not None:
                if not pair.question or not pair.answer:
                    raise ParseError("empty question or answer")
                return GeneratedQA(0, pair.question, pair.answer, _aspect(pair.aspect))
    cleaned = "\n".join(_text_lines(text))
    cleaned = re.sub(r"\(\s*Size\s*,\s*Diameter\s*(?:,|or)\s*Thickness\s*\)", "", cleaned, flags=re.IGNORECASE)
    questions = list(_STAGE2_Q_RE.finditer(cleaned))
    if not questions:
        raise ParseError("no 'Question: ... Answer: ...' in the reply")
    a_match = _A_LABEL_ML_RE.search(cleaned, questions[0].end())
    if a_match is None:
        raise ParseError("no 'Answer:' after the question")
    q_match = [q for q in questions if q.end() <= a_match.start()][-1]  # "the question:" in prose comes earlier
    head = cleaned[: q_match.start()]
    question = normalise_text(cleaned[q_match.end() : a_match.start()])
    after = cleaned[a_match.end() :].split("\n")
    answer = normalise_text(after[0] if after[0].strip() else next((x for x in after[1:] if x.strip()), ""))
    if not question or not answer:
        raise ParseError("empty question or answer")
    aspect: str | None = None
    if label := _ASPECT_LABEL_RE.search(head):
        aspect = label.group(1)
    elif lines := [m.group(1) for line in head.split("\n") if (m := _ASPECT_LINE_RE.match(line))]:
        aspect = lines[-1]
    else:
        for source in (head, question):
            found = {w.capitalize() for w in re.findall(rf"\b{_ASPECT_WORD}\b", source, re.IGNORECASE)}
            if len(found) == 1:
                aspect = found.pop()
                break
            if len(found) > 1:
                raise ParseError(f"several aspects and none chosen: {sorted(found)}")
    if aspect is None:
        raise ParseError("no aspect (Size, Diameter or Thickness) in the reply")
    return GeneratedQA(0, question, answer, _aspect(aspect))


# --- Scoring (Figure 17) --------------------------------------------------------------------------


def _squash(name: str) -> str:
    return re.sub(r"[^a-z]", "", re.sub(r"\band\b", "", name.lower()))


_DIMENSION_KEYS = {_squash(d): d for d in SCORE_DIMENSIONS}


def _normalise_dimension(name: str) -> str | None:
    return _DIMENSION_KEYS.get(_squash(name))


_NUMBER = r"(\d+(?:\.\d+)?)"
_SCORE_LINE_RE = re.compile(
    rf"^{_LEAD}(?:\(?\d\s*[).:\]]+\s*)?\"?(?P<name>[A-Za-z][A-Za-z &/\-]*?)\"?\s*"
    rf"(?:\(\s*(?:score\s*[:=]?\s*)?{_NUMBER}\s*(?:/\s*5)?\s*\)"
    rf"|(?:[:=,\-–—]\s*|\s+)(?:score\s*[:=]?\s*)?{_NUMBER}\s*(?:/\s*5|out of 5)?(?!\.?\d))",
    re.IGNORECASE,
)
_SCORE_ONLY_RE = re.compile(rf"^{_LEAD}score\s*[:=\-]?\s*{_NUMBER}\s*(?:/\s*5)?\b", re.IGNORECASE)


def _score_value(dim: str, raw: object) -> int:
    if isinstance(raw, bool):
        raise ParseError(f"score of {dim!r} is not a number: {raw!r}")
    if isinstance(raw, dict):
        inner = _lowered(raw)
        raw = inner.get("score", inner.get("value"))
    try:
        number = float(str(raw).strip().split("/")[0])
    except ValueError:
        raise ParseError(f"score of {dim!r} is not a number: {raw!r}") from None
    if number != int(number):
        raise ParseError(f"score of {dim!r} is not a whole number: {raw!r}")
    return int(number)


class _Scores:
    """Scores found so far; a dimension read twice must read the same."""

    def __init__(self) -> None:
        self.found: dict[str, int] = {}

    def add(self, name: str, raw: object) -> bool:
        dim = _normalise_dimension(name)
        if dim is None:
            return False
        value = _score_value(dim, raw)
        if self.found.setdefault(dim, value) != value:
            raise ParseError(f"conflicting scores for {dim}: {self.found[dim]} and {value}")
        return True


def _json_scores(value: object, scores: _Scores) -> None:
    if isinstance(value, list):
        for item in value:
            _json_scores(item, scores)
        return
    if not isinstance(value, dict):
        return
    lowered = _lowered(value)
    name = lowered.get("dimension", lowered.get("name"))
    if isinstance(name, str) and ("score" in lowered or "value" in lowered):
        scores.add(name, lowered.get("score", lowered.get("value")))
    for key, item in value.items():
        if _normalise_dimension(str(key)) is not None:
            scores.add(str(key), item)
        elif isinstance(item, dict | list):
            _json_scores(item, scores)


def _split_cells(line: str) -> list[str]:
    stripped = line.strip()
    if stripped.startswith("|"):
        return [c.strip() for c in stripped.strip("|").split("|")]
    delimiter = "\t" if "\t" in stripped else (";" if stripped.count(";") > stripped.count(",") else ",")
    return [c.strip().strip('"').strip() for c in next(csv.reader([stripped], delimiter=delimiter))]


def _csv_scores(lines: list[str], scores: _Scores) -> None:
    """Figure 17's header line (``VolumeName, Visual Verifiability, ...``) and the row(s) under it."""
    for i, line in enumerate(lines):
        header = _split_cells(line) if ("," in line or "|" in line or "\t" in line or ";" in line) else []
        dims = [_normalise_dimension(c) for c in header]
        if len({d for d in dims if d}) < len(SCORE_DIMENSIONS):
            continue
        rows: list[list[str]] = []
        for row_line in lines[i + 1 :]:
            if not row_line.strip():
                if rows:
                    break
                continue
            if re.fullmatch(r"[|:\-\s]+", row_line.strip()):
                continue
            cells = _split_cells(row_line)
            if len(cells) < len(SCORE_DIMENSIONS) or not all(
                re.fullmatch(r"\d+(?:\.\d+)?", c) for c in cells[-len(SCORE_DIMENSIONS) :]
            ):
                break
            rows.append(cells)
        for cells in rows:
            if len(cells) == len(header) - 1 and dims[0] is None:
                cells = ["", *cells]  # the VolumeName cell left out
            if len(cells) != len(header):
                raise ParseError(f"score row has {len(cells)} cells for {len(header)} columns")
            for dim, cell in zip(dims, cells, strict=True):
                if dim is not None:
                    scores.add(dim, cell)


def _table_scores(lines: list[str], scores: _Scores) -> None:
    """Markdown tables with a row per dimension (``| Visual Verifiability | 4 | reason |``)."""
    for table in _table_rows(lines):
        for row in table:
            for i, cell in enumerate(row):
                if _normalise_dimension(cell) is None:
                    continue
                number = next((c for c in row[i + 1 :] if re.fullmatch(r"\d+(?:\.\d+)?(?:\s*/\s*5)?", c)), None)
                if number is not None:
                    scores.add(cell, number)
                break


def _line_scores(lines: list[str], scores: _Scores) -> None:
    """``Name (4): reason``, ``Name: 4``, ``Name - 4/5`` lines; a name line then ``Score: 4``."""
    for i, line in enumerate(lines):
        if line.lstrip().startswith("|"):
            continue
        match = _SCORE_LINE_RE.match(line)
        if match and scores.add(match.group("name"), match.group(2) or match.group(3)):
            continue
        bare = re.sub(rf"^{_LEAD}(?:\(?\d\s*[).:\]]+\s*)?", "", line).rstrip(":").strip()
        if _normalise_dimension(bare) is not None:
            following = next((x for x in lines[i + 1 :] if x.strip()), "")
            score = _SCORE_ONLY_RE.match(following)
            if score:
                scores.add(bare, score.group(1))


def parse_scores(text: str) -> dict[str, int]:
    """The five Figure 17 dimensions, each an integer 1-5, from JSON or the paper's formats.

    A JSON reply with all five is read alone (its reasons may quote other numbers); otherwise the
    CSV row, tables and lines are read together and must agree where they overlap.
    """
    scores = _Scores()
    for value in _json_values(text):
        _json_scores(value, scores)
    if len(scores.found) < len(SCORE_DIMENSIONS):
        scores = _Scores()
        lines = _text_lines(text)
        _csv_scores(lines, scores)
        _table_scores(lines, scores)
        _line_scores(lines, scores)
    found = scores.found
    missing = [d for d in SCORE_DIMENSIONS if d not in found]
    if missing:
        raise ParseError(f"missing score(s): {', '.join(missing)}")
    bad = {d: v for d, v in found.items() if not 1 <= v <= 5}
    if bad:
        raise ParseError(f"scores outside 1-5: {bad}")
    return {d: found[d] for d in SCORE_DIMENSIONS}


# --- Spatial judge --------------------------------------------------------------------------------

_YES = {"yes", "true", "y", "1", "spatial"}
_NO = {"no", "false", "n", "0", "not spatial", "non-spatial", "nonspatial"}
_SPATIAL_KEY_RE = re.compile(
    r"^(?:is[ _]?)?(?:spatial(?:[ _]reasoning)?(?:[ _]required)?|requires?[ _]spatial(?:[ _]reasoning)?|verdict)$",
    re.IGNORECASE,
)
_SPATIAL_LINE_RE = re.compile(
    rf"^{_LEAD}(?:\(?\d\s*[).:\]]+\s*)?(?P<key>[A-Za-z _]+?)\s*[:=\-–—]\s*(?P<value>.*)$", re.IGNORECASE
)


def _verdict(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    word = re.sub(r"[^a-z\- ]", "", str(raw).strip().lower()).strip()
    if word in _YES:
        return True
    if word in _NO:
        return False
    first = word.split(" ")[0] if word else ""
    if first in {"yes", "true"}:
        return True
    if first in {"no", "false"}:
        return False
    raise ParseError(f"'spatial' must be true or false, not {raw!r}")


def _category(raw: object, categories: tuple[str, ...]) -> str:
    text = re.sub(r"\s+", " ", str(raw or "")).strip().strip("\"'.").strip().lower()
    if text in {"", "none", "n/a", "na", "null", "-", "not applicable"}:
        return ""
    if text.isdigit() and 1 <= int(text) <= len(categories):
        return categories[int(text) - 1]
    text = re.sub(r"^\d\s*[).:]\s*", "", text)
    if text in categories:
        return text
    named = [c for c in categories if c in text]
    if len(named) == 1:
        return named[0]
    return text  # not a category: the caller says so


def parse_spatial_reply(text: str, categories: tuple[str, ...] = SPATIAL_CATEGORIES) -> tuple[bool, str]:
    """(spatial, category) from ``{"spatial": true, "category": "..."}`` or ``Spatial: yes`` / ``Category:`` lines."""
    spatial: bool | None = None
    category = ""
    for value in _json_values(text):
        if isinstance(value, dict):
            lowered = _lowered(value)
            key = next((k for k in lowered if _SPATIAL_KEY_RE.match(k)), None)
            if key is not None:
                spatial = _verdict(lowered[key])
                category = _category(lowered.get("category", ""), categories)
                break
    if spatial is None:
        for line in _text_lines(text):
            match = _SPATIAL_LINE_RE.match(line)
            if match is None:
                continue
            key = match.group("key").strip()
            if spatial is None and _SPATIAL_KEY_RE.match(key):
                spatial = _verdict(match.group("value"))
            elif key.lower() == "category" and not category:
                category = _category(match.group("value"), categories)
    if spatial is None:
        raise ParseError("no spatial verdict (JSON 'spatial' or a 'Spatial: yes/no' line)")
    if not spatial:
        return False, ""
    if category not in categories:
        raise ParseError(f"unknown category {category!r}")
    return True, category

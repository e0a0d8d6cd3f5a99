"""The LLM reply parsers: the JSON the prompts ask for and the paper's own reply formats.

Unit tests per format (real-looking drifted replies, and replies that must be rejected), the
strict JSON schemas (OpenAI's strict-mode rules, a conforming reply parses), and property-style
tests: random question-answer and score content rendered in every paper format parses to exactly
the value its JSON reply gives.
"""

from __future__ import annotations

import json
import random
import re
import string
from typing import Any

import pytest

from rad3d_pipeline.llm.parsers import (
    SCORE_DIMENSIONS,
    SPATIAL_CATEGORIES,
    TASK3_ASPECTS,
    GeneratedQA,
    ParseError,
    normalise_text,
    parse_scores,
    parse_task3_stage1,
    parse_task3_stage2,
    parse_task12,
)
from rad3d_pipeline.llm.prompts import load_template, starters_for
from rad3d_pipeline.llm.schemas import SCHEMAS, response_format_for
from rad3d_pipeline.quality.spatial_questions import CATEGORIES, parse_spatial_judgement
from tests.llm_server import json_reply as server_json_reply
from tests.llm_server import scripted_reply
from tests.paper_formats import PARSERS, TEMPLATES, render_value, to_paper_format

# --- scoring (Figure 17) ---------------------------------------------------------------------------

FIGURE17_EXAMPLE = """VolumeName, Visual Verifiability, Specificity & Clarity, Answer Appropriateness, Q-A Alignment, Linguistic Quality
test\\_806\\_a\\_2.nii.gz,4,4,5,5,5

Question: Which structures are midline?

Answer: Trachea, bronchi

Clinic Text: Trachea and both main bronchi were in the midline and no obstructive pathology was observed in the lumen...

Reasons:

**Visual Verifiability (4):** "Trachea" is clearly midline and visually verifiable; "bronchi" is ambiguous without specifying main bronchi.

**Specificity & Clarity (4):** The term "bronchi" is too general and could refer to various branches, reducing clarity.

**Answer Appropriateness (5):** The answer includes anatomically relevant and reasonable structures.

**Q-A Alignment (5):** The answer directly responds to the question about midline structures.

**Linguistic Quality (5):** Fluent and grammatically correct.
"""  # noqa: E501  (the paper's Example 1, verbatim)

EXPECTED_806 = dict(zip(SCORE_DIMENSIONS, [4, 4, 5, 5, 5], strict=True))


def test_figure17_header_and_csv_row_with_and_without_reasons() -> None:
    assert parse_scores(FIGURE17_EXAMPLE) == EXPECTED_806
    header_and_row = "\n".join(FIGURE17_EXAMPLE.splitlines()[:2])
    assert parse_scores(header_and_row) == EXPECTED_806
    spaced = header_and_row.replace(",4,4,5,5,5", ", 4, 4, 5, 5, 5  ")
    assert parse_scores(f"<think>\nThe trachea is midline.\n</think>\nHere are my scores:\n\n{spaced}") == EXPECTED_806
    assert parse_scores(f"```csv\n{header_and_row}\n```") == EXPECTED_806
    no_volume = ", ".join(SCORE_DIMENSIONS) + "\n3,4,5,2,1"
    assert list(parse_scores(no_volume).values()) == [3, 4, 5, 2, 1]
    only_reasons = FIGURE17_EXAMPLE.split("Reasons:")[1]
    assert parse_scores(only_reasons) == EXPECTED_806


def test_figure17_row_and_reasons_must_agree() -> None:
    contradicting = FIGURE17_EXAMPLE.replace("**Linguistic Quality (5):**", "**Linguistic Quality (3):**")
    with pytest.raises(ParseError, match="conflicting scores for Linguistic Quality: 5 and 3"):
        parse_scores(contradicting)
    with pytest.raises(ParseError, match="missing score"):
        parse_scores("VolumeName, Visual Verifiability, Specificity & Clarity\ntest_1_a_1.nii.gz,4,4")


@pytest.mark.parametrize(
    "reply",
    [
        "Visual Verifiability (2): vague\nSpecificity & Clarity (4): ok\nAnswer Appropriateness (5): ok\n"
        "Q-A Alignment (5): ok\nLinguistic Quality (3): ok",
        "1. **Visual Verifiability (2/5):** vague\n2. **Specificity & Clarity (4/5):** ok\n"
        "3. **Answer Appropriateness (5/5):** ok\n4. **Q-A Alignment (5/5):** ok\n5. **Linguistic Quality (3/5):** ok",
        "- Visual Verifiability: 2\n- Specificity and Clarity: 4\n- Answer Appropriateness: 5/5\n"
        "- Q-A Alignment - 5\n- Linguistic Quality: **3** (minor issues)",
        "**Visual Verifiability**\nScore: 2\nReason: vague\n\n**Specificity & Clarity**\nScore: 4\n\n"
        "**Answer Appropriateness**\nScore: 5\n\n**Q-A Alignment**\nScore: 5\n\n**Linguistic Quality**\nScore: 3",
        "| VolumeName | Visual Verifiability | Specificity & Clarity | Answer Appropriateness | Q-A Alignment "
        "| Linguistic Quality |\n|---|---|---|---|---|---|\n| test\\_1\\_a\\_1.nii.gz | 2 | 4 | 5 | 5 | 3 |",
        "Here is the evaluation:\n\n| Dimension | Score | Reason |\n|:--|:-:|:--|\n| Visual Verifiability | 2 | vague, "
        "a 36 mm lesion |\n| Specificity & Clarity | 4 | ok |\n| Answer Appropriateness | 5 | ok |\n"
        "| Q-A Alignment | 5 | ok |\n| Linguistic Quality | 3 | ok |",
        '```json\n{\n  "Visual Verifiability": 2,\n  "Specificity & Clarity": 4,\n  "Answer Appropriateness": 5,\n'
        '  "Q-A Alignment": 5,\n  "Linguistic Quality": 3\n}\n```\nThe question is specific.',
        '{"scores": {"Visual Verifiability": {"score": 2, "reason": "Linguistic Quality: 5 is not relevant"}, '
        '"Specificity & Clarity": {"score": 4}, "Answer Appropriateness": {"score": "5"}, '
        '"Q-A Alignment": {"score": 5}, "Linguistic Quality": {"score": 3.0}}}',
        '[{"dimension": "Visual Verifiability", "score": 2}, {"dimension": "Specificity & Clarity", "score": 4}, '
        '{"dimension": "Answer Appropriateness", "score": 5}, {"dimension": "Q-A Alignment", "score": 5}, '
        '{"dimension": "Linguistic Quality", "score": 3}]',
        "<think>Maybe Visual Verifiability: 5? No.</think>Visual Verifiability: 2\nSpecificity & Clarity: 4\n"
        "Answer Appropriateness: 5\nQ-A Alignment: 5\nLinguistic Quality: 3",
    ],
    ids=[
        "paren",
        "bold-numbered-of5",
        "colon-lines",
        "score-under-name",
        "wide-table",
        "long-table",
        "fenced-json",
        "nested-json",
        "json-list",
        "think",
    ],
)
def test_score_formats(reply: str) -> None:
    assert list(parse_scores(reply).values()) == [2, 4, 5, 5, 3]


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("Sorry, here is something else entirely.", "missing score"),
        (
            "Visual Verifiability: 4.5\nSpecificity & Clarity: 4\nAnswer Appropriateness: 5\nQ-A Alignment: 5\n"
            "Linguistic Quality: 3",
            "not a whole number",
        ),
        (
            '{"Visual Verifiability": 6, "Specificity & Clarity": 4, "Answer Appropriateness": 5, '
            '"Q-A Alignment": 5, "Linguistic Quality": 0}',
            "outside 1-5",
        ),
        (
            '{"Visual Verifiability": "high", "Specificity & Clarity": 4, "Answer Appropriateness": 5, '
            '"Q-A Alignment": 5, "Linguistic Quality": 3}',
            "not a number",
        ),
        (
            'Example: {"Visual Verifiability": 3, "Specificity & Clarity": 4, "Answer Appropriateness": 5, '
            '"Q-A Alignment": 5, "Linguistic Quality": 4}\nMine: {"Visual Verifiability": 2, '
            '"Specificity & Clarity": 4, "Answer Appropriateness": 5, "Q-A Alignment": 5, "Linguistic Quality": 4}',
            "conflicting",
        ),
        ('{"Visual Verifiability": 3, "Specificity & Clarity": 4', "missing score"),  # cut off mid-reply
        ("", "missing score"),
    ],
)
def test_bad_score_replies_raise_with_a_reason(reply: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_scores(reply)


# --- Tasks 1-2 (Figure 11) -------------------------------------------------------------------------

QA6 = [
    ("What is the calibre of the trachea?", "Normal"),
    ("Where is the ground-glass density?", "Right lower lobe"),
    ("Which abnormality is in the kidneys?", "Cysts"),
    ("What is the contour of the liver lesion?", "Lobulated"),
    ("Where are the calculi?", "Both kidneys"),
    ("Which disease is suggested?", "Polycystic kidney disease"),
]


def _pairs(pairs: list[GeneratedQA]) -> list[tuple[int, str, str]]:
    return [(p.index, p.question, p.answer) for p in pairs]


EXPECTED_QA6 = [(i, q, a) for i, (q, a) in enumerate(QA6, 1)]

TASK12_REPLIES = {
    "figure11": "\n".join(
        f"{i}). {h} (based on {'Impressions' if i == 6 else 'Findings'})\nQuestion-{i}: {q} Answer: {a}"
        for i, ((q, a), h) in enumerate(
            zip(
                QA6,
                [
                    "Anatomical observation",
                    "Pathological observation",
                    "Abnormality type",
                    "Abnormality feature",
                    "Abnormality position",
                    "Abnormality or normality diagnosis",
                ],
                strict=True,
            ),
            1,
        )
    ),
    "q-numbers-prose-think": "<think>\nFirst the trachea.\n</think>\nHere are the six pairs you asked for:\n\n"
    + "\n".join(f"**Q{i}:** {q}\n**A{i}:** {a}\n" for i, (q, a) in enumerate(QA6, 1))
    + "\nLet me know if you need more.",
    "numbered-lines": "\n".join(f"{i}) {q}\n   Answer: {a}" for i, (q, a) in enumerate(QA6, 1)),
    "numbered-question-labels": "\n".join(f"{i}. Question: {q}  Answer - {a}" for i, (q, a) in enumerate(QA6, 1)),
    "bold-headings-next-line": "```\n"
    + "\n".join(
        f"### {i}. Aspect {i}\n- **Question {i}:** {q}\n- **Answer {i}:**\n  {a}\n" for i, (q, a) in enumerate(QA6, 1)
    )
    + "```",
    "table": "| # | Question | Answer |\n|---|---|---|\n"
    + "\n".join(f"| {i} | {q} | {a} |" for i, (q, a) in enumerate(QA6, 1)),
    "json": json.dumps({"pairs": [{"index": i, "question": q, "answer": a} for i, (q, a) in enumerate(QA6, 1)]}),
    "json-in-prose": "Sure:\n```json\n"
    + json.dumps([{"question": q, "answer": a} for q, a in QA6], indent=1)
    + "\n```\nDone.",
    "unordered": "\n".join(f"Question-{i}: {QA6[i - 1][0]} Answer: {QA6[i - 1][1]}" for i in (2, 1, 3, 6, 5, 4)),
}


@pytest.mark.parametrize("name", list(TASK12_REPLIES))
def test_task12_formats(name: str) -> None:
    assert _pairs(parse_task12(TASK12_REPLIES[name])) == EXPECTED_QA6


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("Question-1: What? Answer: x", "expected 6"),
        ("\n".join(f"Question-1: {q} Answer: {a}" for q, a in QA6), "numbered 1-6"),
        (TASK12_REPLIES["figure11"].replace("Answer: Cysts", "Cysts"), r"no 'Answer:' after \[3\]"),
        (TASK12_REPLIES["figure11"] + "\nQuestion-7: Why? Answer: because", "found 7"),
        (json.dumps({"pairs": [{"index": 1, "question": "Q?", "answer": ""}] * 6}), "numbered 1-6"),
        ("I cannot help with that.", "expected 6"),
    ],
)
def test_bad_task12_replies_raise(reply: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_task12(reply)


# --- Task 3 (Figures 12 and 13) --------------------------------------------------------------------

S1 = "A 5 mm nodule is seen in the right upper lobe."
S2 = "Pleural effusion reaching 14 mm in thickness on the left."


@pytest.mark.parametrize(
    "reply",
    [
        f"1). Sentence-1: {S1}\\n\n2). Sentence-2: {S2}\\n",
        f"1). Sentence-1: {S1}\\n 2). Sentence-2: {S2}\\n",  # the paper's literal \n, all on one line
        f"Here are the sentences:\n\n1. **Sentence 1:** {S1}\n2. **Sentence 2:** {S2}\n\nNo others qualify.",
        f"<think>two sentences</think>- {S1}\n- {S2}",
        f"1) {S1}\n2) {S2}",
        f"{S1}\n\n{S2}\n",
        json.dumps({"sentences": [S1, S2]}),
        f'```json\n["{S1}", "{S2}"]\n```',
    ],
)
def test_stage1_formats(reply: str) -> None:
    assert parse_task3_stage1(reply) == [S1, S2]


@pytest.mark.parametrize(
    "reply", ["", "   ", "None.", "No sentences with specific numerical values were found.", '{"sentences": []}']
)
def test_stage1_none(reply: str) -> None:
    assert parse_task3_stage1(reply) == []


def test_stage1_unreadable_reply_is_an_error_not_an_empty_list() -> None:
    with pytest.raises(ParseError, match="no statement that there is none"):
        parse_task3_stage1("Sorry, here is something else entirely.")


Q3 = "What is the diameter of the nodule in the right upper lobe?"


@pytest.mark.parametrize(
    "reply",
    [
        f"Diameter\nQuestion: {Q3} Answer: 5 mm",
        f"Aspect: Diameter\n\nQuestion: {Q3}\nAnswer: 5 mm\n\nThis asks for an exact measurement of size.",
        f"Aspect(Size, Diameter or Thickness)\n**Diameter**\n**Question:** {Q3}\n**Answer:**\n5 mm",
        f"<think>It gives one dimension: diameter, not thickness.</think>\n2). Diameter\nQ: {Q3}\nA: 5 mm",
        f"Here is the question:\nAspect (Diameter)\nQuestion: {Q3} Answer: 5 mm",
        f"The most appropriate aspect is Diameter.\nQuestion: {Q3} Answer: 5 mm",
        f"Question: {Q3} Answer: 5 mm",  # aspect only in the question's wording
        json.dumps({"aspect": "diameter", "question": Q3, "answer": "5 mm"}),
    ],
)
def test_stage2_formats(reply: str) -> None:
    assert parse_task3_stage2(reply) == GeneratedQA(0, Q3, "5 mm", "Diameter")


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ("nothing useful", "no 'Question"),
        ("Question: What is the measurement of the nodule? Answer: 5 mm", "no aspect"),
        ("Size or thickness could fit.\nQuestion: How big is it? Answer: 5 mm", "several aspects"),
        ("Diameter\nQuestion: What is it?", "no 'Answer"),
        ('{"aspect": "volume", "question": "Q?", "answer": "3 ml"}', "aspect"),
    ],
)
def test_bad_stage2_replies_raise(reply: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_task3_stage2(reply)


# --- spatial judge ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ('{"spatial": true, "category": "vertical position"}', (True, "vertical position")),
        (
            '<think>where?</think>\n```json\n{"spatial": true, "category": "Vertical position"}\n```',
            (True, "vertical position"),
        ),
        (
            'The pair asks for a location.\n{"spatial": "yes", "category": "adjacency and containment"}\nDone.',
            (True, "adjacency and containment"),
        ),
        ('{"spatial": false, "category": ""}', (False, "")),
        ('{"spatial": false, "category": "vertical position"}', (False, "")),
        (
            "**Spatial:** Yes\n**Category:** Laterality and bilateral symmetry",
            (True, "laterality and bilateral symmetry"),
        ),
        ("1. Requires spatial reasoning: yes\n2. Category: 3", (True, "anterior-posterior depth")),
        (
            "Spatial: Yes.\nCategory: medial-lateral orientation (central vs peripheral)",
            (True, "medial-lateral orientation"),
        ),
        ("Requires spatial reasoning: No\nCategory: none\nReason: asks for a size.", (False, "")),
    ],
)
def test_spatial_judge_formats(reply: str, expected: tuple[bool, str]) -> None:
    assert parse_spatial_judgement(reply) == expected


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ('{"spatial": true, "category": "colour"}', "unknown category"),
        ("Spatial: yes", "unknown category"),
        ('{"spatial": "maybe", "category": ""}', "true or false"),
        ("The question is about a nodule.", "no spatial verdict"),
        ("<think>hmm</think>", "empty"),
    ],
)
def test_bad_spatial_replies_raise(reply: str, reason: str) -> None:
    with pytest.raises(ParseError, match=reason):
        parse_spatial_judgement(reply)


def test_spatial_categories_are_the_classifiers() -> None:
    assert tuple(CATEGORIES) == SPATIAL_CATEGORIES
    assert all(c in load_template("spatial_judge").user for c in SPATIAL_CATEGORIES)


# --- strict JSON schemas ---------------------------------------------------------------------------

# OpenAI structured outputs, strict mode: the subset of JSON Schema every provider accepts.
STRICT_KEYWORDS = {
    "type",
    "properties",
    "required",
    "additionalProperties",
    "items",
    "enum",
    "description",
    "anyOf",
    "$defs",
    "$ref",
    "const",
}
STRICT_TYPES = {"object", "array", "string", "integer", "number", "boolean", "null"}


def strict_mode_problems(schema: dict[str, Any], path: str = "$", depth: int = 1) -> list[str]:
    problems = [f"{path}: unsupported keyword {k}" for k in schema if k not in STRICT_KEYWORDS]
    if depth > 10:
        problems.append(f"{path}: nested deeper than 10")
    kind = schema.get("type")
    if kind is not None and kind not in STRICT_TYPES:
        problems.append(f"{path}: type {kind!r}")
    if kind == "object":
        props = schema.get("properties", {})
        if schema.get("additionalProperties") is not False:
            problems.append(f"{path}: additionalProperties must be false")
        if sorted(schema.get("required", [])) != sorted(props) or len(schema.get("required", [])) != len(props):
            problems.append(f"{path}: every property must be required")
        for name, sub in props.items():
            problems += strict_mode_problems(sub, f"{path}.{name}", depth + 1)
    if kind == "array":
        if "items" not in schema:
            problems.append(f"{path}: array without items")
        else:
            problems += strict_mode_problems(schema["items"], f"{path}[]", depth + 1)
    if "enum" in schema:
        python = {"string": str, "integer": int, "boolean": bool}.get(str(kind), object)
        if not all(isinstance(v, python) and not (python is int and isinstance(v, bool)) for v in schema["enum"]):
            problems.append(f"{path}: enum values not of type {kind}")
    return problems


def conforms(value: Any, schema: dict[str, Any]) -> bool:
    """A small JSON Schema instance check for the keywords above (no jsonschema dependency)."""
    kind = schema["type"]
    checks = {
        "object": lambda v: isinstance(v, dict),
        "array": lambda v: isinstance(v, list),
        "string": lambda v: isinstance(v, str),
        "integer": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "boolean": lambda v: isinstance(v, bool),
    }
    if not checks[kind](value):
        return False
    if "enum" in schema and value not in schema["enum"]:
        return False
    if kind == "object":
        return set(value) == set(schema["properties"]) and all(
            conforms(value[k], s) for k, s in schema["properties"].items()
        )
    if kind == "array":
        return all(conforms(v, schema["items"]) for v in value)
    return True


def test_every_template_has_a_strict_schema() -> None:
    for name in TEMPLATES:
        load_template(name)  # a real template
        fmt = response_format_for(name)
        assert fmt is not None and fmt["type"] == "json_schema"
        spec = fmt["json_schema"]
        assert spec["strict"] is True and re.fullmatch(r"[a-zA-Z0-9_-]{1,64}", spec["name"])
        assert spec["schema"]["type"] == "object"  # the root must be an object
        assert strict_mode_problems(spec["schema"]) == [], name
    assert response_format_for("no_such_template") is None
    response_format_for("scoring")["json_schema"]["schema"]["properties"].clear()  # type: ignore[index]
    assert response_format_for("scoring")["json_schema"]["schema"]["properties"]  # type: ignore[index]


def test_the_checker_rejects_non_strict_schemas() -> None:
    assert strict_mode_problems({"type": "object", "properties": {"a": {"type": "string"}}, "required": ["a"]})
    loose = {
        "type": "object",
        "properties": {"a": {"type": "string", "minLength": 1}},
        "required": [],
        "additionalProperties": False,
    }
    assert len(strict_mode_problems(loose)) == 2


def random_value(name: str, rng: random.Random) -> Any:
    if name == "task12":
        return [GeneratedQA(i, random_question(rng), random_answer(rng)) for i in range(1, 7)]
    if name == "task3_stage1":
        return [random_sentence(rng) for _ in range(rng.randrange(0, 5))]
    if name == "task3_stage2":
        return GeneratedQA(0, random_question(rng), random_answer(rng), rng.choice(TASK3_ASPECTS))
    if name == "scoring":
        return {d: rng.randint(1, 5) for d in SCORE_DIMENSIONS}
    spatial = rng.random() < 0.6
    return (spatial, rng.choice(SPATIAL_CATEGORIES) if spatial else "")


def json_reply(name: str, value: Any) -> str:
    """The JSON reply of the template's schema carrying ``value``."""
    if name == "task12":
        data: Any = {"pairs": [{"index": p.index, "question": p.question, "answer": p.answer} for p in value]}
    elif name == "task3_stage1":
        data = {"sentences": value}
    elif name == "task3_stage2":
        data = {"aspect": value.aspect, "question": value.question, "answer": value.answer}
    elif name == "scoring":
        data = dict(value)
    else:
        data = {"spatial": value[0], "category": value[1]}
    assert conforms(data, SCHEMAS[name]), (name, data)
    return json.dumps(data)


@pytest.mark.parametrize("name", TEMPLATES)
def test_schema_conforming_replies_parse(name: str) -> None:
    rng = random.Random(name)
    for _ in range(50):
        value = random_value(name, rng)
        assert PARSERS[name](json_reply(name, value)) == value


# --- property-style: every paper format parses to the JSON's value ----------------------------------

WORDS = [
    "nodule",
    "lesion",
    "opacity",
    "effusion",
    "consolidation",
    "trachea",
    "bronchi",
    "lobe",
    "segment",
    "right",
    "left",
    "upper",
    "lower",
    "ground-glass",
    "calcified",
    "pleural",
    "hilar",
    "lymph",
    "node",
    "aorta",
    "kidney",
    "liver",
    "cyst",
    "mass",
    "density",
    "wall",
    "contour",
    "diameter",
    "size",
    "thickness",
    "mediastinal",
    "atelectasis",
    "emphysema",
    "bulla",
    "spiculated",
]
STARTERS = ("What", "Where", "Which", "How")
MEASURES = ("5 mm", "12x10 mm", "3.5 cm", "14 mm", "2.1×1.8 cm", "36mm", "7-mm", "1,5 cm", "20%", "45 HU")
PUNCT = (",", ";", " (", ")", " /", " -", ":", "'s", '"', "_", "*", "\\", "`", "#", " |", "?", "!", " [", "]")


def _words(rng: random.Random, n: int) -> str:
    out = []
    for _ in range(n):
        out.append(rng.choice(MEASURES) if rng.random() < 0.15 else rng.choice(WORDS))
        if rng.random() < 0.12:
            out[-1] += rng.choice(PUNCT)
    return " ".join(out)


def random_question(rng: random.Random) -> str:
    return normalise_text(f"{rng.choice(STARTERS)} {_words(rng, rng.randint(2, 12))}?")


def random_answer(rng: random.Random) -> str:
    text = _words(rng, rng.randint(1, 5))
    return normalise_text(text.capitalize() + rng.choice(["", "", "."])) or "Normal"


def random_sentence(rng: random.Random) -> str:
    return normalise_text(f"{_words(rng, rng.randint(3, 15))} {rng.choice(MEASURES)} {_words(rng, 2)}.")


@pytest.mark.parametrize("name", TEMPLATES)
def test_every_rendering_parses_to_the_json_value(name: str) -> None:
    rng = random.Random(f"content:{name}")
    for case in range(150):
        value = random_value(name, rng)
        expected = PARSERS[name](json_reply(name, value))
        for style_seed in range(6):
            text = render_value(name, expected, random.Random(case * 100 + style_seed))
            try:
                got = PARSERS[name](text)
            except ParseError as exc:
                pytest.fail(f"{name}: {exc}\n--- reply ---\n{text}")
            assert got == expected, f"{name}\n--- reply ---\n{text}"


def test_renderings_are_varied() -> None:
    rng = random.Random(3)
    value = random_value("scoring", rng)
    texts = {render_value("scoring", value, random.Random(i)) for i in range(60)}
    assert any(t.lstrip().startswith("VolumeName") for t in texts)
    assert any("Reasons:" in t for t in texts) and any("\\_" in t for t in texts)
    assert any(t.lstrip().startswith("|") for t in texts) and any("<think>" in t for t in texts)
    pairs = render_value("task12", random_value("task12", rng), random.Random(0))
    assert "Question" in pairs or "Q1" in pairs or "1)" in pairs


def test_to_paper_format_keeps_malformed_replies_and_round_trips_the_server() -> None:
    rng = random.Random(0)
    assert to_paper_format("scoring", "Sorry, here is something else entirely.", rng) == (
        "Sorry, here is something else entirely."
    )
    with pytest.raises(KeyError):
        to_paper_format("task9", "{}", rng)
    template = load_template("task12")
    findings = "A 5 mm nodule in the right upper lobe. Bilateral pleural effusion, 14 mm thick."
    values = {"Findings": findings, "Impressions": "Pulmonary nodule."}
    values |= {f"Starter{i + 1}": s for i, s in enumerate(starters_for(0, "r"))}
    requests = {
        "task12": template.messages(**values),
        "task3_stage1": load_template("task3_stage1").messages(Findings=findings),
        "task3_stage2": load_template("task3_stage2").messages(Sentence="A 5 mm nodule in the right upper lobe."),
        "scoring": load_template("scoring").messages(Question="Where is the nodule?", Answer="Right upper lobe"),
        "spatial_judge": load_template("spatial_judge").messages(Question="Where is the nodule?", Answer="Right"),
    }
    for name, messages in requests.items():
        reply = scripted_reply(messages, "judge-a")
        expected = PARSERS[name](reply)
        as_json = server_json_reply(messages, "judge-a")  # the server's JSON mode: the schema's shape
        assert conforms(json.loads(as_json), SCHEMAS[name]) and PARSERS[name](as_json) == expected
        assert PARSERS[name](to_paper_format(name, as_json, random.Random(1))) == expected
        for seed in range(40):
            paper = to_paper_format(name, reply, random.Random(seed))
            assert PARSERS[name](paper) == expected, paper


def test_normalised_text_is_one_line_and_a_fixed_point() -> None:
    rng = random.Random(5)
    for _ in range(3000):
        raw = "".join(rng.choice(string.printable) for _ in range(rng.randint(0, 40)))
        once = normalise_text(raw)
        assert "\n" not in once and once == once.strip() and normalise_text(once) == once, repr(raw)


@pytest.mark.parametrize("name", TEMPLATES)
def test_garbage_raises_parse_error_quickly(name: str) -> None:
    for garbage in ("[" * 5000 + "{" * 5000, '{"a": [' * 3000, "Question: " * 2000, "\x00\ufffd" * 100):
        with pytest.raises(ParseError):
            PARSERS[name](garbage)

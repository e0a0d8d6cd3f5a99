"""Render a JSON reply in one of the paper's own reply formats, with the drift real models show.

``to_paper_format(template_name, json_reply_text, rng)`` reads the reply with the template's parser
(``rad3d_pipeline.llm.parsers``), then writes the same content as a model answering the paper's
prompt would: Figures 11-13 for Tasks 1-3, Figure 17's header and CSV row (or ``Name (4):`` lines,
a markdown table, JSON in a fence) for scoring, and key-value lines or wrapped JSON for the spatial
judge; with varied numbering (``1).``, ``1.``, ``1)``, ``Q1:``), bold labels, prose before and after,
``<think>`` blocks, code fences, reasons or none, markdown escapes. Every rendering is checked to
parse back to exactly the value the JSON gave; a reply that does not parse (an injected malformed
reply) is returned unchanged, so it stays malformed.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable
from typing import Any

from rad3d_pipeline.llm.parsers import (
    SCORE_DIMENSIONS,
    SPATIAL_CATEGORIES,
    TASK12_ASPECTS,
    GeneratedQA,
    ParseError,
    parse_scores,
    parse_spatial_reply,
    parse_task3_stage1,
    parse_task3_stage2,
    parse_task12,
)

TEMPLATES: tuple[str, ...] = ("task12", "task3_stage1", "task3_stage2", "scoring", "spatial_judge")

PROSE_BEFORE = (
    "Here are the requested items, based on the text provided.",
    "Sure! Below is my response in the desired format.",
    "Certainly. I followed the constraints above.",
    "After reviewing the text carefully, here is the output.",
)
PROSE_AFTER = (
    "I hope this helps.",
    "Let me know if you would like any changes.",
    "All items were checked against the constraints.",
)
THINKING = (
    "<think>\nLet me read the text carefully and follow the format.\n</think>\n",
    "<think>I should keep to the requested layout.</think>\n\n",
)
REASONS = (
    "Clear and directly verifiable on the scan.",
    "The wording is precise and unambiguous.",
    "Accurate and relevant to what is asked.",
    "The type of the reply matches the request.",
    "Fluent and grammatically correct.",
)


def _wrap(body: str, rng: random.Random, *, fence: bool = True) -> str:
    """Optional think block, prose before and after, code fence."""
    if fence and rng.random() < 0.2:
        body = f"```{rng.choice(['', 'text', 'markdown'])}\n{body}\n```"
    if rng.random() < 0.4:
        body = f"{rng.choice(PROSE_BEFORE)}\n\n{body}"
    if rng.random() < 0.3:
        body = f"{body}\n\n{rng.choice(PROSE_AFTER)}"
    if rng.random() < 0.3:
        body = rng.choice(THINKING) + body
    return body


def _bold(label: str, on: bool) -> str:
    return f"**{label}**" if on else label


def _heading(n: int, rng_style: int) -> str:
    aspect = TASK12_ASPECTS[n - 1]
    basis = "Impressions" if n == 6 else "Findings"
    return [
        f"{n}). {aspect} (based on {basis})",
        f"{n}. {aspect} (based on {basis})",
        f"{n}) {aspect} (based on {basis})",
        f"**{n}). {aspect} (based on {basis})**",
        f"### {n}. {aspect} (based on {basis})",
        f"{n}. **{aspect}** (based on {basis})",
    ][rng_style]


def render_task12(pairs: list[GeneratedQA], rng: random.Random) -> str:
    headings = rng.random() < 0.7
    heading_style = rng.randrange(6)
    q_style = rng.randrange(7 if not headings else 5)
    bold = rng.random() < 0.4
    same_line = rng.random() < 0.6
    blank = rng.random() < 0.4
    bullet = rng.choice(["", "", "- "])
    quote = '"' if rng.random() < 0.15 else ""
    tail = "  " if rng.random() < 0.2 else ""  # markdown line breaks
    lines: list[str] = []
    for pair in pairs:
        n = pair.index
        if headings:
            lines.append(_heading(n, heading_style))
        if q_style == 0:
            q_label, a_label = f"Question-{n}:", "Answer:"
        elif q_style == 1:
            q_label, a_label = f"Question {n}:", f"Answer {n}:"
        elif q_style == 2:
            q_label, a_label = f"Q{n}:", f"A{n}:"
        elif q_style == 3:
            q_label, a_label = "Question:", "Answer:"
        elif q_style == 4:
            q_label, a_label = f"Question-{n}.", f"Answer-{n}:"
        elif q_style == 5:
            q_label, a_label = f"{n}. Question:", "Answer:"
        else:
            q_label, a_label = f"{n})", "Answer:"
        q_text = f"{bullet}{_bold(q_label, bold)} {quote}{pair.question}{quote}"
        a_text = f"{_bold(a_label, bold)} {quote}{pair.answer}{quote}{tail}"
        if same_line:
            lines.append(f"{q_text} {a_text}")
        else:
            lines.extend([q_text, ("   " if rng.random() < 0.5 else "") + a_text])
        if blank:
            lines.append("")
    return _wrap("\n".join(lines).strip(), rng)


def render_task3_stage1(sentences: list[str], rng: random.Random) -> str:
    if not sentences:
        return rng.choice(
            ["", "No sentences with specific numerical values were found.", "None.", "<think>none</think>"]
        )
    style = rng.randrange(5)
    literal_newline = rng.random() < 0.3
    lines = []
    for n, s in enumerate(sentences, 1):
        line = [
            f"{n}). Sentence-{n}: {s}",
            f"{n}. Sentence {n}: {s}",
            f"Sentence-{n}: {s}",
            f"{n}) **Sentence-{n}:** {s}",
            f"- Sentence {n}: {s}",
        ][style]
        lines.append(line + ("\\n" if literal_newline else "") + rng.choice(["", "", "  "]))
    return _wrap("\n".join(lines), rng)


def render_task3_stage2(qa: GeneratedQA, rng: random.Random) -> str:
    aspect_line = rng.choice(
        [
            qa.aspect,
            f"Aspect: {qa.aspect}",
            f"**Aspect:** {qa.aspect}",
            f"**{qa.aspect}**",
            f"Aspect({qa.aspect})",
            f"{1 + ('Size', 'Diameter', 'Thickness').index(qa.aspect)}). {qa.aspect}",
            f"Aspect (Size, Diameter or Thickness): {qa.aspect}",
        ]
    )
    bold = rng.random() < 0.4
    q_label, a_label = rng.choice([("Question:", "Answer:"), ("Q:", "A:"), ("Question:", "Answer -")])
    q = f"{_bold(q_label, bold)} {qa.question}"
    quote = '"' if rng.random() < 0.15 else ""
    a = f"{_bold(a_label, bold)} {quote}{qa.answer}{quote}"
    layout = rng.randrange(3)
    if layout == 0:
        body = f"{aspect_line}\n{q} {a}"
    elif layout == 1:
        body = f"{aspect_line}\n\n{q}\n{a}"
    else:
        body = f"{aspect_line}\n{q}\n{_bold(a_label, bold)}\n{quote}{qa.answer}{quote}"
    return _wrap(body, rng)


def _escape_md(text: str) -> str:
    return text.replace("_", "\\_")


def render_scores(scores: dict[str, int], rng: random.Random) -> str:
    volume = f"test_{rng.randrange(1, 1500)}_{rng.choice('abc')}_{rng.randrange(1, 3)}.nii.gz"
    values = [scores[d] for d in SCORE_DIMENSIONS]
    style = rng.randrange(7)
    bold = rng.random() < 0.5
    numbered = rng.random() < 0.3

    def reason_lines(with_scores: bool = True) -> list[str]:
        out = []
        for i, (d, v) in enumerate(zip(SCORE_DIMENSIONS, values, strict=True)):
            label = f"{d} ({v}):" if with_scores else f"{d}:"
            out.append(f"{f'{i + 1}. ' if numbered else ''}{_bold(label, bold)} {REASONS[i]}")
        return out

    if style in (0, 1):  # Figure 17: header and CSV row, then (or not) the question, answer and reasons
        sep = rng.choice([",", ", "])
        name = _escape_md(volume) if rng.random() < 0.6 else volume
        header = "VolumeName, " + ", ".join(SCORE_DIMENSIONS)
        lines = [header + rng.choice(["", "  "]), sep.join([name, *map(str, values)])]
        if rng.random() < 0.3:
            lines = [header.split(", ", 1)[1], sep.join(map(str, values))]  # no VolumeName column
        if style == 1:
            lines += ["", "Reasons:", ""]
            lines += [x for line in reason_lines(rng.random() < 0.7) for x in (line, "")]
        body = "\n".join(lines).strip()
        return _wrap(body, rng, fence=style == 0)
    if style == 2:  # **Name (4):** reason lines
        return _wrap("\n".join(reason_lines()), rng)
    if style == 3:  # Name: 4 lines
        fmt = rng.choice(["{d}: {v}", "{d}: {v}/5", "{d} - {v}", "{d}: Score {v}"])
        lines = [
            f"{f'{i + 1}. ' if numbered else ''}" + fmt.format(d=_bold(d, bold), v=v)
            for i, (d, v) in enumerate(zip(SCORE_DIMENSIONS, values, strict=True))
        ]
        return _wrap("\n".join(lines), rng)
    if style == 4:  # markdown table, one column per dimension
        head = "| VolumeName | " + " | ".join(SCORE_DIMENSIONS) + " |"
        rule = "|" + "---|" * (len(SCORE_DIMENSIONS) + 1)
        row = f"| {_escape_md(volume)} | " + " | ".join(map(str, values)) + " |"
        return _wrap("\n".join([head, rule, row]), rng, fence=False)
    if style == 5:  # markdown table, one row per dimension
        lines = ["| Dimension | Score | Reason |", "|:--|:-:|:--|"]
        lines += [
            f"| {d} | {v} | {REASONS[i]} |" for i, (d, v) in enumerate(zip(SCORE_DIMENSIONS, values, strict=True))
        ]
        return _wrap("\n".join(lines), rng, fence=False)
    body = json.dumps(dict(zip(SCORE_DIMENSIONS, values, strict=True)), indent=rng.choice([None, 2]))
    return _wrap(f"```json\n{body}\n```" if rng.random() < 0.5 else body, rng, fence=False)


def render_spatial(verdict: tuple[bool, str], rng: random.Random) -> str:
    spatial, category = verdict
    style = rng.randrange(4)
    bold = rng.random() < 0.4
    if style == 0:
        body = json.dumps({"spatial": spatial, "category": category})
        body = f"```json\n{body}\n```" if rng.random() < 0.5 else body
        return _wrap(body, rng, fence=False)
    yes = rng.choice(["Yes", "yes", "True"]) if spatial else rng.choice(["No", "no", "False"])
    cat = category
    if spatial and rng.random() < 0.3:
        cat = cat.capitalize()
    if spatial and rng.random() < 0.2:
        cat = str(1 + SPATIAL_CATEGORIES.index(category))
    if not spatial:
        cat = rng.choice(["", "none", "N/A"])
    label_a = rng.choice(["Spatial:", "Requires spatial reasoning:", "Spatial reasoning required:"])
    lines = [f"{_bold(label_a, bold)} {yes}"]
    if cat or rng.random() < 0.5:
        lines.append(f"{_bold('Category:', bold)} {cat}".rstrip())
    if style == 2:
        lines = [f"1. {lines[0]}", *(f"2. {x}" for x in lines[1:])]
    if style == 3:
        lines.append("Reason: the question asks where the finding lies." if spatial else "Reason: no location asked.")
    return _wrap("\n".join(lines), rng)


def _stage2_value(text: str) -> GeneratedQA:
    return parse_task3_stage2(text)


PARSERS: dict[str, Callable[[str], Any]] = {
    "task12": parse_task12,
    "task3_stage1": parse_task3_stage1,
    "task3_stage2": _stage2_value,
    "scoring": parse_scores,
    "spatial_judge": parse_spatial_reply,
}
RENDERERS: dict[str, Callable[[Any, random.Random], str]] = {
    "task12": render_task12,
    "task3_stage1": render_task3_stage1,
    "task3_stage2": render_task3_stage2,
    "scoring": render_scores,
    "spatial_judge": render_spatial,
}


def render_value(template_name: str, value: Any, rng: random.Random) -> str:
    """One paper-format rendering of a parsed value (no round-trip check)."""
    return RENDERERS[template_name](value, rng)


def to_paper_format(template_name: str, json_reply_text: str, rng: random.Random) -> str:
    """The same content as ``json_reply_text`` in one of the paper's reply formats, chosen by ``rng``.

    A reply the template's parser rejects is returned unchanged. Raises ``KeyError`` for an unknown
    template and ``AssertionError`` if no rendering parses back to the same value (a parser bug).
    """
    parse = PARSERS[template_name]
    try:
        value = parse(json_reply_text)
    except ParseError:
        return json_reply_text
    for _ in range(8):
        text = RENDERERS[template_name](value, rng)
        try:
            if parse(text) == value:
                return text
        except ParseError:
            pass
    raise AssertionError(f"{template_name}: no paper-format rendering of {value!r} parses back to it")

"""Scoring of 3D-RAD's closed (multiple-choice) tasks.

Two rules:

* :func:`m3d_correct` is the rule of 3D-RAD's own evaluation script (M3D ``eval_3DRAD.py``):
  a sample is correct when the answer letter followed by a period (``"B."``) occurs anywhere
  in the generated text. It is lenient (an output listing every choice is "correct") and
  strict at once (a bare ``"B"`` is wrong), but it is what the paper's numbers use.
* :func:`strict_correct` is that rule without its inflation: the letter rule holds *and* the output
  names no other choice letter (``"A. Yes B. No"`` is wrong whatever the answer; ``"DNA."`` does not
  name ``A``). It is never above the letter rule, so the gap between the two shows the inflation.
* :func:`parse_choice` / :func:`parsed_correct` read the single letter the output chooses,
  from forms such as ``B``, ``B.``, ``(B) No``, ``Answer: B``, ``The answer is B. No``;
  an output naming more than one letter is ambiguous and counts as wrong. When the choice
  texts are given, an output that is exactly one choice's text (``"No"``) chooses it.

The paper reports accuracy macro-averaged over subtasks: :func:`macro_average` and
:func:`score_closed` do that.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

LETTERS = "ABCD"

_CUE = r"(?:answer|option|choice)(?:\s+is)?\s*[:\-]?\s*(?:\(?\s*)"


def m3d_correct(output: str, answer_letter: str) -> bool:
    """3D-RAD's rule: ``answer_letter + "."`` occurs in the generated text (case-sensitive substring).

    Without an answer letter nothing is correct (``"."`` alone would match any sentence).
    """
    return bool(answer_letter) and f"{answer_letter}." in output


def named_letters(output: str, letters: str = LETTERS) -> set[str]:
    """Every choice letter ``output`` names: ``"B."`` standing as a word (the letter rule's form, not inside
    ``"DNA."``) or a choice-like form :func:`parse_choice` reads (``(B)``, ``B)``, ``Answer: B``, a final ``B``)."""
    cls = f"[{re.escape(letters)}]"
    found = {m.group(1) for m in re.finditer(rf"(?<![A-Za-z0-9])({cls})\.", output)}
    found |= {m.group(1).upper() for pattern in _letter_patterns(letters) for m in pattern.finditer(output)}
    return found


def strict_correct(output: str, answer_letter: str, letters: str = LETTERS) -> bool:
    """3D-RAD's letter rule without its inflation: ``answer_letter + "."`` occurs and the output names
    the answer letter and no other (see :func:`named_letters`). An empty output is wrong."""
    return m3d_correct(output, answer_letter) and named_letters(output, letters) == {answer_letter}


def _letter_patterns(letters: str) -> list[re.Pattern[str]]:
    cls = f"[{re.escape(letters)}]"
    not_word = r"(?<![A-Za-z0-9])"
    return [
        # "(B)", "( B )"
        re.compile(rf"\(\s*({cls})\s*\)"),
        # "B.", "B)", "B:", "B," not followed by a letter/digit (so "B.Sc" or "A.k.a" are not choices)
        re.compile(rf"{not_word}({cls})[.):,](?![A-Za-z0-9])"),
        # "answer: B", "The answer is B", "option B"
        re.compile(rf"(?i:{_CUE})({cls})(?![A-Za-z0-9])"),
        # "answer: b." (lower case only when nothing follows but punctuation: "the answer is a new lesion" is no choice)
        re.compile(rf"(?i:{_CUE})({cls.lower()})(?=\s*(?:[.):,;]|$))"),
        # "B" alone, or "B" ending the output ("... so B")
        re.compile(rf"{not_word}({cls})\s*$"),
    ]


def _normalize(text: str) -> str:
    return " ".join(re.sub(r"[^\w\s]|_", " ", text.lower()).split())


def parse_choice(output: str, letters: str = LETTERS, choices: Mapping[str, str] | None = None) -> str | None:
    """The single choice letter ``output`` selects, or None (nothing recognisable, or several letters).

    A letter counts when it appears in a choice-like form: in parentheses, followed by
    ``.``/``)``/``:``, after a cue word (answer/option/choice), or alone at the end. A capital
    ``A`` used as an article ("A nodule is seen") is therefore not a choice. ``choices`` maps
    letters to choice texts; if no letter is found and the output equals one choice's text
    (case and punctuation aside), that letter is returned.
    """
    text = output.strip()
    if not text:
        return None
    bare = re.fullmatch(rf"\(?\s*([{re.escape(letters)}{re.escape(letters.lower())}])\s*[.):]?\s*\)?", text)
    if bare:
        return bare.group(1).upper()
    found = {m.group(1).upper() for pattern in _letter_patterns(letters) for m in pattern.finditer(text)}
    if len(found) == 1:
        return found.pop()
    if found:
        return None
    if choices:
        said = _normalize(text)
        hits = [letter for letter, choice in choices.items() if choice and choice != "-" and _normalize(choice) == said]
        if len(hits) == 1:
            return hits[0]
    return None


def parsed_correct(
    output: str, answer_letter: str, letters: str = LETTERS, choices: Mapping[str, str] | None = None
) -> bool:
    """Stricter rule: the single parsed choice equals the answer letter."""
    return parse_choice(output, letters, choices) == answer_letter.strip().upper()


def macro_average(per_group: Mapping[str, float]) -> float:
    """Unweighted mean over groups (subtasks); 0.0 when there are none."""
    return sum(per_group.values()) / len(per_group) if per_group else 0.0


def group_accuracy(correct: Iterable[bool], groups: Iterable[str]) -> dict[str, float]:
    """Accuracy per group, groups in first-seen order."""
    hits: dict[str, int] = {}
    totals: dict[str, int] = {}
    for ok, group in zip(correct, groups, strict=True):
        totals[group] = totals.get(group, 0) + 1
        hits[group] = hits.get(group, 0) + bool(ok)
    return {group: hits[group] / totals[group] for group in totals}


@dataclass(frozen=True)
class ClosedScores:
    count: int
    m3d_accuracy: float  # micro average of the 3D-RAD rule
    parsed_accuracy: float  # micro average of the parsed-choice rule
    m3d_macro: float  # macro over subtasks (what the paper reports)
    parsed_macro: float
    per_subtask: dict[str, dict[str, float]] = field(default_factory=dict)  # subtask -> {"m3d", "parsed", "count"}


def score_closed(
    outputs: Sequence[str],
    answer_letters: Sequence[str],
    subtasks: Sequence[str] | None = None,
    choices: Sequence[Mapping[str, str]] | None = None,
    letters: str = LETTERS,
) -> ClosedScores:
    """Both rules over a set of closed questions, micro and macro (over ``subtasks``) averaged."""
    n = len(outputs)
    if len(answer_letters) != n or (subtasks is not None and len(subtasks) != n):
        raise ValueError("outputs, answer_letters and subtasks must have the same length")
    if choices is not None and len(choices) != n:
        raise ValueError("choices must have one mapping per output")
    groups = list(subtasks) if subtasks is not None else ["all"] * n
    m3d = [m3d_correct(o, a) for o, a in zip(outputs, answer_letters, strict=True)]
    parsed = [
        parsed_correct(o, a, letters, choices[i] if choices is not None else None)
        for i, (o, a) in enumerate(zip(outputs, answer_letters, strict=True))
    ]
    m3d_groups = group_accuracy(m3d, groups)
    parsed_groups = group_accuracy(parsed, groups)
    counts: dict[str, int] = {}
    for group in groups:
        counts[group] = counts.get(group, 0) + 1
    return ClosedScores(
        count=n,
        m3d_accuracy=sum(m3d) / n if n else 0.0,
        parsed_accuracy=sum(parsed) / n if n else 0.0,
        m3d_macro=macro_average(m3d_groups),
        parsed_macro=macro_average(parsed_groups),
        per_subtask={
            g: {"m3d": m3d_groups[g], "parsed": parsed_groups[g], "count": float(counts[g])} for g in m3d_groups
        },
    )

"""3D-RAD closed-task scoring on crafted model outputs."""

from __future__ import annotations

import pytest

from rad3d_pipeline.evaluation.closed_choice import (
    group_accuracy,
    m3d_correct,
    macro_average,
    named_letters,
    parse_choice,
    parsed_correct,
    score_closed,
    strict_correct,
)


@pytest.mark.parametrize(
    ("output", "letter", "expected"),
    [
        ("B. No", "B", True),
        ("The answer is B.", "B", True),
        ("A. Yes B. No", "B", True),  # the script's rule accepts an output listing every choice
        ("B", "B", False),  # ... and rejects a bare letter
        ("(B) No", "B", False),
        ("b. no", "B", False),  # case-sensitive substring
        ("Answer: B.", "A", False),
        ("", "A", False),
        ("I am not sure.", "", False),  # no answer letter: nothing is correct, not every sentence
    ],
)
def test_m3d_rule_is_letter_followed_by_period(output: str, letter: str, expected: bool) -> None:
    assert m3d_correct(output, letter) is expected


@pytest.mark.parametrize(
    ("output", "expected"),
    [
        ("B", "B"),
        ("B.", "B"),
        (" b ", "B"),
        ("(C)", "C"),
        ("D)", "D"),
        ("Answer: B", "B"),
        ("answer: b", "B"),
        ("(B) No", "B"),
        ("The answer is B. No", "B"),
        ("The answer is (A).", "A"),
        ("Option D", "D"),
        ("C. New Lesion (Absent previously, now present)", "C"),
        ("B. No, there is no pleural effusion.", "B"),
    ],
)
def test_parse_single_choice(output: str, expected: str) -> None:
    assert parse_choice(output) == expected


@pytest.mark.parametrize(
    "output",
    [
        "",
        "A. Yes B. No",  # echoes the choices: ambiguous
        "I think B, not A.",
        "The answer is A or C.",
        "A nodule is seen in the right lung.",  # article, not a choice
        "The answer is a new lesion",  # lower-case article after a cue word
        "3D reconstruction shows no effusion",  # "D" preceded by a digit
        "E.",  # not one of the letters
        "Yes",  # no letter and no choice texts given
    ],
)
def test_unparseable_or_ambiguous_outputs(output: str) -> None:
    assert parse_choice(output) is None


def test_choice_text_answers_need_the_choices() -> None:
    choices = {"A": "Yes", "B": "No", "C": "-", "D": "-"}
    assert parse_choice("No.", choices=choices) == "B"
    assert parse_choice("yes", choices=choices) == "A"
    assert parse_choice("Maybe", choices=choices) is None
    assert parse_choice("-", choices=choices) is None
    assert parse_choice("No", letters="AB") is None
    assert parse_choice("C.", letters="AB") is None


def test_parsed_correct() -> None:
    assert parsed_correct("The answer is B. No", "B")
    assert not parsed_correct("A. Yes B. No", "B")
    assert parsed_correct("No", "B", choices={"A": "Yes", "B": "No"})


def test_macro_average_and_groups() -> None:
    assert macro_average({}) == 0.0
    assert macro_average({"x": 1.0, "y": 0.5}) == 0.75
    assert group_accuracy([True, False, True, True], ["x", "x", "y", "y"]) == {"x": 0.5, "y": 1.0}


def test_score_closed_micro_and_macro() -> None:
    outputs = ["B.", "A", "A. Yes B. No", "(C)", "D. No Abnormality", "Answer: D"]
    letters = ["B", "A", "B", "C", "D", "D"]
    subtasks = ["t4", "t4", "t4", "t6", "t6", "t6"]
    scores = score_closed(outputs, letters, subtasks)
    # m3d: t4 -> B. yes, A no, listing yes = 2/3; t6 -> (C) no, D. yes, "Answer: D" no = 1/3
    assert scores.count == 6
    assert scores.m3d_accuracy == pytest.approx(3 / 6)
    assert scores.m3d_macro == pytest.approx((2 / 3 + 1 / 3) / 2)
    # parsed: t4 -> B yes, A yes, ambiguous no = 2/3; t6 -> all three = 1
    assert scores.parsed_accuracy == pytest.approx(5 / 6)
    assert scores.parsed_macro == pytest.approx((2 / 3 + 1) / 2)
    assert scores.per_subtask["t6"] == {"m3d": pytest.approx(1 / 3), "parsed": 1.0, "count": 3.0}
    with pytest.raises(ValueError):
        score_closed(["A."], ["A", "B"])
    empty = score_closed([], [])
    assert (empty.count, empty.m3d_accuracy, empty.parsed_macro) == (0, 0.0, 0.0)


@pytest.mark.parametrize(
    ("output", "letter", "m3d", "strict"),
    [
        ("B. No", "B", True, True),
        ("The answer is B. No", "B", True, True),
        ("DNA. B. No", "B", True, True),  # "A." inside a word names no choice
        ("B. No. A small nodule is seen.", "B", True, True),  # nor does the article
        ("A. Yes B. No", "B", True, False),  # the quirk: every listed letter is "correct"
        ("A. B. C. D.", "C", True, False),
        ("(A) or B.", "B", True, False),
        ("Answer: A. Actually B.", "B", True, False),
        ("DNA.", "A", True, False),  # the substring rule's match, no letter named
        ("B", "B", False, False),  # strict is never above the letter rule
        ("", "B", False, False),
    ],
)
def test_strict_letter_rule_removes_the_inflation(output: str, letter: str, m3d: bool, strict: bool) -> None:
    assert m3d_correct(output, letter) is m3d
    assert strict_correct(output, letter) is strict


def test_named_letters() -> None:
    assert named_letters("A nodule is seen. B. No") == {"B"}
    assert named_letters("Option (C), or D.") == {"C", "D"}
    assert named_letters("The answer is b.") == {"B"}
    assert named_letters("No letters here.") == set()

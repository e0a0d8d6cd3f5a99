"""The metric engine: hand-computed open and closed metrics, macro averages, the LLM jury, AlignScore wiring."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rad3d_pipeline.evaluation import metrics
from rad3d_pipeline.evaluation.jury import OFFLINE_JUDGE, Jury, majority, offline_verdict, parse_verdict
from rad3d_pipeline.evaluation.text_metrics import normalize_answer
from rad3d_pipeline.llm.cache import ResponseCache
from rad3d_pipeline.llm.client import EndpointConfig, LlmClient
from rad3d_pipeline.llm.parsers import ParseError
from tests import llm_server

COLUMNS = ["model", "Task", "Subtask", "subtask_name", "QuestionType", "Question", "Answer", "AnswerChoice"]


def frame_of(rows: list[tuple[Any, ...]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=[*COLUMNS, "prediction"])
    frame["VolumeName"] = [f"test_{i}_a_1.nii.gz" for i in range(len(frame))]
    closed = frame["QuestionType"] == "Close"
    frame["Choice A"] = np.where(closed, "Yes", "-")
    frame["Choice B"] = np.where(closed, "No", "-")
    frame["Choice C"] = "-"
    frame["Choice D"] = "-"
    return frame


def closed_rows() -> list[tuple[Any, ...]]:
    q1 = ("m", 4, 1, "Atelectasis", "Close", "Is atelectasis present?", "No", "B")
    q2 = ("m", 4, 2, "Emphysema", "Close", "Is emphysema present?", "Yes", "A")
    outputs_b = ["B. No", "B", "A. Yes B. No", "The answer is B.", "No", "b."]
    #  letter rule:  yes    no    yes (lenient)    yes                no    no (case-sensitive)
    #  parsed:       yes    yes   no (ambiguous)   yes                yes   yes
    return [(*q1, out) for out in outputs_b] + [(*q2, "A.")]


def test_closed_rules_and_macro_average() -> None:
    frame = frame_of(closed_rows())
    scores = metrics.sample_scores(frame, metrics.EngineOptions(bertscore=False))
    assert scores["accuracy"].tolist() == [1, 0, 1, 1, 0, 0, 1]
    assert scores["parsed_accuracy"].tolist() == [1, 1, 0, 1, 1, 1, 1]
    assert scores["bleu"].isna().all()  # no text metrics on closed questions
    table = metrics.evaluate_predictions(frame, metrics.EngineOptions(bertscore=False))
    by_subtask = table.set_index("subtask_name")
    assert by_subtask.loc["Atelectasis", "accuracy"] == pytest.approx(3 / 6)
    assert by_subtask.loc["Atelectasis", "parsed_accuracy"] == pytest.approx(5 / 6)
    assert by_subtask.loc["Emphysema", "accuracy"] == 1.0
    summary = metrics.task_summary(table)
    # macro over subtasks (the paper's number), not the micro 4/7
    assert summary.loc[0, "accuracy"] == pytest.approx((0.5 + 1.0) / 2)
    assert summary.loc[0, "parsed_accuracy"] == pytest.approx((5 / 6 + 1.0) / 2)
    assert (table["protocol_version"] == metrics.PROTOCOL_VERSIONS["3drad"]).all()


def test_open_metrics_by_hand_and_empty_predictions_skipped() -> None:
    base = ("m", 1, 1, "Anatomical_observation", "Open")
    frame = frame_of(
        [
            (*base, "Q1", "the cat is on the mat", "-", "the cat sat on the mat"),
            (*base, "Q2", "yes", "-", "   "),
            (*base, "Q3", "Right lower lobe.", "-", "right lower lobe"),
        ]
    )
    scores = metrics.sample_scores(frame, metrics.EngineOptions(bertscore=False))
    # Q1: 5 of 6 unigrams match, equal lengths; ROUGE-1 P = R = 5/6
    assert scores.loc[0, "bleu"] == pytest.approx(5 / 6, abs=1e-15)
    assert scores.loc[0, "rouge1"] == pytest.approx(5 / 6, abs=1e-15)
    # METEOR: 5 matches in 2 chunks (the cat | on the mat): F = 5/6, penalty 0.5 * (2/5)^3
    assert scores.loc[0, "meteor"] == pytest.approx((1 - 0.5 * (2 / 5) ** 3) * 5 / 6, abs=1e-12)
    # Q2: empty prediction: skipped by the text metrics, wrong for exact match
    assert math.isnan(scores.loc[1, "bleu"]) and scores.loc[1, "exact_match"] == 0.0
    # Q3: 13a tokens are case-sensitive (2 of 3 match, and "." is a token: BP = exp(1 - 4/3)); ROUGE lowercases
    assert scores.loc[2, "bleu"] == pytest.approx(2 / 3 * math.exp(1 - 4 / 3), abs=1e-15)
    assert scores.loc[2, "rouge1"] == 1.0 and scores.loc[2, "exact_match"] == 1.0
    table = metrics.evaluate_predictions(frame, metrics.EngineOptions(bertscore=False))
    row = table.iloc[0]
    assert (row["n"], row["n_scored"], row["skipped_empty"]) == (3, 2, 1)
    assert row["bleu"] == pytest.approx((5 / 6 + 2 / 3 * math.exp(1 - 4 / 3)) / 2, abs=1e-15)
    assert row["exact_match"] == pytest.approx(1 / 3)
    assert math.isnan(row["bertscore_f1"]) and row["bertscore_model"] == ""


def test_identical_pairs_scored_once_same_values() -> None:
    base = ("m", 2, 1, "Diagnosis", "Open", "Q")
    rows = [(*base, "pleural effusion", "-", "small pleural effusion")] * 3 + [(*base, "nodule", "-", "a nodule")]
    one = metrics.sample_scores(frame_of(rows[:1] + rows[3:]), metrics.EngineOptions(bertscore=False))
    many = metrics.sample_scores(frame_of(rows), metrics.EngineOptions(bertscore=False))
    assert many.loc[0, "meteor"] == many.loc[2, "meteor"] == one.loc[0, "meteor"]
    assert many.loc[3, "bleu"] == one.loc[1, "bleu"]


# --------------------------------------------------------------------------- the LLM jury


def test_verdict_parsing_and_majority() -> None:
    assert parse_verdict("CORRECT") is True
    assert parse_verdict("<think>The units differ.</think>\n**Incorrect.**") is False
    with pytest.raises(ParseError):
        parse_verdict("It depends.")
    assert majority([True, True, False]) is True
    assert majority([True, False]) is False  # a tie is incorrect
    assert majority([True, None]) is True
    assert majority([None, None]) is False  # no verdict at all counts as incorrect


def test_offline_judge() -> None:
    assert offline_verdict("Q", "Left lung.", "left lung")
    assert offline_verdict("Where?", "right lower lobe", "In the right lower lobe.")
    assert not offline_verdict("Where?", "right lower lobe", "left lower lobe")
    assert not offline_verdict("Is there effusion?", "pleural effusion", "no pleural effusion")  # negation differs
    assert offline_verdict("Q", "No", "B. No", "B") and not offline_verdict("Q", "No", "A. Yes", "B")
    assert not offline_verdict("Q", "anything", "")
    jury = Jury({OFFLINE_JUDGE: None})
    assert "not an LLM" in jury.label


def _jury_reply(messages: list[dict[str, Any]], model: str, model_like: bool = False) -> str:
    system = str(messages[0].get("content", ""))
    if "grading answers" not in system:
        return ORIGINAL_REPLY(messages, model, model_like)
    user = str(messages[-1]["content"])
    reference = user.split("Reference answer: ")[1].split("\n")[0]
    prediction = user.split("Model answer: ")[1].split("\n")[0]
    if model == "judge-lenient":
        return "CORRECT"
    if model == "judge-strict":
        return "CORRECT" if normalize_answer(reference) == normalize_answer(prediction) else "INCORRECT"
    return "Hard to say."  # judge-garbled: never parsable


ORIGINAL_REPLY = llm_server.scripted_reply


def test_jury_of_several_judges_through_the_llm_layer(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm_server, "scripted_reply", _jury_reply)
    base = ("m", 1, 1, "A", "Open", "Which lung?", "Left lung")
    frame = frame_of(
        [(*base, "-", "left lung."), (*base, "-", "right lung"), (*base, "-", "right lung"), (*base, "-", "")]
    )
    cache = ResponseCache(tmp_path / "cache.sqlite")
    with llm_server.LocalLlmServer() as server:

        def client(name: str) -> LlmClient:
            config = EndpointConfig(model=name, base_url=server.base_url, api_key="x", max_parse_attempts=2)
            return LlmClient(config, cache)

        names = ("judge-lenient", "judge-strict", "judge-garbled")
        three = Jury({name: client(name) for name in names})
        verdicts = three(frame)
        # lenient says yes to everything, strict only to the match, garbled never answers: a 1-1 tie is incorrect
        assert verdicts == [True, False, False, False]
        assert three.verdicts is not None
        assert three.verdicts["judge-garbled"].tolist() == [None, None, None, False]  # empty answer: not asked
        assert three.verdicts["judge-lenient"].tolist() == [True, True, True, False]  # empty: not asked, incorrect
        assert three.accounting.rejects == 2 * 2  # two distinct non-empty answers x two parse attempts
        requests = server.state.requests
        lenient_majority = Jury({"judge-lenient": client("judge-lenient"), "judge-strict": client("judge-strict")})
        lenient_majority.clients["judge-lenient-2"] = client("judge-lenient")
        assert lenient_majority(frame) == [True, True, True, False]
        assert server.state.requests == requests  # every reply came from the cache
    table = metrics.evaluate_predictions(
        frame, metrics.EngineOptions(bertscore=False, jury=lenient_majority, jury_label=lenient_majority.label)
    )
    assert table.loc[0, "jury_accuracy"] == 0.75 and "majority of 3" in table.loc[0, "jury"]


# --------------------------------------------------------------------------- AlignScore, files


def test_alignscore_is_optional_and_wired() -> None:
    with pytest.raises(FileNotFoundError, match="RAD3D_ALIGNSCORE_CKPT"):
        metrics.alignscore_scorer("/nonexistent/AlignScore-large.ckpt")
    seen: list[tuple[list[str], list[str]]] = []

    def fake(contexts: list[str], claims: list[str]) -> list[float]:
        seen.append((contexts, claims))
        return [0.25] * len(claims)

    base = ("m", 1, 1, "A", "Open", "Q")
    frame = frame_of([(*base, "ref one", "-", "pred one"), (*base, "ref two", "-", "")])
    scores = metrics.sample_scores(frame, metrics.EngineOptions(bertscore=False, alignscore=fake))
    assert seen == [(["ref one"], ["pred one"])]  # reference as context, empty predictions skipped
    assert scores.loc[0, "alignscore"] == 0.25 and math.isnan(scores.loc[1, "alignscore"])


def test_read_rows_keeps_every_row_and_names_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    line = '{"question": "Q", "answer": "A", "prediction": "P"}\n'
    path.write_text(line * 3 + '{"question": "Q", "answer": null}\n')
    rows = metrics.read_rows(path)
    assert len(rows) == 4 and rows["prediction"].tolist() == ["P", "P", "P", ""]
    assert rows["Answer"].tolist() == ["A", "A", "A", ""]
    assert metrics.read_prediction_pairs(path) == (rows["prediction"].tolist(), rows["Answer"].tolist())
    aliased = tmp_path / "aliased.jsonl"
    aliased.write_text('{"output": "P", "ground_truth": "A", "question": "Q"}\n{"output": null}\n')
    assert metrics.read_prediction_pairs(aliased) == (["P", ""], ["A", ""])
    aliased.write_text('{"answer": "A", "question": "Q"}\n')
    with pytest.raises(ValueError, match="no 'prediction' column"):
        metrics.read_prediction_pairs(aliased)
    bad = tmp_path / "bad.jsonl"
    bad.write_text(line + "{oops\n")
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 2"):
        metrics.read_rows(bad)
    # lines the one-parse fast path would accept as a whole file must still fail on their own
    two_objects_on_one_line = line + line.strip() + "," + line
    split_object = '{"prediction": ["a"\n"b"], "answer": "x"}\n' + line.strip() + "," + line  # joins to valid JSON
    bad.write_text(split_object)
    with pytest.raises(ValueError, match=r"bad\.jsonl: line 1: not JSON"):
        metrics.read_rows(bad)
    numbers = tmp_path / "numbers.jsonl"
    numbers.write_text('{"prediction": 3, "answer": 12345678901234567, "question": "Q"}\n{"prediction": "x\u2028y"}\n')
    expected = (["3", "x\u2028y"], ["12345678901234567", ""])
    assert metrics.read_prediction_pairs(numbers) == expected  # as written; U+2028 stays inside its line
    rows = metrics.read_rows(numbers)
    assert (rows["prediction"].tolist(), rows["Answer"].tolist()) == expected
    for text, reason in ((two_objects_on_one_line, "line 2: not JSON"), (line + "[1, 2]\n", "line 2: expected")):
        bad.write_text(text)
        with pytest.raises(ValueError, match=rf"bad\.jsonl: {reason}"):
            metrics.read_rows(bad)
    csv = tmp_path / "p.csv"
    csv.write_text("question,answer\nQ,A\n")
    with pytest.raises(ValueError, match="no 'prediction' column"):
        metrics.read_rows(csv)
    frame = metrics.as_3drad_frame(metrics.read_rows(path), model="x")
    assert set(frame["QuestionType"]) == {"Open"} and set(frame["Task"]) == {0} and set(frame["model"]) == {"x"}
    letters = pd.DataFrame({"prediction": ["B.", "B.", "C."], "AnswerChoice": ["b", " B", "E"]})
    assert metrics.as_3drad_frame(letters, model="x")["AnswerChoice"].tolist() == ["B", "B", ""]

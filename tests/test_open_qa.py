"""Tasks 1-3: parsers, prompts, rules backend, grounding, curation, and generation via the local server."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest

from rad3d_pipeline.llm.cache import ResponseCache
from rad3d_pipeline.llm.client import EndpointConfig, LlmClient
from rad3d_pipeline.llm.parsers import (
    SCORE_DIMENSIONS,
    ParseError,
    clean_reply,
    parse_scores,
    parse_task3_stage1,
    parse_task3_stage2,
    parse_task12,
)
from rad3d_pipeline.llm.prompts import STARTERS, load_template, starters_for
from rad3d_pipeline.open_qa.curation import CurationSettings, curate
from rad3d_pipeline.open_qa.llm_generation import generate_task3, generate_task12, score_candidates
from rad3d_pipeline.open_qa.rules_backend import generate_rules, heuristic_scores
from rad3d_pipeline.open_qa.tasks_open import Candidate, answer_grounded, candidates_frame, numbers_in
from tests.llm_server import Faults, LocalLlmServer

TASK12_REPLY = """<think>
Let me think about the report first.
</think>
1). Anatomical observation (based on Findings)
**Question-1:** What is the calibre of the trachea? **Answer:** Normal
2) Pathological observation (based on Findings)
Question-2:  Where is the ground-glass density?   Answer: Right lower lobe
3). Abnormality type (based on Findings)
Question 3: Which abnormality is in the kidneys?
Answer: Cysts
4). Abnormality feature (based on Findings)
Question-4: What is the contour of the liver lesion? Answer: Lobulated
5). Abnormality position (based on Findings)
Question-5: Where are the calculi? Answer: Both kidneys
6). Abnormality or normality diagnosis (based on Impressions)
Question-6: Which disease is suggested? Answer: Polycystic kidney disease
"""


def test_parse_task12_tolerates_variations() -> None:
    pairs = parse_task12(TASK12_REPLY)
    assert [p.index for p in pairs] == [1, 2, 3, 4, 5, 6]
    assert pairs[0].question == "What is the calibre of the trachea?" and pairs[0].answer == "Normal"
    assert pairs[1].answer == "Right lower lobe" and pairs[2].answer == "Cysts"
    with pytest.raises(ParseError, match="expected 6"):
        parse_task12("Question-1: What? Answer: x")


def test_parse_stage1_stage2_and_scores() -> None:
    assert parse_task3_stage1("1). Sentence-1: A 5 mm nodule.\n2). Sentence-2: 14 mm thick effusion.") == [
        "A 5 mm nodule.",
        "14 mm thick effusion.",
    ]
    assert parse_task3_stage1("") == []
    qa = parse_task3_stage2("**Diameter**\nQuestion: What is the diameter of the nodule? Answer: 5 mm")
    assert (qa.aspect, qa.answer) == ("Diameter", "5 mm")
    with pytest.raises(ParseError):
        parse_task3_stage2("nothing useful")
    scores = parse_scores(
        '```json\n{"Visual Verifiability": 3, "Specificity & Clarity": 4, "Answer Appropriateness": 5,'
        ' "Q-A Alignment": 5, "Linguistic Quality": 4}\n```'
    )
    assert list(scores.values()) == [3, 4, 5, 5, 4]
    lines = "1. Visual Verifiability: 2\n**Specificity & Clarity**: 4\nAnswer Appropriateness - 5\nQ-A Alignment: 5\n"
    assert parse_scores(lines + "Linguistic Quality: 3")["Visual Verifiability"] == 2
    with pytest.raises(ParseError, match="missing score"):
        parse_scores(lines)
    with pytest.raises(ParseError, match="outside 1-5"):
        parse_scores(lines + "Linguistic Quality: 9")
    assert clean_reply("<think>x</think>**a**") == "a"


def test_prompts_and_starters() -> None:
    for name in ("task12", "task3_stage1", "task3_stage2", "scoring"):
        assert load_template(name).template_version.endswith("@1")
    starters = starters_for(0, "report-1")
    assert sorted(starters) == sorted(list(STARTERS) * 2)
    assert starters == starters_for(0, "report-1")
    messages = load_template("task12").messages(Findings="F text", Impressions="I text", Starter1="Where")
    assert "Findings: F text" in messages[1]["content"] and "Question-1: Where ...?" in messages[1]["content"]


def test_task3_grounding() -> None:
    assert numbers_in("3,5 cm and 12x10 mm") == ["3.5", "12", "10"]
    assert answer_grounded("14 mm", "Effusion 14 mm thick.") is None
    assert answer_grounded("3.3 cm", "A bulla of 3.30 cm.") is None
    assert "not in the source sentence" in (answer_grounded("15 mm", "A 14 mm nodule.") or "")
    assert answer_grounded("Large", "A large mass.") == "answer has no number"


def sentences_frame() -> pd.DataFrame:
    rows = [
        ("valid_1_a_1.nii.gz", "findings", "Trachea and both main bronchi are open.", False, [], False),
        ("valid_1_a_1.nii.gz", "findings", "A 5 mm solid nodule in the right upper lobe.", True, ["5 mm"], False),
        (
            "valid_1_a_1.nii.gz",
            "findings",
            "Pleural effusion reaching 14 mm in thickness on the left.",
            True,
            ["14 mm"],
            False,
        ),
        ("valid_1_a_1.nii.gz", "findings", "No consolidation was detected.", False, [], True),
        ("valid_1_a_1.nii.gz", "impressions", "Nodule in the right upper lobe.", False, [], False),
    ]
    return pd.DataFrame(
        rows, columns=["VolumeName", "section", "text", "has_measurement", "measurement_texts", "negated"]
    )


VOLUMES = pd.DataFrame({"VolumeName": ["valid_1_a_1.nii.gz"], "split": ["valid"], "patient_id": ["valid_1"]})


def test_rules_backend_makes_grounded_qa_for_every_task() -> None:
    candidates = generate_rules(sentences_frame(), VOLUMES, {}, {1, 2, 3})
    frame = candidates_frame(candidates)
    assert set(frame["task"]) == {1, 2, 3}
    assert (frame["backend"] == "rules").all()
    task3 = frame[frame["task"] == 3].set_index("answer")
    assert task3.loc["5 mm", "subtask_name"] == "Diameter"
    assert task3.loc["14 mm", "subtask_name"] == "Thickness"
    assert "right upper lobe" in task3.loc["5 mm", "question"]
    assert all(answer_grounded(a, s) is None for a, s in zip(task3.index, task3["source_text"], strict=True))
    position = frame[frame["subtask_name"] == "Abnormality_position"].iloc[0]
    assert position["answer"] == "Right upper lobe"


def test_heuristic_judge() -> None:
    good = heuristic_scores("Where is the nodule located?", "Right upper lobe")
    assert min(good.values()) >= 4 and list(good) == list(SCORE_DIMENSIONS)
    vague = heuristic_scores("What is the size of the nodules?", "A few millimeters")
    assert vague["Specificity & Clarity"] <= 3 and vague["Q-A Alignment"] == 1
    wrong_type = heuristic_scores("Where is the effusion?", "Moderate")
    assert wrong_type["Q-A Alignment"] == 2


def _cand(i: int, question: str, answer: str, split: str = "valid") -> Candidate:
    return Candidate(
        f"valid_{i}_a_1.nii.gz", split, f"valid_{i}", 1, "Anatomical_observation", question, answer, "", "rules", "m"
    )


def test_curation_filters_ranks_and_caps() -> None:
    cands = [_cand(i, "Same question?", f"answer {i}") for i in range(15)]
    cands += [_cand(100 + i, f"Question {i}?", "Same answer") for i in range(12)]
    cands.append(_cand(200, "Low scored?", "x"))
    frame = candidates_frame(cands)
    rows = []
    for n, qa_id in enumerate(frame["qa_id"]):
        base = 2 if n == len(frame) - 1 else 3 + (n % 3)
        rows.append({"qa_id": qa_id, **{d: base for d in SCORE_DIMENSIONS}, "mean": float(base)})
    scores = pd.DataFrame(rows)
    curated = curate(frame, scores, CurationSettings())
    assert "Low scored?" not in set(curated["question"])
    assert curated["question"].value_counts().max() <= 10
    assert curated["answer"].value_counts().max() <= 10
    assert list(curated["mean"]) == sorted(curated["mean"], reverse=True)
    # Kept rows under the cap are the best-scored ones.
    same_q = curated[curated["question"] == "Same question?"]
    assert len(same_q) == 10 and same_q["mean"].min() >= scores["mean"].iloc[:15].sort_values().iloc[5]
    assert len(curate(frame, scores, CurationSettings(cap=3))) < len(curated)


REPORTS = pd.DataFrame(
    {
        "VolumeName": ["valid_1_a_1.nii.gz", "valid_1_a_2.nii.gz", "valid_2_a_1.nii.gz"],
        "split": ["valid"] * 3,
        "patient_id": ["valid_1", "valid_1", "valid_2"],
        "Findings_EN": [
            "A 5 mm nodule in the right upper lobe.",
            "A 5 mm nodule in the right upper lobe.",
            "Effusion of 14 mm thickness in the left lower lobe.",
        ],
        "Impressions_EN": ["Nodule.", "Nodule.", "Effusion."],
    }
)


def _client(server: LocalLlmServer, path: Path, **kw: object) -> LlmClient:
    config = {"model": "gen", "base_url": server.base_url, "api_key": "k", "timeout_s": 30.0} | kw
    return LlmClient(EndpointConfig(**config), ResponseCache(path))  # type: ignore[arg-type]


def test_llm_generation_shares_requests_and_survives_faults(tmp_path: Path) -> None:
    with LocalLlmServer() as server:
        clean = generate_task12(_client(server, tmp_path / "a.sqlite"), REPORTS, {1, 2}, seed=0)
        assert server.state.requests == 2  # the two reconstructions of valid_1 share one request
    assert len(clean.candidates) == 18 and not clean.rejects
    faults = Faults(rate_429=0.2, rate_500=0.1, rate_malformed=0.2, seed=3)
    with LocalLlmServer(faults) as server:
        noisy = generate_task12(
            _client(server, tmp_path / "b.sqlite", max_attempts=10, max_parse_attempts=8), REPORTS, {1, 2}, seed=0
        )
    key = [(c.volume_name, c.subtask_name, c.question, c.answer) for c in clean.candidates]
    assert [(c.volume_name, c.subtask_name, c.question, c.answer) for c in noisy.candidates] == key


def test_llm_task3_and_scoring(tmp_path: Path) -> None:
    sentences = pd.DataFrame({"VolumeName": REPORTS["VolumeName"], "text": REPORTS["Findings_EN"]})
    with LocalLlmServer() as server:
        client = _client(server, tmp_path / "c.sqlite")
        result = generate_task3(client, sentences, REPORTS)
        assert {c.answer for c in result.candidates} == {"5 mm", "14 mm"}
        assert {c.subtask_name for c in result.candidates} == {"Diameter", "Thickness"}
        frame = candidates_frame(result.candidates)
        scores, scored = score_candidates(_client(server, tmp_path / "c.sqlite", model="judge"), frame)
    assert len(scores) == len(frame) and not scored.rejects
    assert scores[list(SCORE_DIMENSIONS)].isin([1, 2, 3, 4, 5]).all().all()


def test_generation_in_batch_mode(tmp_path: Path) -> None:
    with LocalLlmServer(Faults(rate_malformed=0.3, seed=2)) as server:
        client = _client(server, tmp_path / "d.sqlite", batch=True, batch_poll_s=0.01, max_parse_attempts=8)
        result = generate_task12(client, REPORTS, {1, 2}, seed=0)
        assert len(server.state.batches) == 1
        assert len(result.candidates) == 18  # malformed batch replies retried with ordinary requests
    with LocalLlmServer() as clean:
        reference = generate_task12(_client(clean, tmp_path / "e.sqlite"), REPORTS, {1, 2}, seed=0)
    assert [c.answer for c in result.candidates] == [c.answer for c in reference.candidates]


def test_json_mode_replies() -> None:
    items = [{"question": f"What is {i}?", "answer": f"A{i}"} for i in range(1, 7)]
    import json

    pairs = parse_task12(json.dumps({"pairs": items}))
    assert [p.answer for p in pairs] == [f"A{i}" for i in range(1, 7)]
    with pytest.raises(ParseError, match="expected 6"):
        parse_task12(json.dumps(items[:4]))
    qa = parse_task3_stage2('{"aspect": "thickness", "question": "How thick is the effusion?", "answer": "14 mm"}')
    assert (qa.aspect, qa.answer) == ("Thickness", "14 mm")
    with pytest.raises(ParseError, match="aspect"):
        parse_task3_stage2('{"aspect": "volume", "question": "Q?", "answer": "3 ml"}')

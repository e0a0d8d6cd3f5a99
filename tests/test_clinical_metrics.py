"""Clinical metrics (issue 17, item 2): mechanics only, on a tiny random BERT, fake packages and a local judge.

Numbers from random weights and fake packages mean nothing; these tests check that each path
computes what it says: label matrices from the classifier equal a direct forward pass, F1 equals
an independent computation, the package adapters call the documented API with the local folders
and keep per-sample values in place, the GREEN judge goes through the LLM client (cache, rejects,
failure budget), and an unconfigured metric is "not computed" with NaN, never 0.
"""

from __future__ import annotations

import hashlib
import importlib.machinery
import json
import math
import re
import sys
import threading
import types
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import pytest

from rad3d_pipeline.common.errors import LlmStageError
from rad3d_pipeline.evaluation import clinical_metrics as cm
from rad3d_pipeline.ingest.labels import CTRATE_LABELS
from rad3d_pipeline.llm.parsers import ParseError
from tests.conftest import skip_or_fail


def _need(module: str) -> None:
    try:
        __import__(module)
    except ImportError:
        skip_or_fail(f"{module} is not installed in the test environment")


# --------------------------------------------------------------------------- label F1


def _f1_by_hand(truth: np.ndarray, pred: np.ndarray) -> tuple[float, float]:
    """Micro and macro F1 by loops over labels and samples (labels positive nowhere left out of macro)."""
    tp = fp = fn = 0
    per: list[float] = []
    for j in range(truth.shape[1]):
        a = b = c = 0
        for i in range(truth.shape[0]):
            t, p = bool(truth[i, j]), bool(pred[i, j])
            a += t and p
            b += p and not t
            c += t and not p
        tp, fp, fn = tp + a, fp + b, fn + c
        if a + b + c:
            per.append(2 * a / (2 * a + b + c))
    micro = 2 * tp / (2 * tp + fp + fn) if tp + fp + fn else math.nan
    return micro, (sum(per) / len(per) if per else math.nan)


def test_label_f1_small_case_by_hand() -> None:
    truth = np.array([[1, 0, 0, 0], [1, 1, 0, 0], [0, 0, 0, 0]])
    pred = np.array([[1, 1, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]])
    got = cm.label_f1(truth, pred)
    # label 0: tp 2 -> 1; label 1: fp 1, fn 1 -> 0; label 2: fp 1 -> 0; label 3: positive nowhere -> left out
    assert got.micro == pytest.approx(4 / 7)
    assert got.macro == pytest.approx(1 / 3)
    assert got.labels_scored == 3 and math.isnan(got.per_label[3])
    nothing = cm.label_f1(np.zeros((3, 18)), np.zeros((3, 18)))
    assert math.isnan(nothing.micro) and math.isnan(nothing.macro) and nothing.labels_scored == 0
    with pytest.raises(ValueError, match="shapes"):
        cm.label_f1(np.zeros((3, 18)), np.zeros((2, 18)))


def test_label_f1_agrees_with_loops_and_sklearn_on_random_matrices() -> None:
    rng = np.random.default_rng(3)
    sklearn_metrics: Any = None
    try:
        from sklearn import metrics as sklearn_metrics
    except ImportError:  # the loop reference still runs
        sklearn_metrics = None
    for _ in range(20):
        n, k = int(rng.integers(1, 30)), int(rng.integers(1, 19))
        truth = rng.random((n, k)) < rng.random()
        pred = rng.random((n, k)) < rng.random()
        got = cm.label_f1(truth, pred)
        micro, macro = _f1_by_hand(truth, pred)
        assert (math.isnan(got.micro) and math.isnan(micro)) or got.micro == pytest.approx(micro)
        assert (math.isnan(got.macro) and math.isnan(macro)) or got.macro == pytest.approx(macro)
        if sklearn_metrics is not None and got.labels_scored:
            scored = [j for j in range(k) if math.isfinite(got.per_label[j])]
            assert got.micro == pytest.approx(sklearn_metrics.f1_score(truth, pred, average="micro", zero_division=0))
            ref = sklearn_metrics.f1_score(truth[:, scored], pred[:, scored], average="macro", zero_division=0)
            assert got.macro == pytest.approx(ref)


# --------------------------------------------------------------------------- the tiny classifier


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory: pytest.TempPathFactory) -> Path:
    _need("transformers")
    _need("torch")
    from tests.tiny_bert import make_tiny_bert

    return make_tiny_bert(tmp_path_factory.mktemp("tiny_bert"))


TEXTS = [
    "Right upper lobe nodule of 5 mm.",
    "No pleural effusion.",
    "Bilateral ground glass opacities in the lower lobes with septal thickening and bronchiectasis.",
    "Cardiomegaly.",
    "No pleural effusion.",  # a repeat: run once, returned twice
]


def _direct_probabilities(folder: Path, texts: list[str]) -> np.ndarray:
    """One text at a time, no padding, no batching: sigmoid of the model's logits."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    model = AutoModelForSequenceClassification.from_pretrained(str(folder), local_files_only=True).eval()
    rows = []
    with torch.no_grad():
        for text in texts:
            logits = model(**tokenizer(text, return_tensors="pt")).logits
            rows.append(torch.sigmoid(logits.double())[0].numpy())
    return np.stack(rows)


def test_classifier_equals_a_direct_forward_pass_and_is_deterministic(tiny_bert: Path) -> None:
    classifier = cm.AbnormalityClassifier(tiny_bert, batch_size=2)  # batches with padding
    probs = classifier.probabilities(TEXTS)
    assert probs.shape == (len(TEXTS), 18) and probs.dtype == np.float64
    np.testing.assert_allclose(probs, _direct_probabilities(tiny_bert, TEXTS), rtol=1e-5, atol=1e-6)
    labels = classifier.labels(TEXTS)
    assert labels.shape == (len(TEXTS), 18) and set(np.unique(labels)) <= {0, 1}
    np.testing.assert_array_equal(labels, (probs >= 0.5).astype(np.int8))
    assert 0 < labels.sum() < labels.size  # random weights, yet both sides of the threshold occur
    again = cm.AbnormalityClassifier(tiny_bert, batch_size=16).probabilities(TEXTS)
    np.testing.assert_allclose(again, probs, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(probs[1], probs[4])
    assert classifier.probabilities([]).shape == (0, 18)


def test_named_outputs_are_put_in_ctrate_order(tmp_path: Path) -> None:
    _need("transformers")
    from tests.tiny_bert import make_tiny_bert

    reversed_names = {i: name for i, name in enumerate(reversed(CTRATE_LABELS))}
    folder = make_tiny_bert(tmp_path / "named", id2label=reversed_names, seed=1)
    probs = cm.AbnormalityClassifier(folder).probabilities(TEXTS[:3])
    direct = _direct_probabilities(folder, TEXTS[:3])
    np.testing.assert_allclose(probs, direct[:, ::-1], rtol=1e-5, atol=1e-6)


def test_checkpoints_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    _need("transformers")
    from tests.tiny_bert import make_tiny_bert

    with pytest.raises(cm.ClinicalMetricError, match="5 outputs"):
        cm.AbnormalityClassifier(make_tiny_bert(tmp_path / "five", num_labels=5))
    odd = {i: f"finding {i}" for i in range(18)}
    with pytest.raises(cm.ClinicalMetricError, match="not CT-RATE abnormalities"):
        cm.AbnormalityClassifier(make_tiny_bert(tmp_path / "odd", id2label=odd))
    (tmp_path / "empty").mkdir()
    with pytest.raises(cm.ClinicalMetricError, match="cannot be loaded"):
        cm.AbnormalityClassifier(tmp_path / "empty")
    config = cm.ClinicalMetricConfig(label_classifier=tmp_path / "empty")
    with pytest.raises(cm.ClinicalMetricError, match="cannot be loaded"):
        cm.score_open_ended(_predictions(), config)


def _predictions() -> pd.DataFrame:
    rows = []
    answers = {
        1: ["Right upper lobe nodule.", "Cardiomegaly.", "No pleural effusion.", "Emphysema in the upper lobes."],
        2: ["Consolidation in the left lower lobe.", "Bronchiectasis.", "Hiatal hernia."],
        3: ["5 mm.", "12 mm nodule in the right middle lobe."],
    }
    predictions = {
        "model-a": {
            1: ["Nodule in the right upper lobe.", "Normal heart size.", "", "Emphysema."],
            2: ["Atelectasis.", "Bronchiectasis and mild thickening.", "No hernia."],
            3: ["7 mm.", "12 mm."],
        },
        "model-b": {
            1: ["Lung nodule.", "Cardiomegaly is present.", "Pleural effusion.", "Normal."],
            2: ["Consolidation.", "", "Hiatal hernia."],
            3: ["", ""],
        },
    }
    for model, per_task in predictions.items():
        for task, preds in per_task.items():
            for i, pred in enumerate(preds):
                rows.append(
                    {
                        "model": model,
                        "Task": task,
                        "Subtask": 1,
                        "QuestionType": "Open",
                        "Question": f"What is seen ({task}.{i})?",
                        "Answer": answers[task][i],
                        "prediction": pred,
                    }
                )
    closed = {"model": "model-a", "Task": 4, "Subtask": 1, "QuestionType": "Close", "Question": "Is there?"}
    rows.append({**closed, "Answer": "Yes", "prediction": "A."})  # closed rows are not scored here
    return pd.DataFrame(rows)


def test_label_f1_per_task_equals_a_direct_computation(tiny_bert: Path) -> None:
    frame = _predictions()
    config = cm.ClinicalMetricConfig(label_classifier=tiny_bert)
    table = cm.score_open_ended(frame, config)
    assert list(table.columns) == list(cm.RESULT_COLUMNS)
    assert set(table["Task"]) == {1, 2, 3}  # the closed Task 4 row is not an open-ended answer
    assert len(table) == 2 * 3 * len(cm.METRICS)
    for (model, task), group in frame[frame["QuestionType"] == "Open"].groupby(["model", "Task"]):
        kept = group[group["prediction"].str.strip() != ""]
        rows = table[(table["model"] == model) & (table["Task"] == task)].set_index("metric")
        if kept.empty:
            assert rows.loc["label_f1_micro", "status"].startswith("undefined: every prediction is empty")
            assert math.isnan(rows.loc["label_f1_micro", "value"])
            assert rows.loc["label_f1_micro", "skipped_empty"] == len(group)
            continue
        truth = _direct_probabilities(tiny_bert, kept["Answer"].tolist()) >= 0.5
        pred = _direct_probabilities(tiny_bert, kept["prediction"].tolist()) >= 0.5
        micro, macro = _f1_by_hand(truth, pred)
        assert rows.loc["label_f1_micro", "value"] == pytest.approx(micro)
        assert rows.loc["label_f1_macro", "value"] == pytest.approx(macro)
        assert rows.loc["label_f1_micro", "n"] == len(kept)
        assert rows.loc["label_f1_micro", "skipped_empty"] == len(group) - len(kept)
        assert rows.loc["label_f1_micro", "status"] == "computed"
        assert str(tiny_bert) in rows.loc["label_f1_micro", "source"]  # the number names its checkpoint
        for other in ("ratescore", "radgraph_f1", "green"):
            assert rows.loc[other, "status"].startswith("not computed: ")
            assert math.isnan(rows.loc[other, "value"])
    again = cm.score_open_ended(frame, config)
    pd.testing.assert_frame_equal(table, again)  # deterministic


def test_unconfigured_metrics_are_not_computed_never_zero(tmp_path: Path) -> None:
    table = cm.score_open_ended(_predictions(), cm.ClinicalMetricConfig())
    assert not table.empty
    assert table["status"].str.startswith("not computed: ").all()
    assert table["value"].isna().all() and (table["value"] != 0).all()
    reasons = cm.available_metrics(cm.ClinicalMetricConfig())
    assert reasons["label_f1_micro"] == "label_classifier is not set"
    assert reasons["green"] == "green_judge is off"
    missing = cm.available_metrics(cm.ClinicalMetricConfig(label_classifier=tmp_path / "nowhere", green_judge=True))
    assert missing["label_f1_macro"] == f"label_classifier {tmp_path / 'nowhere'} is not a folder"
    assert missing["green"] == "no LLM client is configured for the judge"
    wide = cm.wide_table(table)
    assert len(wide) == 6 and wide["green"].isna().all()
    assert wide["ratescore_status"].str.startswith("not computed").all()
    with pytest.raises(cm.ClinicalMetricError, match="task, answer and prediction"):
        cm.score_open_ended(pd.DataFrame({"Task": [1], "Answer": ["x"]}), cm.ClinicalMetricConfig())


def test_lower_case_columns_are_accepted(tiny_bert: Path) -> None:
    frame = pd.DataFrame({"task": [1, 1], "answer": ["Cardiomegaly.", "Emphysema."], "prediction": ["Heart.", ""]})
    table = cm.score_open_ended(frame, cm.ClinicalMetricConfig(label_classifier=tiny_bert))
    row = table[table["metric"] == "label_f1_micro"].iloc[0]
    assert row["model"] == "" and row["Task"] == 1 and row["n"] == 1 and row["skipped_empty"] == 1


# --------------------------------------------------------------------------- RaTEScore and RadGraph (fake packages)


def _fake_module(name: str, **attrs: Any) -> types.ModuleType:
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    for key, value in attrs.items():
        setattr(module, key, value)
    return module


def _overlap(a: str, b: str) -> float:
    x, y = set(re.findall(r"\w+", a.lower())), set(re.findall(r"\w+", b.lower()))
    return len(x & y) / max(1, len(x | y))


class FakeRaTEScore:
    """The documented surface of RaTEScore.RaTEScore: __init__(bert_model, eval_model, ...), compute_score."""

    made: ClassVar[list[dict[str, Any]]] = []
    calls: ClassVar[list[tuple[list[str], list[str]]]] = []
    extra: ClassVar[int] = 0

    def __init__(self, bert_model: str, eval_model: str, batch_size: int = 1, use_gpu: bool = True, **kw: Any) -> None:
        FakeRaTEScore.made.append({"bert_model": bert_model, "eval_model": eval_model, "use_gpu": use_gpu, **kw})

    def compute_score(self, candidate_list: list[str], reference_list: list[str]) -> list[float]:
        assert isinstance(candidate_list, list) and isinstance(reference_list, list)
        FakeRaTEScore.calls.append((candidate_list, reference_list))
        scores = [_overlap(c, r) for c, r in zip(candidate_list, reference_list, strict=True)]
        return scores + [0.5] * FakeRaTEScore.extra


@pytest.fixture
def fake_ratescore(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> cm.ClinicalMetricConfig:
    FakeRaTEScore.made, FakeRaTEScore.calls, FakeRaTEScore.extra = [], [], 0
    monkeypatch.setitem(sys.modules, "RaTEScore", _fake_module("RaTEScore", RaTEScore=FakeRaTEScore))
    (tmp_path / "ner").mkdir()
    (tmp_path / "biolord").mkdir()
    return cm.ClinicalMetricConfig(ratescore_ner_model=tmp_path / "ner", ratescore_eval_model=tmp_path / "biolord")


def _per_task_mean(frame: pd.DataFrame, score: Any) -> dict[tuple[str, int], float]:
    out = {}
    for (model, task), group in frame[frame["QuestionType"] == "Open"].groupby(["model", "Task"]):
        kept = group[group["prediction"].str.strip() != ""]
        values = [score(p, a) for p, a in zip(kept["prediction"], kept["Answer"], strict=True)]
        out[(str(model), int(task))] = float(np.mean(values)) if values else math.nan
    return out


def test_ratescore_adapter_calls_the_documented_api_with_local_folders(
    fake_ratescore: cm.ClinicalMetricConfig, tmp_path: Path
) -> None:
    frame = _predictions()
    table = cm.score_open_ended(frame, fake_ratescore)
    assert FakeRaTEScore.made == [
        {
            "bert_model": str(tmp_path / "ner"),
            "eval_model": str(tmp_path / "biolord"),
            "use_gpu": False,
            "affinity_matrix": "long",
        }
    ]
    ((candidates, references),) = FakeRaTEScore.calls  # one call, empty predictions left out
    assert "" not in candidates and len(candidates) == len(references) == 14
    rows = table[table["metric"] == "ratescore"]
    for (model, task), expected in _per_task_mean(frame, _overlap).items():
        row = rows[(rows["model"] == model) & (rows["Task"] == task)].iloc[0]
        if math.isnan(expected):
            assert row["status"] == "undefined: every prediction is empty" and math.isnan(row["value"])
        else:
            assert row["status"] == "computed" and row["value"] == pytest.approx(expected)
            assert str(tmp_path / "ner") in row["source"]
    FakeRaTEScore.extra = 1
    with pytest.raises(cm.ClinicalMetricError, match="RaTEScore returned 15 scores for 14 pairs"):
        cm.score_open_ended(frame, fake_ratescore)


def test_a_non_finite_package_score_stops_with_one_line(
    fake_ratescore: cm.ClinicalMetricConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NaN from the package would leave its pair out of the task mean unseen: it stops the stage instead."""

    def with_nan(self: FakeRaTEScore, candidate_list: list[str], reference_list: list[str]) -> list[float]:
        return [math.nan if i == 3 else 0.5 for i in range(len(candidate_list))]

    monkeypatch.setattr(FakeRaTEScore, "compute_score", with_nan)
    with pytest.raises(cm.ClinicalMetricError, match=r"^RaTEScore returned nan for pair 3 \(1 of 14 pairs\)$"):
        cm.score_open_ended(_predictions(), fake_ratescore)


def test_ratescore_without_its_package_or_folders_is_not_computed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ner").mkdir()
    (tmp_path / "biolord").mkdir()
    config = cm.ClinicalMetricConfig(ratescore_ner_model=tmp_path / "ner", ratescore_eval_model=tmp_path / "biolord")
    monkeypatch.setitem(sys.modules, "RaTEScore", None)  # an import of it fails, as when not installed
    reason = cm.available_metrics(config)["ratescore"]
    assert reason == "the RaTEScore package is not installed"
    only_ner = cm.ClinicalMetricConfig(ratescore_ner_model=tmp_path / "ner")
    assert cm.available_metrics(only_ner)["ratescore"] == "ratescore_eval_model is not set"


class FakeF1RadGraph:
    """The documented surface of radgraph.F1RadGraph: (reward_level, model_type, **kw), called with hyps, refs."""

    made: ClassVar[list[dict[str, Any]]] = []

    def __init__(self, reward_level: str, model_type: str | None = None, **kw: Any) -> None:
        assert reward_level in {"simple", "partial", "complete", "all"}
        FakeF1RadGraph.made.append({"reward_level": reward_level, "model_type": model_type, **kw})

    def __call__(self, refs: list[str], hyps: list[str]) -> tuple[Any, Any, list[Any], list[Any]]:
        simple = [1.0] * len(hyps)
        partial = [_overlap(h, r) for h, r in zip(hyps, refs, strict=True)]
        complete = [0.0] * len(hyps)
        rewards = (simple, partial, complete)
        return (tuple(float(np.mean(r)) for r in rewards), rewards, [], [])


def _radgraph_folder(root: Path, model_type: str = "radgraph-xl") -> Path:
    model = root / model_type
    (model / "vocabulary").mkdir(parents=True)
    (model / "config.json").write_text("{}", encoding="utf-8")
    (model / "weights.th").write_bytes(b"\0")
    return root


def test_radgraph_adapter_takes_rg_er_and_never_lets_the_package_download(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    FakeF1RadGraph.made = []
    monkeypatch.setitem(sys.modules, "radgraph", _fake_module("radgraph", F1RadGraph=FakeF1RadGraph))
    empty = tmp_path / "empty_cache"
    empty.mkdir()
    not_extracted = cm.ClinicalMetricConfig(radgraph_model_dir=empty)
    reason = cm.available_metrics(not_extracted)["radgraph_f1"]
    assert reason is not None and "does not hold the extracted radgraph-xl archive" in reason
    table = cm.score_open_ended(_predictions(), not_extracted)
    assert table[table["metric"] == "radgraph_f1"]["status"].str.startswith("not computed: ").all()
    assert FakeF1RadGraph.made == []  # the package (which would download) was never called

    folder = _radgraph_folder(tmp_path / "rg")
    config = cm.ClinicalMetricConfig(radgraph_model_dir=folder, radgraph_tokenizer_cache=tmp_path / "tok")
    frame = _predictions()
    table = cm.score_open_ended(frame, config)
    assert FakeF1RadGraph.made == [
        {
            "reward_level": "all",
            "model_type": "radgraph-xl",
            "model_cache_dir": str(folder),
            "cuda": -1,
            "tokenizer_cache_dir": str(tmp_path / "tok"),
        }
    ]
    rows = table[table["metric"] == "radgraph_f1"]
    for (model, task), expected in _per_task_mean(frame, _overlap).items():
        row = rows[(rows["model"] == model) & (rows["Task"] == task)].iloc[0]
        if not math.isnan(expected):
            assert row["value"] == pytest.approx(expected) and row["status"] == "computed"  # RG_ER, not RG_E (1.0)
    bad_type = cm.ClinicalMetricConfig(radgraph_model_dir=folder, radgraph_model_type="chexbert")
    assert "is not one of" in str(cm.available_metrics(bad_type)["radgraph_f1"])


# --------------------------------------------------------------------------- GREEN: parser


def test_green_parser_reads_json_and_greens_own_format() -> None:
    reply = (
        "<think>compare</think>```json\n"
        '{"significant_errors": {"a": 1, "b": 0, "c": 2, "d": 0, "e": 0, "f": 0},'
        ' "insignificant_errors": {"a": 1}, "matched_findings": 3}\n```'
    )
    counts = cm.parse_green_reply(reply)
    assert counts.significant == {"a": 1, "b": 0, "c": 2, "d": 0, "e": 0, "f": 0}
    assert counts.insignificant["a"] == 1 and counts.matched == 3
    assert counts.score == pytest.approx(3 / 6)
    text = (
        "[Explanation]: The candidate misses the effusion.\n"
        "[Clinically Significant Errors]:\n(a) False report of a finding in the candidate: 0.\n"
        "(b) Missing a finding present in the reference: 1. Pleural effusion.\n"
        "(c) Misidentification of a finding's anatomic location/position: 0.\n"
        "[Clinically Insignificant Errors]:\n(a) False report of a finding in the candidate: 2.\n"
        "[Matched Findings]:\n2. Nodule; emphysema.\n"
    )
    counts = cm.parse_green_reply(text)
    assert counts.significant_total == 1 and counts.insignificant["a"] == 2 and counts.matched == 2
    assert counts.score == pytest.approx(2 / 3)
    zero = cm.parse_green_reply('{"significant_errors": {"b": 2}, "matched_findings": 0}')
    assert zero.score == 0.0  # GREEN's rule: no matched finding scores 0
    for bad in (
        "I cannot evaluate this.",
        '{"significant_errors": {"a": -1}, "matched_findings": 1}',
        '{"significant_errors": {"a": 1.5}, "matched_findings": 1}',
        '{"significant_errors": {"z": 1}, "matched_findings": 1}',
        '{"matched_findings": 1}',
        '{"significant_errors": {"a": 1}, "matched_findings": "many"}',
    ):
        with pytest.raises(ParseError):
            cm.parse_green_reply(bad)


def test_green_prompt_renders_every_placeholder() -> None:
    messages, version = cm.green_messages("Where is the nodule?", "Right upper lobe.", "Left lower lobe.")
    assert version == "green_judge@1"
    user = messages[-1]["content"]
    assert "Reference answer: Right upper lobe." in user and "Candidate answer: Left lower lobe." in user
    assert "Question: Where is the nodule?" in user and "<" not in user.replace("<think>", "")


# --------------------------------------------------------------------------- GREEN: through the LLM client

FINDINGS = ("nodule", "effusion", "cardiomegaly", "emphysema", "consolidation", "bronchiectasis", "hernia", "lobe")


def judge_counts(reference: str, candidate: str) -> tuple[int, int, int]:
    """The local judge's rule: (matched, false reports, missed findings) over a small finding vocabulary."""
    ref = {w for w in FINDINGS if w in reference.lower()}
    cand = {w for w in FINDINGS if w in candidate.lower()}
    return len(ref & cand), len(cand - ref), len(ref - cand)


def judge_score(reference: str, candidate: str) -> float:
    matched, false, missed = judge_counts(reference, candidate)
    return 0.0 if matched == 0 else matched / (matched + false + missed)


class JudgeServer:
    """A local OpenAI-compatible chat-completions server answering the GREEN prompt by :func:`judge_counts`.

    ``garble`` in a candidate: the first reply to that prompt is unparsable (the client asks again);
    ``never`` in a candidate: every reply is unparsable; ``greenformat``: the reply in GREEN's own format.
    """

    def __init__(self) -> None:
        self.requests = 0
        self.seen: Counter[str] = Counter()
        self.lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: object) -> None:
                return

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", "0"))) or b"{}")
                user = str(body["messages"][-1]["content"])
                digest = hashlib.sha256(user.encode()).hexdigest()
                with server.lock:
                    server.requests += 1
                    server.seen[digest] += 1
                    nth = server.seen[digest]
                reference = re.search(r"Reference answer: (.*)", user)
                candidate = re.search(r"Candidate answer: (.*)", user)
                ref, cand = (reference.group(1) if reference else ""), (candidate.group(1) if candidate else "")
                matched, false, missed = judge_counts(ref, cand)
                if "never" in cand.lower() or ("garble" in cand.lower() and nth == 1):
                    text = "As an AI model I would rather not count."
                elif "greenformat" in cand.lower():
                    text = (
                        f"[Clinically Significant Errors]:\n(a) False report: {false}.\n(b) Missing: {missed}.\n"
                        f"[Clinically Insignificant Errors]:\n(a) False report: 0.\n[Matched Findings]:\n{matched}."
                    )
                else:
                    zeros = dict.fromkeys("cdef", 0)
                    text = json.dumps(
                        {
                            "significant_errors": {"a": false, "b": missed, **zeros},
                            "insignificant_errors": {},
                            "matched_findings": matched,
                        }
                    )
                reply = {
                    "id": "chatcmpl-judge",
                    "object": "chat.completion",
                    "created": 0,
                    "model": body.get("model", ""),
                    "choices": [
                        {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
                    ],
                    "usage": {"prompt_tokens": len(user.split()), "completion_tokens": len(text.split())},
                }
                data = json.dumps(reply).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        host, port = self.httpd.server_address[:2]
        return f"http://{host!s}:{port}/v1"

    def __enter__(self) -> JudgeServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def judge() -> Iterator[JudgeServer]:
    with JudgeServer() as server:
        yield server


def _client(server: JudgeServer, cache: Path) -> Any:
    from rad3d_pipeline.llm.cache import ResponseCache
    from rad3d_pipeline.llm.client import EndpointConfig, LlmClient

    endpoint = EndpointConfig(
        model="judge-model",
        base_url=server.base_url,
        api_key="sk-test",
        timeout_s=30.0,
        max_attempts=2,
        max_parse_attempts=2,
    )
    return LlmClient(endpoint, ResponseCache(cache))


def _judge_frame() -> pd.DataFrame:
    pairs = [
        (1, "Nodule in the right upper lobe.", "Nodule in the left upper lobe."),
        (1, "Cardiomegaly and pleural effusion.", "Cardiomegaly. garble"),
        (1, "Emphysema.", ""),
        (2, "Consolidation.", "Bronchiectasis. greenformat"),
        (2, "Hiatal hernia.", "Hiatal hernia and a nodule."),
        (3, "Pleural effusion.", "No effusion, never mind."),
    ]
    return pd.DataFrame(
        {
            "model": "m",
            "Task": [p[0] for p in pairs],
            "QuestionType": "Open",
            "Question": [f"Q{i}?" for i in range(len(pairs))],
            "Answer": [p[1] for p in pairs],
            "prediction": [p[2] for p in pairs],
        }
    )


def test_green_judge_through_the_llm_client(judge: JudgeServer, tmp_path: Path) -> None:
    frame = _judge_frame()
    config = cm.ClinicalMetricConfig(green_judge=True, green_max_failure_rate=0.5)
    client = _client(judge, tmp_path / "cache.sqlite")
    scores = cm.clinical_sample_scores(frame, config, client)
    # 5 non-empty rows; "garble" asked twice; "never" asked max_parse_attempts = 2 times and failed
    assert judge.requests == 5 + 1 + 1
    assert client.accounting.rejects == 3 and client.accounting.failures == 1
    assert [(f["row"], f["model"]) for f in scores.failures] == [(5, "m")]
    expected = [
        judge_score(a, p) if p and "never" not in p else math.nan
        for a, p in zip(frame["Answer"], frame["prediction"], strict=True)
    ]
    np.testing.assert_allclose(scores.rows["green"].to_numpy(), np.array(expected), equal_nan=True)
    table = cm.aggregate(scores).set_index(["Task", "metric"])
    assert table.loc[(1, "green"), "value"] == pytest.approx(np.nanmean(expected[:2]))
    assert table.loc[(1, "green"), "n"] == 2 and table.loc[(1, "green"), "skipped_empty"] == 1
    assert table.loc[(2, "green"), "value"] == pytest.approx(np.mean(expected[3:5]))
    assert table.loc[(3, "green"), "failed"] == 1
    assert table.loc[(3, "green"), "status"] == "not computed: every judge request failed"
    assert math.isnan(table.loc[(3, "green"), "value"])
    assert table.loc[(1, "green"), "source"] == "judge-model (green_judge@1)"

    # A rerun on the same cache sends only the request that ended without an answer.
    before = judge.requests
    rerun = cm.clinical_sample_scores(frame, config, _client(judge, tmp_path / "cache.sqlite"))
    assert judge.requests - before == 2  # "never" again, two fresh attempts; everything else cached
    np.testing.assert_allclose(rerun.rows["green"].to_numpy(), scores.rows["green"].to_numpy(), equal_nan=True)


def test_green_failures_past_the_budget_stop_with_one_line(judge: JudgeServer, tmp_path: Path) -> None:
    config = cm.ClinicalMetricConfig(green_judge=True, green_max_failure_rate=0.1)
    with pytest.raises(LlmStageError) as caught:
        cm.score_open_ended(_judge_frame(), config, _client(judge, tmp_path / "cache.sqlite"))
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("clinical metric green: 1 of 5 judge requests failed (20.0%, budget 10%)")

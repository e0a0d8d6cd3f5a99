"""The real RaTEScore and radgraph packages through the clinical-metric adapters, on tiny random models.

Issue 17, item 2: tests/test_clinical_metrics.py checks the adapters against fake modules; here the
PyPI packages themselves run (``pip install -e '.[clinical]'``), with models built from a config in
a temporary folder (tests/tiny_bert.py): a token-classification BERT with RaTEScore's NER labels, a
BERT encoder for its synonym step, and a RadGraph archive (config.json, vocabulary/, weights.th)
whose DyGIE weights are random. Their numbers mean nothing; the tests check that the adapter gives
exactly what the package gives when called directly, per pair and per task, deterministically, with
empty predictions skipped and counted, and that a model which does not fit is refused in one line.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from rad3d_pipeline.evaluation import clinical_metrics as cm
from tests.conftest import skip_or_fail

PAIRS: list[tuple[int, str, str]] = [  # (task, reference, prediction)
    (1, "Right upper lobe nodule of 5 mm.", "Nodule in the right upper lobe."),
    (1, "No pleural effusion. Mild cardiomegaly.", "No pleural effusion. Mild cardiomegaly."),  # identical
    (1, "Emphysema.", ""),  # empty prediction: skipped and counted
    (2, "Bilateral ground glass opacities in the lower lobes.", "Consolidation with septal thickening."),
    (2, "Hiatal hernia.", "Emphysema."),
    (3, "12 mm nodule in the right middle lobe.", "12 mm nodule in the right middle lobe."),  # identical
    (3, "5 mm.", "7 mm."),
]


def _frame() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "model": "tiny",
            "Task": [t for t, _, _ in PAIRS],
            "QuestionType": "Open",
            "Question": "What is seen?",
            "Answer": [a for _, a, _ in PAIRS],
            "prediction": [p for _, _, p in PAIRS],
        }
    )


def _import(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError as exc:  # the package or one of its own imports (medspacy, allennlp parts) is missing
        skip_or_fail(f"the {module} package cannot be imported ({exc}); install the project's [clinical] extra")


# --------------------------------------------------------------------------- RaTEScore


@pytest.fixture(scope="module")
def ratescore_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    _import("transformers")
    _import("RaTEScore")
    from tests.tiny_bert import make_tiny_encoder, make_tiny_token_classifier

    root = tmp_path_factory.mktemp("ratescore")
    return make_tiny_token_classifier(root / "ner"), make_tiny_encoder(root / "encoder")


def test_ratescore_package_through_the_adapter_equals_the_package_called_directly(
    ratescore_models: tuple[Path, Path],
) -> None:
    from RaTEScore import RaTEScore

    ner, encoder = ratescore_models
    config = cm.ClinicalMetricConfig(ratescore_ner_model=ner, ratescore_eval_model=encoder, batch_size=2)
    assert cm.available_metrics(config)["ratescore"] is None
    frame = _frame()
    logged: list[str] = []
    from loguru import logger  # RaTEScore's sentence splitter (PyRuSH) logs through loguru

    sink = logger.add(lambda message: logged.append(str(message)), level="DEBUG")
    try:
        scores = cm.clinical_sample_scores(frame, config)
    finally:
        logger.remove(sink)
    assert not [m for m in logged if "PyRuSH" in m]  # its per-token DEBUG lines are silenced by the adapter
    per_row = scores.rows["ratescore"].to_numpy(dtype=float)
    assert per_row.shape == (len(PAIRS),)

    kept = [i for i, (_, _, p) in enumerate(PAIRS) if p.strip()]
    direct = RaTEScore(bert_model=str(ner), eval_model=str(encoder), batch_size=1, use_gpu=False)
    expected = direct.compute_score([PAIRS[i][2] for i in kept], [PAIRS[i][1] for i in kept])
    assert len(expected) == len(kept)
    np.testing.assert_allclose(per_row[kept], expected, rtol=1e-5, atol=1e-6)
    assert math.isnan(per_row[2])  # the empty prediction is not scored, not scored as 0
    for i in kept:  # identical texts: the same entities, cosine 1, so 1 (0.5 when the NER finds no entity)
        if PAIRS[i][1] == PAIRS[i][2]:
            assert per_row[i] == pytest.approx(1.0, abs=1e-5) or per_row[i] == 0.5
    assert all(-1e-6 <= v <= 1 + 1e-6 for v in expected)
    assert any(v not in (0.5, 1.0) and abs(v - 1) > 1e-4 for v in expected)  # the embedding path ran

    table = cm.aggregate(scores)
    rows = table[table["metric"] == "ratescore"].set_index("Task")
    for task in (1, 2, 3):
        where = [k for k, i in enumerate(kept) if PAIRS[i][0] == task]
        assert rows.loc[task, "value"] == pytest.approx(float(np.mean([expected[k] for k in where])), abs=1e-6)
        assert rows.loc[task, "n"] == len(where)
        assert rows.loc[task, "status"] == "computed"
        # the number never travels without what produced it: both tiny folders are named
        assert str(ner) in rows.loc[task, "source"] and str(encoder) in rows.loc[task, "source"]
    assert rows.loc[1, "skipped_empty"] == 1 and rows.loc[2, "skipped_empty"] == 0
    others = table[table["metric"] != "ratescore"]
    assert others["status"].str.startswith("not computed: ").all() and others["value"].isna().all()

    again = cm.score_open_ended(frame, config)
    pd.testing.assert_frame_equal(table, again)  # deterministic


def test_ratescore_refuses_models_that_do_not_fit(ratescore_models: tuple[Path, Path], tmp_path: Path) -> None:
    from tests.tiny_bert import make_tiny_token_classifier

    _, encoder = ratescore_models
    foreign = make_tiny_token_classifier(tmp_path / "foreign", labels=("B-FINDING", "I-FINDING", "O"))
    config = cm.ClinicalMetricConfig(ratescore_ner_model=foreign, ratescore_eval_model=encoder)
    with pytest.raises(cm.ClinicalMetricError, match=r"does not fit: labels B-FINDING, I-FINDING are not"):
        cm.score_open_ended(_frame(), config)
    (tmp_path / "empty").mkdir()
    config = cm.ClinicalMetricConfig(ratescore_ner_model=tmp_path / "empty", ratescore_eval_model=encoder)
    with pytest.raises(cm.ClinicalMetricError, match="cannot be loaded"):
        cm.score_open_ended(_frame(), config)


# --------------------------------------------------------------------------- RadGraph F1


@pytest.fixture(scope="module")
def radgraph_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    import logging

    _import("transformers")
    before = logging.getLoggerClass()
    try:
        cm.import_radgraph()
    except ImportError as exc:
        skip_or_fail(f"the radgraph package cannot be imported ({exc}); install the project's [clinical] extra")
    # its AllenNLP sets a logger class at import that Dagster's loggers cannot construct: put back
    assert logging.getLoggerClass() is before
    from tests.tiny_bert import make_tiny_radgraph

    return make_tiny_radgraph(tmp_path_factory.mktemp("radgraph"))


def _transformers_major() -> int:
    from importlib.metadata import version

    return int(version("transformers").split(".")[0])


def _radgraph_adapter_equals_the_package(cache: Path) -> None:
    from radgraph import F1RadGraph

    config = cm.ClinicalMetricConfig(radgraph_model_dir=cache)
    frame = _frame()
    scores = cm.clinical_sample_scores(frame, config)
    per_row = scores.rows["radgraph_f1"].to_numpy(dtype=float)
    assert per_row.shape == (len(PAIRS),)
    kept = [i for i, (_, _, p) in enumerate(PAIRS) if p.strip()]
    direct = F1RadGraph(reward_level="all", model_type="radgraph-xl", model_cache_dir=str(cache), cuda=-1)
    _, rewards, _, _ = direct(hyps=[PAIRS[i][2] for i in kept], refs=[PAIRS[i][1] for i in kept])
    rg_er = [float(v) for v in rewards[1]]
    np.testing.assert_allclose(per_row[kept], rg_er, rtol=1e-6)  # RG_ER, the second of the three rewards
    assert math.isnan(per_row[2])  # the empty prediction is not scored
    for k, i in enumerate(kept):  # identical texts: the same graph, so every reward is 1
        if PAIRS[i][1] == PAIRS[i][2]:
            assert rg_er[k] == 1.0 and rewards[0][k] == 1.0
    assert any(0 < v < 1 for v in rg_er)  # graphs were compared, not only the empty/identical shortcuts
    # the adapter takes the second reward, not the third (RG_E vs RG_ER: the fake-module test, they tie here)
    assert list(rewards[1]) != list(rewards[2])
    table = cm.aggregate(scores)
    rows = table[table["metric"] == "radgraph_f1"].set_index("Task")
    for task in (1, 2, 3):
        where = [k for k, i in enumerate(kept) if PAIRS[i][0] == task]
        assert rows.loc[task, "value"] == pytest.approx(float(np.mean([rg_er[k] for k in where])))
        assert rows.loc[task, "n"] == len(where) and rows.loc[task, "status"] == "computed"
        assert str(cache / "radgraph-xl") in rows.loc[task, "source"]
    assert rows.loc[1, "skipped_empty"] == 1
    pd.testing.assert_frame_equal(table, cm.score_open_ended(frame, config))  # deterministic


def test_radgraph_package_through_the_adapter(radgraph_cache: Path) -> None:
    config = cm.ClinicalMetricConfig(radgraph_model_dir=radgraph_cache)
    assert cm.available_metrics(config)["radgraph_f1"] is None  # the tiny archive has the package's layout
    if _transformers_major() < 5:
        _radgraph_adapter_equals_the_package(radgraph_cache)
        return
    # radgraph 0.1.18's vendored allennlp calls tokenizer.encode_plus and build_inputs_with_special_tokens,
    # gone in transformers 5: one line naming both versions, not an AttributeError traceback mid-stage.
    incompatible = r"^RadGraph F1: radgraph 0\.1\.18 with transformers 5.*transformers<5"
    with pytest.raises(cm.ClinicalMetricError, match=incompatible):
        cm.score_open_ended(_frame(), config)


def test_radgraph_package_with_the_two_removed_tokenizer_methods_lent_back(
    radgraph_cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real package end to end under transformers 5, with the two methods it calls restored for BERT.

    Checks the tiny archive is what the package reads and the adapter takes RG_ER per pair, in place;
    the shim lives in this test only (``encode_plus`` is ``__call__``; BERT's ``[CLS] a [SEP] (b [SEP])``).
    """
    from transformers import PreTrainedTokenizerBase

    def build_inputs(self: Any, ids0: list[int], ids1: list[int] | None = None) -> list[int]:
        pair = [] if ids1 is None else [*ids1, self.sep_token_id]
        return [self.cls_token_id, *ids0, self.sep_token_id, *pair]

    monkeypatch.setattr(PreTrainedTokenizerBase, "encode_plus", lambda self, *a, **k: self(*a, **k), raising=False)
    monkeypatch.setattr(PreTrainedTokenizerBase, "build_inputs_with_special_tokens", build_inputs, raising=False)
    _radgraph_adapter_equals_the_package(radgraph_cache)

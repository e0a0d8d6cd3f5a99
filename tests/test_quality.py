"""Issue 4: consistency metrics, judges against the local server, review sheets, spatial subset, statistics."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from dagster import DagsterInstance, materialize

from rad3d.definitions import build_definitions
from rad3d_pipeline.llm.parsers import SCORE_DIMENSIONS, ParseError
from rad3d_pipeline.quality.consistency import (
    average_ranks,
    judge_averages,
    kendall_tau_b,
    ndcg_at_k,
    pairwise_consistency,
    spearman,
    top_k_overlap,
)
from rad3d_pipeline.quality.judges import parse_judges, sample_for_consistency
from rad3d_pipeline.quality.review import (
    ReviewSheetError,
    agreement_table,
    build_review_sheet,
    read_filled_sheet,
    write_review_sheet,
)
from rad3d_pipeline.quality.spatial_questions import classify_keywords, parse_spatial_judgement
from resources.llm import LlmResource
from tests.llm_server import LocalLlmServer

warnings.filterwarnings("ignore", module="dagster")


def test_ranks_and_correlations_by_hand() -> None:
    assert average_ranks(np.array([10.0, 20.0, 20.0, 30.0])).tolist() == [1.0, 2.5, 2.5, 4.0]
    # Perfect agreement and reversal.
    assert spearman(np.array([1, 2, 3]), np.array([2, 4, 6])) == pytest.approx(1.0)
    assert kendall_tau_b(np.array([1, 2, 3]), np.array([3, 2, 1])) == pytest.approx(-1.0)
    # With ties: x = [1, 2, 2, 3], y = [1, 3, 2, 4]. Pairs: 6; concordant 5, tied in x 1, discordant 0.
    # tau_b = (5 - 0) / sqrt((6 - 1) * 6) = 5 / sqrt(30).
    assert kendall_tau_b(np.array([1, 2, 2, 3]), np.array([1, 3, 2, 4])) == pytest.approx(5 / np.sqrt(30))
    # Spearman with ties: ranks x = [1, 2.5, 2.5, 4], y = [1, 3, 2, 4]; Pearson of those.
    rx, ry = np.array([1, 2.5, 2.5, 4]), np.array([1, 3, 2, 4.0])
    expected = np.corrcoef(rx, ry)[0, 1]
    assert spearman(np.array([1, 2, 2, 3]), np.array([1, 3, 2, 4])) == pytest.approx(expected)


def _reference_ranks(values: np.ndarray) -> np.ndarray:
    """Average ranks by hand: sort, then give each run of equal values the mean of its positions."""
    order = np.argsort(values, kind="mergesort")
    ranks = np.empty(len(values))
    start = 0
    while start < len(values):
        end = start
        while end + 1 < len(values) and values[order[end + 1]] == values[order[start]]:
            end += 1
        ranks[order[start : end + 1]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def _reference_kendall_tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Tau-b over all pairs: (concordant - discordant) / sqrt(pairs untied in x * pairs untied in y)."""
    upper = np.triu_indices(len(x), k=1)
    sx = np.sign(x[:, None] - x[None, :])[upper]
    sy = np.sign(y[:, None] - y[None, :])[upper]
    return float((sx * sy).sum() / np.sqrt((sx != 0).sum() * (sy != 0).sum()))


@pytest.mark.parametrize("seed", range(5))
def test_ranks_and_correlations_match_direct_formulas_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    n = int(rng.integers(5, 300))
    # Judge means: few distinct values (many ties, as five 1-5 scores averaged give), one side noisier.
    a = rng.integers(5, 26, size=n) / 5.0
    b = np.clip(a + rng.normal(0, 0.6, size=n), 1, 5).round(1) if seed % 2 else rng.integers(1, 4, size=n) * 1.0
    np.testing.assert_array_equal(average_ranks(a), _reference_ranks(a))
    np.testing.assert_allclose(spearman(a, b), np.corrcoef(_reference_ranks(a), _reference_ranks(b))[0, 1], rtol=1e-12)
    assert kendall_tau_b(a, b) == pytest.approx(_reference_kendall_tau_b(a, b), rel=1e-12, abs=1e-15)
    assert spearman(a, b) == pytest.approx(spearman(b, a), rel=1e-12)


def test_correlations_of_two_pairs() -> None:
    """The smallest defined case (a review sheet of two rows): +-1, no error."""
    assert kendall_tau_b(np.array([1.0, 2.0]), np.array([3.0, 4.0])) == 1.0
    assert kendall_tau_b(np.array([1.0, 2.0]), np.array([4.0, 3.0])) == -1.0
    assert spearman(np.array([1.0, 2.0]), np.array([4.0, 3.0])) == pytest.approx(-1.0)


def test_undefined_correlations_are_nan_without_warnings() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for x, y in (
            ([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]),
            ([2.0], [3.0]),
            ([], []),
            ([1.0, np.nan, 3.0], [1.0, 2.0, 3.0]),
        ):
            assert np.isnan(spearman(np.array(x), np.array(y))), (x, y)
            assert np.isnan(kendall_tau_b(np.array(x), np.array(y))), (x, y)


def test_top_k_and_ndcg_by_hand() -> None:
    a = pd.Series([5.0, 4.0, 3.0, 2.0], index=["q1", "q2", "q3", "q4"])
    b = pd.Series([2.0, 4.0, 3.0, 5.0], index=["q1", "q2", "q3", "q4"])
    assert top_k_overlap(a, b, k=2) == 1  # {q1, q2} vs {q4, q2}
    # A's order q1, q2 with B's relevance 2, 4: DCG = 2/log2(2) + 4/log2(3); ideal 5 + 4/log2(3).
    expected = (2 + 4 / np.log2(3)) / (5 + 4 / np.log2(3))
    assert ndcg_at_k(a, b, k=2) == pytest.approx(expected)
    # Ties in the score are ranked by qa_id.
    tied = pd.Series([1.0, 1.0], index=["b", "a"])
    assert top_k_overlap(tied, pd.Series([1.0, 0.0], index=["a", "b"]), k=1) == 1


def test_pair_table_and_ranking() -> None:
    means = pd.DataFrame({"j1": [1, 2, 3, 4.0], "j2": [1, 2, 3, 4.0], "j3": [4, 3, 2, 1.0]}, index=list("abcd"))
    pairs = pairwise_consistency(means)
    assert len(pairs) == 6
    j1j2 = pairs[(pairs.judge_a == "j1") & (pairs.judge_b == "j2")].iloc[0]
    assert (j1j2.spearman, j1j2.kendall, j1j2.mae, j1j2.n) == (1.0, 1.0, 0.0, 4)
    ranking = judge_averages(pairs)
    assert ranking.iloc[-1]["judge"] == "j3"


def test_parse_judges_and_sample(tmp_path: Path) -> None:
    file = tmp_path / "judges.yaml"
    file.write_text(
        "judges:\n  - name: big\n    model: m-70b\n    base_url: http://127.0.0.1:1/v1\n    api_key_env: BIG_KEY\n"
    )
    specs = parse_judges("a, b,big", file)
    assert [s.name for s in specs] == ["a", "b", "big"]
    assert specs[2].model == "m-70b" and specs[2].api_key_env == "BIG_KEY"
    with pytest.raises(FileNotFoundError):
        parse_judges("", tmp_path / "none.yaml")
    candidates = pd.DataFrame({"qa_id": [f"q{i:03d}" for i in range(100)], "task": [1] * 50 + [2] * 30 + [3] * 20})
    sample = sample_for_consistency(candidates, n=10, seed=1)
    assert sample["task"].value_counts().to_dict() == {1: 5, 2: 3, 3: 2}
    assert sample.equals(sample_for_consistency(candidates, n=10, seed=1))


def test_spatial_classifier_and_judge_parser() -> None:
    assert classify_keywords("Where is the nodule located?", "Right upper lobe")[:2] == (
        True,
        "laterality and bilateral symmetry",
    )
    assert classify_keywords("Is the effusion anterior or posterior?", "Posterior")[1] == "anterior-posterior depth"
    assert classify_keywords("What is the diameter of the nodule?", "5 mm")[0] is False
    assert parse_spatial_judgement('<think>hm</think>{"spatial": true, "category": "Vertical position"}') == (
        True,
        "vertical position",
    )
    assert parse_spatial_judgement('{"spatial": false, "category": ""}') == (False, "")
    with pytest.raises(ParseError):
        parse_spatial_judgement('{"spatial": true, "category": "colour"}')


def _curated() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "qa_id": [f"q{i}" for i in range(6)],
            "Task": [1, 1, 2, 2, 3, 3],
            "subtask_name": ["Anatomical_observation"] * 2 + ["Diagnosis"] * 2 + ["Diameter"] * 2,
            "VolumeName": [f"valid_{i}_a_1.nii.gz" for i in range(6)],
            "Question": [f"Question {i}?" for i in range(6)],
            "Answer": [f"Answer {i}" for i in range(6)],
            "mean_score": [4.8, 4.2, 3.6, 4.0, 3.2, 4.4],
        }
    )


def test_review_sheet_round_trip(tmp_path: Path) -> None:
    reports = pd.DataFrame(
        {
            "VolumeName": [f"valid_{i}_a_1.nii.gz" for i in range(6)],
            "Findings_EN": ["F"] * 6,
            "Impressions_EN": ["I"] * 6,
        }
    )
    sheet = build_review_sheet(_curated(), reports, n=600, seed=0)
    path = tmp_path / "review_sheet.csv"
    rubric = write_review_sheet(sheet, path)
    assert "Visual Verifiability" in rubric.read_text()
    filled = pd.read_csv(path, dtype=str, keep_default_na=False)
    assert (filled["consistent"] == "").all() and (filled["findings"] == "F").all()
    human = {0: 5, 1: 4, 2: 2, 3: 4, 4: 3, 5: 5}  # per row, every dimension
    consistent = {0: 1, 1: 1, 2: 0, 3: 0, 4: 1, 5: 1}
    for i in range(6):
        for dim in SCORE_DIMENSIONS:
            filled.loc[i, dim] = str(human[i])
        filled.loc[i, "consistent"] = str(consistent[i])
    filled.to_csv(path, index=False)
    table = agreement_table(read_filled_sheet(path)).set_index("scope")
    overall = table.loc["all"]
    assert overall["n"] == 6
    assert overall["consistency_rate"] == pytest.approx(4 / 6)
    # Row 2 (inconsistent) fails the score filter; row 3 (inconsistent) passes it: 1 of 6 counts against.
    assert overall["consistency_after_filter"] == pytest.approx(5 / 6)
    assert table.loc["task 2", "consistency_rate"] == 0.0
    assert -1 <= overall["spearman_human_llm"] <= 1
    filled.loc[3, "consistent"] = "maybe"
    filled.to_csv(path, index=False)
    with pytest.raises(ReviewSheetError, match="line 5: consistent must be 0 or 1"):
        read_filled_sheet(path)


@pytest.mark.slow
def test_four_judges_on_the_local_endpoint(fixtures: Path, tmp_path: Path) -> None:
    from scipy.stats import kendalltau, spearmanr

    defs = build_definitions(ctrate_root=str(fixtures / "ctrate_mini"), out_dir=str(tmp_path), splits="valid")
    instance = DagsterInstance.ephemeral()
    assets, resources = list(defs.assets), dict(defs.resources)
    resources["llm"] = LlmResource(backend="rules")
    tags = {"dagster/asset_partition_range_start": "00|1", "dagster/asset_partition_range_end": "15|3"}
    sentences = {"dagster/asset_partition_range_start": "00", "dagster/asset_partition_range_end": "15"}
    assert materialize(
        assets, resources=resources, selection=["ctrate_reports"], tags=sentences, instance=instance
    ).success
    assert materialize(
        assets, resources=resources, selection=["report_sentences"], tags=sentences, instance=instance
    ).success
    assert materialize(assets, resources=resources, selection=["qa_candidates"], tags=tags, instance=instance).success
    with LocalLlmServer() as server:
        resources["llm"] = LlmResource(
            backend="rules", judges="judge-a,judge-b,judge-c,judge-d", base_url=server.base_url, api_key="k"
        )
        result = materialize(assets, resources=resources, selection=["scoring_consistency"], instance=instance)
        assert result.success
        assert set(server.state.models) == {"judge-a", "judge-b", "judge-c", "judge-d"}
    reports = tmp_path / "reports"
    scores = pd.read_csv(reports / "judge_scores.csv")
    pairs = pd.read_csv(reports / "scoring_consistency.csv")
    assert list(pairs.columns) == [
        "judge_a",
        "judge_b",
        "top100_overlap",
        "ndcg_at_100",
        "spearman",
        "kendall",
        "mae",
        "n",
    ]
    sample_size = scores["qa_id"].nunique()
    assert scores.groupby("judge")["qa_id"].nunique().to_dict() == {f"judge-{c}": sample_size for c in "abcd"}
    means = scores.pivot(index="qa_id", columns="judge", values="mean")
    for row in pairs.itertuples(index=False):
        a, b = means[row.judge_a], means[row.judge_b]
        assert row.spearman == pytest.approx(spearmanr(a, b).statistic, abs=1e-6)
        assert row.kendall == pytest.approx(kendalltau(a, b).statistic, abs=1e-6)
        assert row.mae == pytest.approx(float(np.abs(a - b).mean()), abs=1e-6)
    for png in ("consistency_spearman.png", "consistency_top100.png", "judge_averages.png"):
        assert (reports / png).stat().st_size > 1000


@pytest.mark.slow
def test_spatial_subset_and_statistics_in_a_build(tmp_path: Path) -> None:
    env = {**os.environ, "DAGSTER_HOME": str(tmp_path / "home")}
    run = [sys.executable, "-m", "rad3d.cli"]
    assert (
        subprocess.run([*run, "sample-data", "--out", str(tmp_path / "ct"), "--patients", "16"], env=env).returncode
        == 0
    )
    built = subprocess.run(
        [
            *run,
            "build",
            "--ctrate-root",
            str(tmp_path / "ct"),
            "--out",
            str(tmp_path / "out"),
            "--tasks",
            "1,2,3",
            "--llm",
            "rules",
        ],
        env=env,
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr[-2000:]
    lines = (tmp_path / "out" / "reports" / "spatial_qa.jsonl").read_text().splitlines()
    assert lines
    first = json.loads(lines[0])
    assert set(first) == {"image_path", "question", "answer", "category"} and first["image_path"].endswith(".nii.gz")
    table2 = pd.read_csv(tmp_path / "out" / "reports" / "table2.csv")
    assert set(table2.columns) == {"release_split", "Task", "images", "patients", "qa_pairs"}
    assert (tmp_path / "out" / "reports" / "organ_distribution.png").exists()
    assert (tmp_path / "out" / "reports" / "scoring_consistency.csv").exists()
    review = subprocess.run([*run, "review", "export", "--out", str(tmp_path / "out"), "--n", "5"], env=env)
    assert review.returncode == 0


def test_failed_spatial_verdicts_are_failures_not_not_spatial(tmp_path: Path) -> None:
    """Issue 12: a verdict the judge never gave parsably is a reject and a failure, never "not spatial"."""
    from assets.quality import _llm_spatial
    from rad3d_pipeline.common.errors import LlmStageError
    from rad3d_pipeline.llm.cache import ResponseCache
    from rad3d_pipeline.llm.client import EndpointConfig, LlmClient
    from rad3d_pipeline.llm.failures import check_failure_budget
    from rad3d_pipeline.open_qa.llm_generation import StageResult
    from tests.llm_server import Faults

    frame = pd.DataFrame(
        {
            "qa_id": [f"q{i}" for i in range(24)],
            "question": [f"Where is nodule {i} located?" for i in range(24)],
            "answer": ["Right upper lobe"] * 24,
        }
    )
    with LocalLlmServer(Faults(permanent_rate=0.3, permanent_kind="malformed", seed=2)) as server:
        config = EndpointConfig(model="judge", base_url=server.base_url, api_key="k", max_parse_attempts=2)
        client = LlmClient(config, ResponseCache(tmp_path / "s.sqlite"))
        result = StageResult()
        judged = _llm_spatial(client, frame, result)
        broken = len(server.state.permanent)
    assert 0 < broken < 24
    unknown = judged[judged["spatial"].isna()]
    assert len(unknown) == broken and (judged["spatial"].dropna() == True).all()  # noqa: E712
    assert unknown["reason"].str.contains("unparsable").all()
    assert len(result.failures) == broken and len(result.rejects) == 2 * broken
    acc = client.accounting
    assert (acc.prompts, acc.failures, acc.rejects) == (24, broken, 2 * broken)
    with pytest.raises(LlmStageError, match=rf"spatial_qa: {broken} of 24 requests failed .*unparsable"):
        check_failure_budget("spatial_qa", acc, 0.01, tmp_path / "f.jsonl", [client])

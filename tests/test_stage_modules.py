"""The core stage modules the thin assets call (issue 14, item 8), checked without Dagster."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rad3d_pipeline.evaluation.stage import spatial_categories, volume_paths
from rad3d_pipeline.ingest.patients import shard_keys, shard_of
from rad3d_pipeline.llm.client import LlmClient, Outcome, Reject
from rad3d_pipeline.llm.failures import read_failures
from rad3d_pipeline.llm.stage import LlmRun, write_llm_record
from rad3d_pipeline.open_qa.stage import max_repeats, score_partitions, ungrounded_task3


def test_llm_record_keeps_rejects_failures_and_accounting_at_absolute_paths(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    run = LlmRun("openai")
    lost = Outcome[int](None, "k1", [Reject("k1", 1, "m", "not json", "unparsable")], "no JSON", "unparsable", 2)
    run.result.add_rejects("scoring", "qa-7", lost, "m")
    run.accounting.prompts, run.accounting.failures = 5, 1
    record = write_llm_record(Path("out"), "qa_scores", ["00|1", "03|2"], run)
    assert record.rejects_file == tmp_path / "out" / "llm" / "rejects" / "qa_scores" / "00_1..03_2.parquet"
    assert record.failures_file == tmp_path / "out" / "llm" / "failures" / "qa_scores" / "00_1..03_2.jsonl"
    rejects = pd.read_parquet(record.rejects_file)
    assert rejects[["subject", "raw_text", "reason"]].values.tolist() == [["qa-7", "not json", "unparsable"]]
    assert [(r["subject"], r["error_kind"]) for r in read_failures(tmp_path / "out" / "llm")] == [
        ("qa-7", "unparsable")
    ]
    saved = json.loads((tmp_path / "out" / "llm" / "accounting" / "qa_scores.json").read_text())
    assert (saved["backend"], saved["partitions"], saved["prompts"], saved["failure_records"]) == (
        "openai",
        "00|1..03|2",
        5,
        1,
    )
    assert saved["failures_file"] == str(record.failures_file)
    # A rerun without failures removes the old records: nothing stale is reported as lost.
    clean = write_llm_record(Path("out"), "qa_scores", ["00|1", "03|2"], LlmRun("openai"))
    assert clean.failures_file is None and not read_failures(tmp_path / "out" / "llm")
    assert write_llm_record(Path("out"), "spatial_qa", [], LlmRun("rules")).rejects_file.name == "all.parquet"


def _shard(patient: str, n_shards: int) -> str:
    return shard_keys(n_shards)[shard_of(patient, n_shards)]


def test_scores_land_in_their_own_task_and_shard_partition() -> None:
    n_shards = 4
    patients = [f"p{i}" for i in range(12)]
    candidates = pd.DataFrame(
        {
            "qa_id": [f"q{i}" for i in range(24)],
            "patient_id": patients * 2,
            "task": [1] * 12 + [3] * 12,
            "question": [f"What is seen in region {i}?" for i in range(24)],
            "answer": [f"A {i} mm nodule." for i in range(24)],
        }
    )
    keys = [(f"{shard}|{task}", str(task), shard) for task in (1, 3) for shard in shard_keys(n_shards)]

    def no_client() -> LlmClient:
        raise AssertionError("the rules backend sends no request")

    scores = score_partitions(candidates, keys, n_shards=n_shards, backend="rules", make_client=no_client)
    assert scores.llm.clients == [] and scores.llm.accounting.prompts == 0
    assert sorted(scores.frame["qa_id"]) == sorted(candidates["qa_id"])
    for key, task, shard in keys:
        expected = {
            q
            for q, p, t in zip(candidates["qa_id"], candidates["patient_id"], candidates["task"], strict=True)
            if str(t) == task and _shard(p, n_shards) == shard
        }
        assert set(scores.parts[key]["qa_id"]) == expected, key
    assert sum(len(p) for p in scores.parts.values()) == len(candidates)
    empty = score_partitions(candidates.iloc[0:0], keys, n_shards=n_shards, backend="openai", make_client=no_client)
    assert all(part.empty for part in empty.parts.values()) and list(empty.parts) == [k for k, _, _ in keys]


def test_curated_figures_by_hand() -> None:
    rows = pd.DataFrame(
        {
            "split": ["valid"] * 5 + ["train"],
            "Task": [3, 3, 3, 1, 1, 3],
            "subtask_name": ["size"] * 3 + ["organ"] * 2 + ["size"],
            "Question": ["How big?", "How big?", "How long?", "Which?", "Which?", "How big?"],
            "Answer": ["5 mm", "7 mm", "5 mm", "Lung", "Liver", "5 mm"],
            "source_text": ["A 5 mm nodule.", "A 5 mm nodule.", "12 x 5 mm.", "", "", "No size."],
        }
    )
    # "How big?" twice in valid/3/size (the train copy is another release file); "Which?" twice in valid/1.
    assert max_repeats(rows) == 2
    assert max_repeats(pd.concat([rows, rows.iloc[[0]]])) == 3
    assert ungrounded_task3(rows) == ["7 mm", "5 mm"]


def test_spatial_categories_read_only_a_usable_table(tmp_path: Path) -> None:
    path = tmp_path / "spatial_qa" / "all.parquet"
    assert spatial_categories(path) == {}
    path.parent.mkdir()
    pd.DataFrame({"VolumeName": ["a"], "question": ["q"]}).to_parquet(path)
    assert spatial_categories(path) == {}
    pd.DataFrame(
        {
            "VolumeName": ["test_1_a_1.nii.gz", "valid_2_a_1.nii.gz", "valid_3_a_1.nii.gz"],
            "question": ["Where  is the Nodule?", "Any effusion?", "Which side?"],
            "category": ["location", "", "laterality"],
            "spatial": pd.array([True, True, False], dtype="boolean"),
        }
    ).to_parquet(path)
    assert spatial_categories(path) == {("valid_1_a_1", "where is the nodule?"): "location"}


def test_volume_paths_find_the_valid_file_of_a_test_name(tmp_path: Path) -> None:
    folder = tmp_path / "volumes" / "m3d"
    folder.mkdir(parents=True)
    np.save(folder / "valid_1_a_1.npy", np.zeros(1))
    np.save(folder / "train_2_a_1.npy", np.zeros(1))
    names = ["test_1_a_1.nii.gz", "train_2_a_1.nii.gz", "test_9_a_1.nii.gz"]
    assert volume_paths(tmp_path, "m3d", names) == {
        "test_1_a_1.nii.gz": str(folder / "valid_1_a_1.npy"),
        "train_2_a_1.nii.gz": str(folder / "train_2_a_1.npy"),
    }
    assert volume_paths(tmp_path, None, names) == {}

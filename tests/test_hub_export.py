"""The Hub export (issue 17, item 3): ``datasets.load_dataset`` loads every config and split of it,
the rows equal the release CSVs (read here with the csv module), and the card's counts match."""

from __future__ import annotations

import csv
import os
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import pytest
import yaml

from rad3d_pipeline.open_qa.qa_rows import RELEASE_COLUMNS
from rad3d_pipeline.release import hub_export as hx
from rad3d_pipeline.release.export import TASK_FOLDERS
from tests.conftest import skip_or_fail


def _datasets() -> Any:
    try:
        import datasets
    except ImportError:
        skip_or_fail("the datasets package is not installed (pip install datasets)")
    return datasets


def _csv_rows(split_folder: Path, task: int) -> list[dict[str, Any]]:
    """The release rows of one task, files in name order, with the CSV's name: an independent reader."""
    rows = []
    for path in sorted((split_folder / TASK_FOLDERS[task]).glob("*.csv")):
        with path.open(encoding="utf-8", newline="") as handle:
            reader = csv.DictReader(handle)
            assert reader.fieldnames == list(RELEASE_COLUMNS)
            for row in reader:
                rows.append(
                    {**row, "Task": int(row["Task"]), "Subtask": int(row["Subtask"]), "subtask_name": path.stem}
                )
    return rows


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(RELEASE_COLUMNS), lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)


NASTY = ('Is there "air", or fluid,\nin the left lobe?', "NA", "None", "nan", "", " 3 mm ")


@pytest.fixture
def release(fixtures: Path, tmp_path: Path) -> Path:
    """``<tmp>/out/3DRAD``: ``test`` is the public fixture (linked, read-only); ``train`` a derived split
    (``train_`` volumes, every other row) with fields that break naive CSV readers."""
    source = fixtures / "3drad_release_mini" / "test"
    if not source.is_dir():
        skip_or_fail(f"fixture release not found at {source}")
    root = tmp_path / "out" / "3DRAD"
    root.mkdir(parents=True)
    (root / "test").symlink_to(source, target_is_directory=True)
    k = 0
    for task, folder in TASK_FOLDERS.items():
        if task == 6:
            continue  # a task with no train rows: its config has only a test split
        for path in sorted((source / folder).glob("*.csv")):
            with path.open(encoding="utf-8", newline="") as handle:
                rows = list(csv.DictReader(handle))[::2]
            for row in rows:
                row["VolumeName"] = row["VolumeName"].replace("test_", "train_", 1)
                if row["QuestionType"] == "Open":
                    row["Answer"] = NASTY[k % len(NASTY)] or "-"
                    row["Question"] = NASTY[(k + 1) % len(NASTY)] or "What?"
                    k += 1
            _write_csv(root / "train" / folder / path.name, rows)
    (root / "train_1pct").mkdir()  # fractions are not exported
    return root


def test_every_config_and_split_loads_with_datasets_and_equals_the_release(release: Path, tmp_path: Path) -> None:
    datasets = _datasets()
    settings = hx.BuildSettings(
        llm_models={"qa_candidates": "openai/gpt-4o-mini", "qa_scores": "openai/gpt-4o"},
        prompt_versions={"task12": "1", "scoring": "2"},
        seed=7,
        thresholds={"min_score": 4.0},
        ctrate_version="v2 (2024-10)",
    )
    summary = hx.write_hub_export(release, settings=settings)
    hub = tmp_path / "out" / "hub" / "3DRAD"
    assert summary.root == hub and hx.verify_hub_export(summary) == []
    assert not [p for p in hub.parent.iterdir() if p.name.startswith(".")]  # no temporary folder left
    header = hx.read_card_header(hub)
    card = {i["config_name"]: {s["name"]: s["num_examples"] for s in i["splits"]} for i in header["dataset_info"]}
    assert [c["config_name"] for c in header["configs"]] == [f"task{t}" for t in range(1, 7)]
    assert header["license"] == "cc-by-nc-sa-4.0"
    loaded_rows = 0
    for task in range(1, 7):
        config = f"task{task}"
        splits = ("test",) if task == 6 else ("test", "train")
        assert set(card[config]) == set(splits)
        for split in splits:
            expected = _csv_rows(release / split, task)
            assert expected, (config, split)
            ds = datasets.load_dataset(str(hub), config, split=split, cache_dir=str(tmp_path / "hf-cache"))
            assert ds.num_rows == len(expected) == card[config][split] == summary.counts[config][split]
            assert ds.column_names == [*RELEASE_COLUMNS, "subtask_name"]
            assert ds.features["Task"].dtype == "int64" and ds.features["Question"].dtype == "string"
            assert ds.to_list() == expected
            loaded_rows += ds.num_rows
        with pytest.raises(ValueError):
            datasets.load_dataset(str(hub), config, split="train_1pct", cache_dir=str(tmp_path / "hf-cache"))
    assert loaded_rows == summary.rows
    text = (hub / "README.md").read_text(encoding="utf-8")
    for needle in (
        "openai/gpt-4o-mini",
        "`7`",
        "v2 (2024-10)",
        "min_score",
        "CC BY-NC-SA 4.0",
        "arXiv:2506.11147",
        "arXiv:2403.17834",
        "no volumes",
    ):
        assert needle in text, needle
    # the card's count table says the same as its header
    test_total = sum(c.get("test", 0) for c in card.values())
    assert f"**{test_total:,}**" in text


def test_the_card_counts_are_checked_by_datasets_itself(release: Path, tmp_path: Path) -> None:
    datasets = _datasets()
    summary = hx.write_hub_export(release)
    readme = summary.root / "README.md"
    header = hx.read_card_header(summary.root)
    body = readme.read_text(encoding="utf-8").split("\n---\n", 1)[1]
    header["dataset_info"][3]["splits"][0]["num_examples"] += 1  # task4, test: a count that is wrong
    readme.write_text("---\n" + yaml.safe_dump(header, sort_keys=False) + "---\n" + body, encoding="utf-8")
    assert any("card counts" in p for p in hx.verify_hub_export(summary))
    with pytest.raises(Exception) as caught:
        datasets.load_dataset(
            str(summary.root), "task4", split="test", cache_dir=str(tmp_path / "c"), verification_mode="all_checks"
        )
    assert "Split" in type(caught.value).__name__ or "split" in str(caught.value).lower()


def test_volumes_of_a_profile_are_linked_and_referenced_by_path(release: Path, tmp_path: Path) -> None:
    datasets = _datasets()
    profile = tmp_path / "out" / "volumes" / "m3d"
    profile.mkdir(parents=True)
    names = sorted({r["VolumeName"] for r in _csv_rows(release / "test", 4)})
    missing = names[0]
    for i, name in enumerate(names[1:]):
        ctrate = name.replace("test_", "valid_", 1).removesuffix(".nii.gz")
        np.save(profile / f"{ctrate}.npy", np.full((1, 2, 3, 3), i, dtype=np.float32))
    volumes = hx.VolumeSource(profile, "m3d", "float32 1 x 32 x 256 x 256")
    summary = hx.write_hub_export(release, volumes=volumes)
    ds = datasets.load_dataset(str(summary.root), "task4", split="test", cache_dir=str(tmp_path / "hf"))
    by_volume = {}
    for row in ds:
        by_volume.setdefault(row["VolumeName"], set()).add(row["volume_path"])
    assert by_volume[missing] == {None}
    assert missing in summary.volumes_missing
    for i, name in enumerate(names[1:]):
        (path,) = by_volume[name]
        assert path == f"volumes/m3d/{name.removesuffix('.nii.gz')}.npy"
        np.testing.assert_array_equal(np.load(summary.root / path), np.full((1, 2, 3, 3), i, dtype=np.float32))
    # train volumes are not in the profile folder: every train row's path is null, and counted
    train = datasets.load_dataset(str(summary.root), "task1", split="train", cache_dir=str(tmp_path / "hf"))
    assert set(train["volume_path"]) == {None}
    assert summary.volumes_linked == len(names) - 1  # one file per volume, however many rows use it
    test_names = {r["VolumeName"] for t in range(1, 7) for r in _csv_rows(release / "test", t)}
    train_names = {r["VolumeName"] for t in range(1, 6) for r in _csv_rows(release / "train", t)}
    assert summary.volumes_missing == (test_names - set(names[1:])) | train_names
    text = (summary.root / "README.md").read_text(encoding="utf-8")
    assert (
        "volumes/m3d/" in text and f"{len(summary.volumes_missing):,} volume(s)" in text and "have no file here" in text
    )


def test_a_damaged_release_stops_with_one_line_and_keeps_the_previous_export(release: Path, tmp_path: Path) -> None:
    first = hx.write_hub_export(release)
    before = {p.relative_to(first.root): p.read_bytes() for p in first.root.rglob("*") if p.is_file()}
    bad = release / "train" / TASK_FOLDERS[2] / "Diagnosis.csv"
    rows = list(csv.DictReader(bad.open(encoding="utf-8", newline="")))
    rows[1]["Subtask"] = "4.0"
    _write_csv(bad, rows)
    with pytest.raises(hx.HubExportError) as caught:
        hx.write_hub_export(release)
    assert str(caught.value) == f"{bad}: row 3: Subtask '4.0' is not a whole number"
    after = {p.relative_to(first.root): p.read_bytes() for p in first.root.rglob("*") if p.is_file()}
    assert after == before  # the previous export is untouched
    assert not [p for p in first.root.parent.iterdir() if p.name.startswith(".")]

    rows[1]["Subtask"] = "4"
    rows[2]["Task"] = "3"
    _write_csv(bad, rows)
    with pytest.raises(hx.HubExportError, match=r"Diagnosis.csv: row 4: Task 3 in the folder of Task 2"):
        hx.write_hub_export(release)
    rows[2]["Task"] = "2"
    _write_csv(bad, rows)
    other = release / "train" / TASK_FOLDERS[3] / "Size.csv"
    other.write_text("Task,Question\n3,What?\n", encoding="utf-8")
    with pytest.raises(hx.HubExportError, match=r"Size\.csv: columns Task, Question, not the release's"):
        hx.write_hub_export(release, tmp_path / "elsewhere")
    empty = tmp_path / "empty" / "3DRAD"
    (empty / "valid").mkdir(parents=True)
    with pytest.raises(hx.HubExportError, match="no test or train rows"):
        hx.write_hub_export(empty)


def test_a_rerun_replaces_the_export_whole(release: Path) -> None:
    first = hx.write_hub_export(release)
    assert (first.root / hx.parquet_path(6, "test")).is_file()
    for path in (release / "train").rglob("*.csv"):
        os.remove(path)
    second = hx.write_hub_export(release)
    assert set(second.counts) == {f"task{t}" for t in range(1, 7)}
    assert all(set(splits) == {"test"} for splits in second.counts.values())
    assert not list(second.root.glob("data/*/train-*.parquet"))  # no file of the earlier export left behind
    assert hx.verify_hub_export(second) == []
    assert pq.read_table(second.root / hx.parquet_path(4, "test")).num_rows == second.counts["task4"]["test"]

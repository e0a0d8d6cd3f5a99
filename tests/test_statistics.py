"""Benchmark statistics from distinct text pieces equal the plain row-by-row computation, byte for byte."""

from __future__ import annotations

import random
from pathlib import Path

import pandas as pd
import pytest

from rad3d_pipeline.closed_qa.existence import build_task4
from rad3d_pipeline.closed_qa.temporal import build_sequences, build_task5, build_task6
from rad3d_pipeline.ingest.ctrate import CtrateLayout, read_labels
from rad3d_pipeline.quality.benchmark_statistics import (
    compute_statistics,
    entity_counts,
    lexicon_segmentable,
    organ_chart,
    weighted_frequencies,
)
from rad3d_pipeline.release.export import release_rows

wordcloud = pytest.importorskip("wordcloud")


def plain_cloud(texts: list[str], seed: int) -> bytes:
    """Straight from the wordcloud package: generate() over the joined text."""
    import io

    cloud = wordcloud.WordCloud(width=640, height=360, background_color="white", random_state=seed, collocations=False)
    buffer = io.BytesIO()
    cloud.generate(" ".join(texts) or "empty").to_image().save(buffer, format="PNG")
    return buffer.getvalue()


def plain_table2(rows: pd.DataFrame) -> pd.DataFrame:
    patient = rows["VolumeName"].str.extract(r"^([a-z]+_\d+)_")[0]
    grouped = rows.assign(patient=patient).groupby(["release_split", "Task"], sort=True)
    out = grouped.agg(images=("VolumeName", "nunique"), patients=("patient", "nunique"), qa_pairs=("Question", "size"))
    return out.reset_index()


def assert_same_as_plain(rows: pd.DataFrame, tmp_path: Path, seed: int = 0) -> None:
    stats = compute_statistics(rows, seed)
    paths = stats.write(tmp_path / "reports")
    texts = (rows["Question"] + " " + rows["Answer"]).tolist()
    entities, extractor = entity_counts(texts)
    assert stats.extractor == extractor
    assert len(stats.mentions) == len(entities)
    assert paths["entities"].read_bytes() == entities.to_csv(index=False).encode("utf-8")
    assert stats.mentions.to_frame().astype(object).equals(entities.astype(object))
    assert stats.organ_png == organ_chart(entities, f"Organs in the QA ({extractor})")
    assert paths["table2"].read_bytes() == plain_table2(rows).to_csv(index=False).encode("utf-8")
    for task, group in rows.groupby("Task", sort=True):
        want = plain_cloud((group["Question"] + " " + group["Answer"]).tolist(), seed)
        assert stats.word_clouds[int(task)] == want, f"word cloud of task {task}"


def release_of(texts: list[tuple[int, str, str]]) -> pd.DataFrame:
    rows = [
        {
            "Task": task,
            "Subtask": 1,
            "VolumeName": f"valid_{i % 7}_a_1.nii.gz",
            "Question": question,
            "Answer": answer,
            "QuestionType": "Open",
            "AnswerChoice": "-",
            "Choice A": "-",
            "Choice B": "-",
            "Choice C": "-",
            "Choice D": "-",
            "split": "valid",
            "patient_id": f"valid_{i % 7}",
            "subtask_name": "x",
            "label": "",
        }
        for i, (task, question, answer) in enumerate(texts)
    ]
    return release_rows(pd.DataFrame(rows))


def test_the_lexicon_allows_cutting_texts() -> None:
    assert lexicon_segmentable()


def test_closed_tasks_of_the_fixture(fixtures: Path, tmp_path: Path) -> None:
    labels = read_labels(CtrateLayout.resolve(fixtures / "ctrate_mini"), "valid").table
    seq = build_sequences(labels)
    rows = release_rows(pd.concat([build_task4(labels), build_task5(seq), build_task6(seq)], ignore_index=True))
    assert_same_as_plain(rows, tmp_path)


def test_texts_whose_phrases_meet_at_the_cut_points(tmp_path: Path) -> None:
    """Multi-word phrases across spaces, after punctuation, repeated texts, cases and plurals."""
    pieces = [
        "Lymph node. Lymph nodes, lymph: node",
        "ground -glass opacity; Ground-glass opacities.",
        "the pulmonary trunk [0, 1] pulmonary. trunk",
        "Nodule's size 12 mm, nodules NODULE nodules?",
        "Is there  lymph  node (lymph node) in the lungs.Lungs",
        "Cardiomegaly? Yes. cardiomegaly's pericardial effusion",
        "a. lung b.lung 3.lung e.g. lung",
        "",
        "ground\u00a0glass, rib\tribs",
    ]
    rng = random.Random(7)
    texts = []
    for i in range(300):
        question = " ".join(rng.sample(pieces, 3))
        texts.append((1 + i % 3, question, rng.choice([*pieces, "Yes", "No"])))
    texts += texts[:50]  # repeats weigh
    assert_same_as_plain(release_of(texts), tmp_path, seed=3)


def test_weighted_frequencies_equal_process_text() -> None:
    cloud = wordcloud.WordCloud(random_state=0, collocations=False)
    pieces = ["Nodule nodules", "nodule's NODULE", "12 cysts", "Cyst cysts'"]
    weights = [3, 1, 2, 5]
    joined = " ".join(p for p, w in zip(pieces, weights, strict=True) for _ in range(w))
    assert weighted_frequencies(pieces, weights, cloud) == cloud.process_text(joined)
    assert list(weighted_frequencies(pieces, weights, cloud)) == list(cloud.process_text(joined))


def test_missing_text_is_named(tmp_path: Path) -> None:
    rows = release_of([(1, "What is seen?", "A nodule")])
    rows.loc[0, "Answer"] = None
    with pytest.raises(ValueError, match="row 0 has no question or answer text"):
        compute_statistics(rows)


def test_word_clouds_of_tasks_no_longer_released_are_removed(tmp_path: Path) -> None:
    compute_statistics(release_of([(1, "Is the lung clear?", "Yes"), (2, "Any nodule?", "No")])).write(tmp_path)
    assert (tmp_path / "wordcloud_task2.png").exists()
    compute_statistics(release_of([(1, "Is the lung clear?", "Yes")])).write(tmp_path)
    assert not (tmp_path / "wordcloud_task2.png").exists() and (tmp_path / "wordcloud_task1.png").exists()


def test_png_bytes_sizes_and_closes_the_figure() -> None:
    """One helper for every chart: at the figure's size (tight_layout), or cropped to what is drawn."""
    import struct

    from rad3d_pipeline.common.plots import png_bytes, pyplot

    def size(png: bytes) -> tuple[int, int]:
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", png[16:24])
        return int(width), int(height)

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.plot([0, 1], [0, 1])
    assert size(png_bytes(fig, dpi=50)) == (200, 150)
    assert not plt.get_fignums()
    fig, ax = plt.subplots(figsize=(4, 3))
    ax.text(0.5, 0.5, "x")
    ax.set_axis_off()
    width, height = size(png_bytes(fig, dpi=50, crop=True))
    assert width < 200 and height < 150
    assert not plt.get_fignums()

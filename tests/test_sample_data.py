"""The synthetic CT-RATE sample: layout, determinism, label-report agreement, temporal classes."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from rad3d_pipeline.closed_qa.temporal import build_sequences
from rad3d_pipeline.common.errors import SampleDataError, UserFacingError
from rad3d_pipeline.ingest.ctrate import CtrateLayout, read_labels, read_metadata, read_reports
from rad3d_pipeline.ingest.labels import CTRATE_LABELS
from rad3d_pipeline.synthetic.sample_data import JOURNAL, MARKER, SampleVolume, write_sample_dataset

KEYWORDS = {
    "Medical material": "pacemaker",
    "Arterial wall calcification": "aortic wall",
    "Cardiomegaly": "cardiomegaly",
    "Pericardial effusion": "pericardial effusion reaching",
    "Coronary artery wall calcification": "coronary",
    "Hiatal hernia": "hiatal hernia is observed",
    "Lymphadenopathy": "short axis",
    "Emphysema": "emphysematous changes are",
    "Atelectasis": "atelectasis",
    "Lung nodule": "mm",
    "Lung opacity": "opacities",
    "Pulmonary fibrotic sequela": "fibrotic",
    "Pleural effusion": "in thickness was observed",
    "Mosaic attenuation pattern": "mosaic",
    "Peribronchial thickening": "peribronchial",
    "Consolidation": "consolidation area",
    "Bronchiectasis": "bronchiectasis",
    "Interlobular septal thickening": "septal",
}


def test_layout_validates_in_both_forms(tmp_path: Path) -> None:
    for nested in (True, False):
        root = tmp_path / str(nested)
        summary = write_sample_dataset(root, patients=12, seed=2, dataset_folder=nested)
        layout = CtrateLayout.resolve(root)
        for split in ("train", "valid"):
            for reader in (read_labels, read_reports, read_metadata):
                loaded = reader(layout, split)
                assert loaded.quarantine.empty and len(loaded.table) == summary.volumes[split]
        assert summary.patients == {"valid": 3, "train": 9}


def test_deterministic(tmp_path: Path) -> None:
    a = write_sample_dataset(tmp_path / "a", patients=20, seed=5)
    b = write_sample_dataset(tmp_path / "b", patients=20, seed=5)
    c = write_sample_dataset(tmp_path / "c", patients=20, seed=6)
    for fa, fb in zip(a.files, b.files, strict=True):
        assert fa.read_bytes() == fb.read_bytes()
    assert any(fa.read_bytes() != fc.read_bytes() for fa, fc in zip(a.files, c.files, strict=True))


def test_reports_agree_with_labels_and_every_temporal_class_occurs(tmp_path: Path) -> None:
    write_sample_dataset(tmp_path, patients=40, seed=0)
    layout = CtrateLayout.resolve(tmp_path)
    labels = pd.concat([read_labels(layout, s).table for s in ("train", "valid")])
    reports = pd.concat([read_reports(layout, s).table for s in ("train", "valid")]).set_index("VolumeName")
    for row in labels.itertuples(index=False):
        text = (reports.at[row.VolumeName, "Findings_EN"]).lower()
        for i, label in enumerate(CTRATE_LABELS):
            if row[6 + i] == 1:
                assert KEYWORDS[label] in text, (row.VolumeName, label)
    assert reports["Findings_EN"].str.contains(r"\d+ mm").any()
    assert reports["Findings_EN"].str.contains(r"\dx\d cm").any()
    classes = set(build_sequences(labels)["temporal_class"])
    assert classes == {"A", "B", "C", "D"}
    assert labels.groupby("patient_id")["scan"].nunique().max() >= 3


def test_volume_writer_gets_every_volume(tmp_path: Path) -> None:
    seen: list[tuple[Path, SampleVolume]] = []
    summary = write_sample_dataset(tmp_path, patients=8, seed=1, volume_writer=lambda p, v: seen.append((p, v)))
    assert len(seen) == sum(summary.volumes.values())
    path, volume = seen[0]
    assert path == CtrateLayout.resolve(tmp_path).volume_path(volume.volume_name)
    nodules = [f for _, v in seen for f in v.findings if f.kind == "nodule"]
    assert all(f.size_mm > 0 and f.lobe for f in nodules)


def test_volume_writer_may_report_the_grid_it_wrote(tmp_path: Path) -> None:
    """What the writer returns (spacing, rows, columns) is what the metadata CSV records."""

    def writer(path: Path, volume: SampleVolume) -> SampleVolume:
        return replace(volume, xy_spacing=4.8, z_spacing=10.0, rows=80, columns=80)

    write_sample_dataset(tmp_path, patients=8, seed=1, volume_writer=writer)
    meta = read_metadata(CtrateLayout.resolve(tmp_path), "train").table
    assert set(meta["XYSpacing"]) == {4.8} and set(meta["ZSpacing"]) == {10.0}
    assert set(meta["RescaleIntercept"]) <= {-1024.0, -8192.0}


# -- a sample folder holds exactly what the last call wrote ---------------------------------------------------


def _fake_volumes(path: Path, volume: SampleVolume) -> None:
    """A cheap stand-in for the phantom writer: a small file per volume, its temp file renamed like the real one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.nii.gz")
    tmp.write_bytes(volume.volume_name.encode())
    tmp.replace(path)


def _tree(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` except the marker, relative path -> content."""
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != MARKER
    }


def _dirs(root: Path) -> set[str]:
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_dir()}


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ({"patients": 16, "seed": 1, "volume_writer": _fake_volumes}, {"patients": 5, "seed": 1}),
        ({"patients": 8, "seed": 1, "volume_writer": _fake_volumes}, {"patients": 8, "seed": 2}),
        ({"patients": 8, "seed": 1, "volume_writer": _fake_volumes}, {"patients": 8, "seed": 1, "volume_writer": None}),
        ({"patients": 8, "seed": 1}, {"patients": 8, "seed": 1, "dataset_folder": False}),
    ],
    ids=["fewer patients", "another seed", "volumes none", "no dataset folder"],
)
def test_rerun_with_other_settings_leaves_exactly_what_a_fresh_call_writes(
    tmp_path: Path, first: dict[str, Any], second: dict[str, Any]
) -> None:
    second = {"volume_writer": _fake_volumes, **second}
    reused, fresh = tmp_path / "reused", tmp_path / "fresh"
    write_sample_dataset(reused, **first)
    before = _tree(reused)
    summary = write_sample_dataset(reused, **second)
    write_sample_dataset(fresh, **second)  # the independent reference: the same call into an empty folder

    assert _tree(reused) == _tree(fresh)
    assert _dirs(reused) == _dirs(fresh)  # folders left empty by the removal are gone too
    assert {p.relative_to(reused).as_posix() for p in summary.removed} == set(before) - set(_tree(fresh))
    assert summary.removed  # every case above drops something
    listed = [line for line in (reused / MARKER).read_text().splitlines() if not line.startswith("#")]
    assert sorted(listed) == sorted(_tree(fresh))
    assert not (reused / JOURNAL).exists()


def test_a_killed_call_is_cleaned_up_by_the_next(tmp_path: Path) -> None:
    write_sample_dataset(tmp_path / "s", patients=12, seed=1, volume_writer=_fake_volumes)
    calls = []

    def dies_midway(path: Path, volume: SampleVolume) -> None:
        calls.append(path)
        if len(calls) == 6:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.with_name(f".{path.name}.tmp.nii.gz").write_bytes(b"half")  # what a killed writer leaves
            raise KeyboardInterrupt
        _fake_volumes(path, volume)

    with pytest.raises(KeyboardInterrupt):
        write_sample_dataset(tmp_path / "s", patients=12, seed=9, volume_writer=dies_midway)
    assert (tmp_path / "s" / JOURNAL).is_file()
    write_sample_dataset(tmp_path / "s", patients=3, seed=4, volume_writer=_fake_volumes)
    write_sample_dataset(tmp_path / "fresh", patients=3, seed=4, volume_writer=_fake_volumes)
    assert _tree(tmp_path / "s") == _tree(tmp_path / "fresh")


def _refused(root: Path, **kwargs: Any) -> str:
    before = _tree(root) if root.exists() else None
    marked = (root / MARKER).exists()
    with pytest.raises(SampleDataError) as caught:
        write_sample_dataset(root, **{"patients": 4, "seed": 0, **kwargs})
    assert isinstance(caught.value, UserFacingError)
    message = str(caught.value)
    assert "\n" not in message
    if before is None:
        assert not root.exists()  # nothing created
    else:
        assert _tree(root) == before  # nothing written, nothing removed
        assert (root / MARKER).exists() == marked
    return message


def test_refuses_a_folder_holding_files_sample_data_did_not_write(tmp_path: Path) -> None:
    real = tmp_path / "ctrate"
    reports = real / "dataset" / "radiology_text_reports" / "validation_reports.csv"
    reports.parent.mkdir(parents=True)
    reports.write_text("VolumeName,Findings_EN\nvalid_1_a_1.nii.gz,Real report.\n")
    volume = real / "dataset" / "valid" / "valid_1" / "valid_1_a" / "valid_1_a_1.nii.gz"
    volume.parent.mkdir(parents=True)
    volume.write_bytes(b"a real download")
    message = _refused(real)
    assert message.startswith(f"{real}: holds 2 file(s) that rad3d sample-data did not write (first: dataset/")
    assert not (real / MARKER).exists() and reports.read_text().startswith("VolumeName,Findings_EN")

    # a file added to a sample folder is not the sample's to remove either
    sample = tmp_path / "sample"
    write_sample_dataset(sample, patients=4, seed=0)
    (sample / "dataset" / "my_notes.txt").write_text("keep me")
    assert "(first: dataset/my_notes.txt)" in _refused(sample)
    assert (sample / "dataset" / "my_notes.txt").read_text() == "keep me"

    # a metadata file that is not synthetic: a real CT-RATE folder, even without the marker's help
    real_meta = tmp_path / "real_meta"
    write_sample_dataset(real_meta, patients=4, seed=0)
    (real_meta / MARKER).unlink()
    csv_path = real_meta / "dataset" / "metadata" / "validation_metadata.csv"
    csv_path.write_text(csv_path.read_text().replace("SYNTHETIC", "SIEMENS"))
    assert "did not write" in _refused(real_meta)

    not_a_folder = tmp_path / "file"
    not_a_folder.write_text("x")
    assert _refused(not_a_folder) == f"{not_a_folder}: exists and is not a folder"


def test_a_sample_written_before_the_marker_existed_is_rewritten(tmp_path: Path) -> None:
    old = tmp_path / "old"
    write_sample_dataset(old, patients=12, seed=3, volume_writer=_fake_volumes)
    (old / MARKER).unlink()  # what rad3d sample-data wrote before it kept a list
    write_sample_dataset(old, patients=4, seed=3, volume_writer=_fake_volumes)
    write_sample_dataset(tmp_path / "fresh", patients=4, seed=3, volume_writer=_fake_volumes)
    assert _tree(old) == _tree(tmp_path / "fresh")


@pytest.mark.parametrize("patients", [0, -3])
def test_patients_below_one_is_a_one_line_user_error_and_writes_nothing(tmp_path: Path, patients: int) -> None:
    message = _refused(tmp_path / "new", patients=patients)
    assert message == f"--patients must be a whole number of at least 1, got {patients}"
    with pytest.raises(ValueError):  # still a ValueError for callers that caught that
        write_sample_dataset(tmp_path / "new", patients=patients)


def test_cli_rerun_with_fewer_patients_and_no_volumes_keeps_no_old_volume(tmp_path: Path) -> None:
    def sample_data(*args: str) -> subprocess.CompletedProcess[str]:
        command = [sys.executable, "-m", "rad3d.cli", "sample-data", "--out", str(tmp_path / "s"), *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=300)

    first = sample_data("--patients", "6", "--seed", "3")
    assert first.returncode == 0, first.stderr
    assert list((tmp_path / "s").rglob("*.nii.gz"))
    second = sample_data("--patients", "3", "--seed", "3", "--volumes", "none")
    assert second.returncode == 0, second.stderr
    assert not list((tmp_path / "s").rglob("*.nii.gz"))
    assert not (tmp_path / "s" / "dataset" / "valid").exists() and not (tmp_path / "s" / "dataset" / "train").exists()
    write_sample_dataset(tmp_path / "fresh", patients=3, seed=3)
    assert _tree(tmp_path / "s") == _tree(tmp_path / "fresh")


def test_cli_refuses_a_foreign_folder_with_one_line_and_exit_2(tmp_path: Path) -> None:
    real = tmp_path / "ctrate" / "dataset" / "metadata" / "validation_metadata.csv"
    real.parent.mkdir(parents=True)
    real.write_text("VolumeName,Manufacturer\nvalid_1_a_1.nii.gz,SIEMENS\n")
    command = [sys.executable, "-m", "rad3d.cli", "sample-data", "--out", str(tmp_path / "ctrate"), "--patients", "3"]
    done = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "did not write (first: dataset/metadata/validation_metadata.csv)" in lines[0]
    assert [p.name for p in (tmp_path / "ctrate").rglob("*") if p.is_file()] == ["validation_metadata.csv"]

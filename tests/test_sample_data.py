"""The synthetic CT-RATE sample: layout, determinism, label-report agreement, temporal classes."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pandas as pd

from rad3d_pipeline.ctrate import CtrateLayout, read_labels, read_metadata, read_reports
from rad3d_pipeline.labels import CTRATE_LABELS
from rad3d_pipeline.sample_data import SampleVolume, write_sample_dataset
from rad3d_pipeline.temporal import build_sequences

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

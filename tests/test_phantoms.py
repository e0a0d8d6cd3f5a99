"""Synthetic NIfTI phantoms: the findings the report states, int16 storage, metadata agreement."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd

from rad3d_pipeline.ingest.ctrate import CtrateLayout, read_metadata
from rad3d_pipeline.synthetic.phantoms import (
    HU_LUNG,
    HU_TISSUE,
    LOBE_Z,
    PhantomWriter,
    phantom_geometry,
    render_phantom,
    to_stored,
)
from rad3d_pipeline.synthetic.sample_data import SampleFinding, SampleVolume, write_sample_dataset


def volume(*findings: SampleFinding, intercept: float = -1024.0) -> SampleVolume:
    return SampleVolume("valid_1_a_1.nii.gz", "valid", 1, "a", 1, {}, findings, 0.75, 1.5, 1.0, intercept)


def test_geometry_small_full_and_explicit() -> None:
    v = volume()
    small = phantom_geometry(v, "small")
    assert small.shape == (32, 80, 80) and small.spacing == (10.0, 4.8, 4.8)
    assert phantom_geometry(v, "full").shape == (300, 512, 512)
    explicit = phantom_geometry(v, (140, 512, 512))
    assert explicit.spacing == (1.5, 0.75, 0.75)


def test_nodule_of_the_stated_size_in_the_stated_lobe() -> None:
    nodule = SampleFinding("nodule", "right", "upper", 14.0)
    base = render_phantom(volume(), phantom_geometry(volume(), (60, 128, 128)))
    geometry = phantom_geometry(volume(nodule), (60, 128, 128))
    with_nodule = render_phantom(volume(nodule), geometry)
    changed = np.abs(with_nodule - base) > 300  # lung (-850) turned to tissue (40)
    z, _, x = np.nonzero(changed)
    sz, _, sx = geometry.spacing
    assert abs((x.max() - x.min() + 1) * sx - 14.0) <= 2 * sx
    assert abs((z.max() - z.min() + 1) * sz - 14.0) <= 2 * sz
    assert x.mean() < 64  # the patient's right is at low x (LPS)
    # The upper lobe's share of the lung's z range (z increases towards the head).
    lung_z = np.nonzero((base < -700).any(axis=(1, 2)) & (base > -900).any(axis=(1, 2)))[0]
    lo, hi = LOBE_Z[("right", "upper")]
    fraction = (z.mean() - lung_z.min()) / (lung_z.max() - lung_z.min())
    assert lo - 0.1 <= fraction <= hi + 0.1
    assert abs(float(np.median(with_nodule[changed])) - HU_TISSUE) < 40


def test_effusion_has_the_stated_thickness() -> None:
    effusion = SampleFinding("effusion", "left", None, 18.0)
    geometry = phantom_geometry(volume(effusion), (40, 160, 160))
    hu = render_phantom(volume(effusion), geometry)
    base = render_phantom(volume(), geometry)
    fluid = (np.abs(hu - base) > 300) & (base < -500)
    assert fluid.any()
    z = int(np.argmax(fluid.sum(axis=(1, 2))))
    ys, xs = np.nonzero(fluid[z])
    assert xs.mean() > 80  # left hemithorax at high x
    thickness = (ys.max() - ys.min() + 1) * geometry.spacing[1]
    assert abs(thickness - 18.0) <= 2 * geometry.spacing[1]
    assert (hu[~fluid & (base < -500) & (base > -950)] < HU_LUNG + 100).mean() > 0.95


def test_stored_values_v1_and_v2() -> None:
    hu = np.array([[[-1000.0, 40.0, 700.0]]], np.float32)
    np.testing.assert_array_equal(to_stored(hu, volume(), "v1"), [[[24, 1064, 1724]]])
    np.testing.assert_array_equal(to_stored(hu, volume(intercept=-8192.0), "v1"), [[[7192, 8232, 8892]]])
    np.testing.assert_array_equal(to_stored(hu, volume(), "v2"), [[[-1000, 40, 700]]])


def test_sample_data_writes_every_volume_with_matching_metadata(tmp_path: Path) -> None:
    summary = write_sample_dataset(tmp_path, patients=6, seed=3, volume_writer=PhantomWriter())
    layout = CtrateLayout.resolve(tmp_path)
    for split in ("train", "valid"):
        meta = read_metadata(layout, split).table
        assert len(meta) == summary.volumes[split]
        for row in meta.itertuples(index=False):
            image = nib.load(str(layout.volume_path(row.VolumeName)))
            assert image.get_data_dtype() == np.int16
            zx, zy, zz = image.header.get_zooms()
            assert (zx, zy) == (np.float32(row.XYSpacing), np.float32(row.XYSpacing))
            assert zz == np.float32(row.ZSpacing)
            assert image.shape[:2] == (int(row.Rows), int(row.Columns)) == (80, 80)
    raw = pd.read_csv(layout.metadata_csv("train"))
    assert set(raw["RescaleSlope"]) == {1}
    assert set(raw["RescaleIntercept"]) <= {-1024, -8192}

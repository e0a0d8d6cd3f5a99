"""Each preprocessing step against hand-made arrays and against torch / SimpleITK directly."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk
import torch
import torch.nn.functional as F

from rad3d_pipeline.volumes.profiles import Profile, ctclip_profile, m3d_profile
from rad3d_pipeline.volumes.reference import resize_image_itk
from rad3d_pipeline.volumes.steps import (
    Clip,
    CropPad,
    Layout,
    Normalise,
    Resample,
    RescaleToHU,
    StepContext,
    Volume,
    run_steps,
    source_coords,
    volume_from_array,
)

CTX = StepContext(slope=2.0, intercept=-1024.0, rescale="metadata")


def vol(array: np.ndarray, spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)) -> Volume:
    return volume_from_array(array, spacing)


def test_rescale_metadata_header_none_and_never_twice() -> None:
    stored = np.array([[[0, 512], [1024, 2048]]] * 2, dtype=np.int16)
    out = RescaleToHU()(vol(stored), CTX).materialize()
    assert out.data.dtype == torch.float32 and out.rescale_applied == "metadata"
    np.testing.assert_array_equal(out.data.numpy(), stored * 2.0 - 1024.0)
    header = RescaleToHU()(vol(stored), StepContext(rescale="header", header_scaling=(0.5, 10.0))).materialize()
    np.testing.assert_array_equal(header.data.numpy(), stored * 0.5 + 10.0)
    none = RescaleToHU()(vol(stored), StepContext(slope=2.0, intercept=-1024.0, rescale="none")).materialize()
    np.testing.assert_array_equal(none.data.numpy(), stored.astype(np.float32))
    with pytest.raises(RuntimeError, match="never runs twice"):
        RescaleToHU()(RescaleToHU()(vol(stored), CTX), CTX)
    assert stored[0, 0, 1] == 512  # the source is never written to


def test_clip_is_pending_until_needed_and_composes() -> None:
    data = np.array([[[-3000, -500], [0, 3000]]] * 2, dtype=np.int16)
    v = Clip(-1000, 1000)(vol(data), CTX)
    assert v.clip == (-1000, 1000) and v.data.dtype == torch.int16
    v = Clip(-800, 2000)(v, CTX)
    assert v.clip == (-800, 1000)
    np.testing.assert_array_equal(v.materialize().data.numpy()[0], [[-800, -500], [0, 1000]])
    # An affine after a clip materializes first: clip, then scale.
    scaled = Normalise("scale", divisor=1000)(v, CTX)
    np.testing.assert_allclose(scaled.data.numpy()[0], [[-0.8, -0.5], [0, 1.0]])


@pytest.mark.parametrize(("n_in", "n_out"), [(10, 4), (7, 13), (512, 477), (5, 5)])
def test_centers_coordinates_match_torch_linear(n_in: int, n_out: int) -> None:
    line = torch.arange(n_in, dtype=torch.float64).view(1, 1, -1) ** 1.5
    expected = F.interpolate(line, size=n_out, mode="linear", align_corners=False).view(-1).numpy()
    coords = source_coords(n_in, n_out, "centers")
    np.testing.assert_allclose(np.interp(coords, np.arange(n_in), line.view(-1).numpy()), expected, rtol=1e-12)


def test_resample_matches_torch_trilinear_with_pending_rescale_and_clip() -> None:
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 2500, size=(19, 33, 28)).astype(np.int16)
    spacing = (2.0, 0.7, 0.8)
    v = Resample(spacing=(1.5, 0.75, 0.75))(Clip(-1000, 1000)(RescaleToHU()(vol(stored, spacing), CTX), CTX), CTX)
    hu = np.clip(stored * 2.0 - 1024.0, -1000, 1000)
    size = [int(n * c / t) for n, c, t in zip(stored.shape, spacing, (1.5, 0.75, 0.75), strict=True)]
    expected = F.interpolate(torch.tensor(hu)[None, None], size=size, mode="trilinear", align_corners=False)[0, 0]
    assert tuple(v.data.shape) == tuple(size) == (25, 30, 29)
    np.testing.assert_allclose(v.data.numpy(), expected.numpy(), atol=1e-2)  # float32 vs float64: < 0.01 HU
    assert v.spacing == pytest.approx((2.0 * 19 / 25, 0.7 * 33 / 30, 0.8 * 28 / 29))


def test_resample_keep_window_equals_crop_of_full_result() -> None:
    rng = np.random.default_rng(1)
    data = rng.normal(size=(12, 40, 36)).astype(np.float32)
    full = Resample(size=(20, 50, 50))(vol(data), CTX).data.numpy()
    kept = Resample(size=(20, 50, 50), keep=(16, 30, 50))(vol(data), CTX).data.numpy()
    np.testing.assert_allclose(kept, full[2:18, 10:40, :], atol=1e-6)
    gathered = Resample(size=(20, 50, 50), align="centers", interpolation="nearest")(vol(data), CTX).data.numpy()
    assert set(np.unique(gathered)) <= set(np.unique(data))


def test_resample_origin_matches_simpleitk_resize() -> None:
    rng = np.random.default_rng(2)
    data = rng.normal(size=(24, 40, 36)).astype(np.float32) * 100
    image = sitk.GetImageFromArray(data)
    image.SetSpacing((0.8, 0.7, 2.5))
    expected = sitk.GetArrayFromImage(resize_image_itk(image, (18, 20, 8)))
    got = Resample(size=(8, 20, 18), align="origin")(vol(data, (2.5, 0.7, 0.8)), CTX).data.numpy()
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_normalise_kinds() -> None:
    data = np.array([[[-1000.0, 0.0], [500.0, 1000.0]]] * 2, dtype=np.float32)
    np.testing.assert_allclose(Normalise("scale", divisor=1000)(vol(data), CTX).data.numpy()[0], [[-1, 0], [0.5, 1]])
    np.testing.assert_allclose(Normalise("minmax")(vol(data), CTX).data.numpy()[0], [[0, 0.5], [0.75, 1]])
    np.testing.assert_allclose(Normalise("window", lo=-500, hi=500)(vol(data), CTX).data.numpy()[0], [[0, 0.5], [1, 1]])
    z = Normalise("zscore")(vol(data), CTX).data
    assert abs(float(z.mean())) < 1e-6 and abs(float(z.std()) - 1) < 1e-6
    assert float(Normalise("minmax")(vol(np.full((2, 2, 2), 7, np.float32)), CTX).data.abs().max()) == 0


def test_crop_pad_follows_ctclips_rule() -> None:
    data = np.arange(5 * 7 * 4, dtype=np.float32).reshape(5, 7, 4)
    out = CropPad((3, 4, 7), value=-1)(vol(data), CTX).data.numpy()
    assert out.shape == (3, 4, 7)
    # crop: start (5-3)//2 = 1 and (7-4)//2 = 1; pad: (7-4)//2 = 1 before, 2 after
    np.testing.assert_array_equal(out[:, :, 1:5], data[1:4, 1:5, :])
    assert (out[:, :, 0] == -1).all() and (out[:, :, 5:] == -1).all()
    same = CropPad((5, 7, 4))(vol(data), CTX).data.numpy()
    np.testing.assert_array_equal(same, data)


def test_layout_orders_axes_and_adds_channel() -> None:
    data = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4)
    out = Layout("zxy", channel=True)(vol(data, (3.0, 2.0, 1.0)), CTX)
    assert tuple(out.data.shape) == (1, 2, 4, 3) and out.spacing == (3.0, 1.0, 2.0)
    np.testing.assert_array_equal(out.data.numpy()[0], data.transpose(0, 2, 1))
    with pytest.raises(ValueError, match="before layout"):
        Resample(size=(2, 2, 2))(out, CTX)


@pytest.mark.parametrize("factory", [ctclip_profile, m3d_profile])
def test_fused_profile_equals_steps_one_by_one(factory) -> None:  # type: ignore[no-untyped-def]
    """The compiled profile (pending transforms, resample only inside the crop) changes no value."""
    rng = np.random.default_rng(3)
    stored = rng.integers(0, 2000, size=(30, 120, 300)).astype(np.int16)
    profile: Profile = factory()
    ctx = StepContext(1.0, -1024.0, "metadata")
    spacing = (1.6, 1.3, 1.3)  # ctclip: 32 x 208 x 520 -> pad D and H, crop W
    fused = run_steps(vol(stored, spacing), profile.compiled(), ctx).data.numpy()
    v = vol(stored, spacing)
    for step in profile.steps:
        v = step(v, ctx).materialize()
    assert fused.shape == tuple(v.data.shape) and fused.dtype == np.float32
    assert float(np.max(np.abs(fused - v.data.numpy()))) <= 1e-5

"""Which CT-RATE release a volume comes from, so the rescale to HU runs exactly once.

CT-RATE v1 stores DICOM values; HU = RescaleSlope * stored + RescaleIntercept with both from
the metadata CSV. CT-RATE v2 re-released the volumes already in HU while the CSV still
carries the DICOM slope and intercept, so applying them again corrupts the volume (CT-CLIP
issue 50). The setting ``RAD3D_CTRATE_VERSION`` is ``v1``, ``v2`` or ``auto``; ``auto``
decides per volume:

1. a NIfTI header with its own non-trivial ``scl_slope``/``scl_inter`` is applied and the
   metadata values are not (``header``);
2. otherwise the air peak decides: chest CT always holds air (outside the body, the
   lungs) at about -1000 HU. Voxels equal to the volume's minimum (padding outside the
   field of view) are left out; then the voxels in the HU air window [-1100, -900] are
   counted as stored, and as mapped through the metadata slope and intercept. The reading
   under which more voxels are air wins: ``v2`` (already HU) or ``v1`` (rescale).
   A trivial metadata rescale (slope 1, intercept 0) makes both readings equal: ``v2``.
"""

from __future__ import annotations

from typing import Any, Literal

import numpy as np
import numpy.typing as npt

VersionSetting = Literal["auto", "v1", "v2"]
VERSION_SETTINGS: tuple[VersionSetting, ...] = ("auto", "v1", "v2")
Rescale = Literal["metadata", "header", "none"]
AIR_WINDOW_HU = (-1100.0, -900.0)


def sample_voxels(data: npt.NDArray[Any], step: int = 4) -> npt.NDArray[np.float64]:
    """Every ``step``-th voxel along each axis (a strided view, then one small copy)."""
    return np.asarray(data[::step, ::step, ::step], dtype=np.float64).ravel()


def air_counts(values: npt.NDArray[np.float64], slope: float, intercept: float) -> tuple[int, int]:
    """(voxels in the air window read as HU, voxels in it after the metadata rescale), padding excluded."""
    body = values[values > values.min()] if values.size else values
    lo, hi = AIR_WINDOW_HU
    as_hu = int(np.count_nonzero((body >= lo) & (body <= hi)))
    a, b = sorted(((lo - intercept) / slope, (hi - intercept) / slope))
    as_stored = int(np.count_nonzero((body >= a) & (body <= b)))
    return as_hu, as_stored


def detect_version(values: npt.NDArray[np.float64], slope: float, intercept: float) -> Literal["v1", "v2"]:
    """``v2`` when the values already read as HU, ``v1`` when they need the metadata rescale."""
    if slope == 1.0 and intercept == 0.0:
        return "v2"
    as_hu, as_stored = air_counts(values, slope, intercept)
    return "v2" if as_hu > as_stored else "v1"


def decide_rescale(
    setting: VersionSetting,
    header_scaling: tuple[float, float] | None,
    data: npt.NDArray[Any],
    slope: float,
    intercept: float,
) -> tuple[Rescale, str]:
    """(which rescale to apply, the resolved version): ``header``, ``metadata`` (v1) or ``none`` (v2)."""
    if setting not in VERSION_SETTINGS:
        raise ValueError(f"unknown CT-RATE version setting {setting!r}: use auto, v1 or v2")
    if header_scaling is not None:
        return "header", "header"
    version = setting if setting != "auto" else detect_version(sample_voxels(data), slope, intercept)
    return ("metadata" if version == "v1" else "none"), version

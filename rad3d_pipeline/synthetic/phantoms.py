"""Synthetic chest-CT phantoms drawn from what a sample report states.

A phantom is a body ellipse with two lungs (the right one split into upper, middle and
lower lobes along z, the left into upper and lower), a spine, a heart, a circular field
of view, Gaussian noise, and the findings its report names: a nodule of the stated
diameter in the centre of the stated lobe, a pleural effusion of the stated thickness
along the posterior wall of the stated hemithorax, a consolidation of the stated size.

Arrays are ``(D, H, W)`` = ``(z, y, x)`` = NIfTI voxel axes ``(k, j, i)`` in reverse, as
``SimpleITK.GetArrayFromImage`` returns them; x increases towards the patient's left,
y towards posterior, z towards superior (DICOM's LPS), so the right lung sits at low x.

Stored values are int16 as CT-RATE has them: ``v1`` stores ``(HU - intercept) / slope``
with the slope and intercept in the metadata CSV and none in the NIfTI header; ``v2``
stores HU (the metadata still carries the DICOM slope and intercept, as CT-RATE v2 does).
"""

from __future__ import annotations

import hashlib
import importlib
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from rad3d_pipeline.synthetic.sample_data import SampleFinding, SampleVolume

VolumeSize = Literal["small", "full"]
StoredVersion = Literal["v1", "v2"]

SMALL_INPLANE = 80
SMALL_SLICES = (32, 40)  # first and later reconstructions
FULL_INPLANE = 512
FULL_SLICES = 300
BODY_LENGTH_MM = 320.0  # z extent of the small phantoms
HU_AIR = -1000.0
HU_OUTSIDE_FOV = -2048.0
HU_LUNG = -850.0
HU_TISSUE = 40.0
HU_FLUID = 15.0
HU_BONE = 700.0
NOISE_HU = 12.0

# Lobe extents along the lung's z range (0 = lung base, 1 = apex).
LOBE_Z: dict[tuple[str, str], tuple[float, float]] = {
    ("right", "lower"): (0.0, 0.4),
    ("right", "middle"): (0.4, 0.62),
    ("right", "upper"): (0.62, 1.0),
    ("left", "lower"): (0.0, 0.5),
    ("left", "upper"): (0.5, 1.0),
}


@dataclass(frozen=True)
class PhantomGeometry:
    """Voxel grid of a phantom: shape ``(D, H, W)`` and spacing ``(z, y, x)`` in mm."""

    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]


def phantom_geometry(volume: SampleVolume, size: VolumeSize | tuple[int, int, int] = "small") -> PhantomGeometry:
    """The grid of a phantom for a sample volume.

    ``full`` keeps the sample's realistic spacing on a 512 x 512 x 300 grid; ``small`` covers
    the same field of view (512 x XYSpacing) with 80 x 80 pixels and a 320 mm long body with
    32 slices (40 for later reconstructions); a tuple ``(D, H, W)`` keeps the realistic
    in-plane spacing when H is 512, else scales it to the same field of view.
    """
    fov = FULL_INPLANE * volume.xy_spacing
    if size == "full":
        shape = (FULL_SLICES, FULL_INPLANE, FULL_INPLANE)
        return PhantomGeometry(shape, (volume.z_spacing, volume.xy_spacing, volume.xy_spacing))
    if size == "small":
        depth = SMALL_SLICES[0] if volume.recon == 1 else SMALL_SLICES[1]
        xy = round(fov / SMALL_INPLANE, 4)
        return PhantomGeometry((depth, SMALL_INPLANE, SMALL_INPLANE), (round(BODY_LENGTH_MM / depth, 4), xy, xy))
    depth, height, width = size
    if min(size) < 8:
        raise ValueError(f"phantom shape {size} too small: every axis needs at least 8 voxels")
    xy = volume.xy_spacing if height == FULL_INPLANE else round(fov / height, 4)
    return PhantomGeometry((depth, height, width), (volume.z_spacing, xy, xy))


def _seed(name: str) -> int:
    return int.from_bytes(hashlib.blake2b(name.encode(), digest_size=8).digest(), "big")


def _finding_centre(
    finding: SampleFinding, lung_z: tuple[float, float], lungs: dict[str, tuple[float, float, float, float]]
) -> tuple[float, float, float]:
    """Physical centre (z, y, x) in mm of a finding, relative to the volume centre."""
    cy, cx, _, _ = lungs[finding.side]
    lo, hi = LOBE_Z.get((finding.side, finding.lobe or "lower"), (0.0, 0.5))
    z0, z1 = lung_z
    z = z0 + (z1 - z0) * (lo + hi) / 2
    return z, cy, cx


def render_phantom(volume: SampleVolume, geometry: PhantomGeometry) -> npt.NDArray[np.float32]:
    """HU values of the phantom, float32 ``(D, H, W)``."""
    depth, height, width = geometry.shape
    sz, sy, sx = geometry.spacing
    rng = np.random.default_rng(_seed(volume.volume_name))
    # Physical coordinates (mm) of voxel centres relative to the grid centre.
    zs = (np.arange(depth, dtype=np.float32) - (depth - 1) / 2) * sz
    ys = ((np.arange(height, dtype=np.float32) - (height - 1) / 2) * sy)[:, None]
    xs = ((np.arange(width, dtype=np.float32) - (width - 1) / 2) * sx)[None, :]
    fov = min(height * sy, width * sx)
    length = depth * sz
    body_ry, body_rx = 0.30 * fov, 0.42 * fov
    lung_ry, lung_rx = 0.22 * fov, 0.15 * fov
    lungs = {"right": (-0.02 * fov, -0.19 * fov, lung_ry, lung_rx), "left": (-0.02 * fov, 0.19 * fov, lung_ry, lung_rx)}
    lung_z = (-0.35 * length, 0.4 * length)
    lung_mid, lung_half = (lung_z[0] + lung_z[1]) / 2, (lung_z[1] - lung_z[0]) / 2

    in_fov = (ys**2 + xs**2) <= (fov / 2) ** 2
    body = (ys / body_ry) ** 2 + (xs / body_rx) ** 2 <= 1
    spine = ((ys - 0.2 * fov) / (0.05 * fov)) ** 2 + (xs / (0.05 * fov)) ** 2 <= 1
    lung_planes = {side: ((ys - cy) / ry) ** 2 + ((xs - cx) / rx) ** 2 for side, (cy, cx, ry, rx) in lungs.items()}
    heart = ((ys + 0.08 * fov) / (0.12 * fov)) ** 2 + ((xs - 0.04 * fov) / (0.11 * fov)) ** 2

    out = np.empty(geometry.shape, dtype=np.float32)
    effusions = [f for f in volume.findings if f.kind == "effusion"]
    blobs = [f for f in volume.findings if f.kind in ("nodule", "mass")]
    centres = [(_finding_centre(f, lung_z, lungs), f.size_mm / 2) for f in blobs]
    for k, z in enumerate(zs):
        plane = np.where(in_fov, np.where(body, HU_TISSUE, HU_AIR), HU_OUTSIDE_FOV).astype(np.float32)
        t = (z - lung_mid) / lung_half
        if abs(t) < 1:
            shrink = 1 - t**2  # ellipsoidal lungs: the cross-section shrinks towards base and apex
            for side, dist in lung_planes.items():
                lung = dist <= shrink
                plane[lung] = HU_LUNG
                for finding in effusions:
                    if finding.side == side:
                        cy, _, ry, _ = lungs[side]
                        back = cy + ry * float(np.sqrt(shrink))
                        plane[lung & (ys >= back - finding.size_mm)] = HU_FLUID
            if abs(t) < 0.6:
                plane[heart <= 1 - (t / 0.6) ** 2] = HU_TISSUE + 10
        for (cz, cy, cx), radius in centres:
            dz = z - cz
            if abs(dz) <= radius:
                r2 = radius**2 - dz**2
                plane[(ys - cy) ** 2 + (xs - cx) ** 2 <= r2] = HU_TISSUE
        plane[spine & body] = HU_BONE
        out[k] = plane
    noise = rng.standard_normal(size=geometry.shape, dtype=np.float32)
    noise *= NOISE_HU
    out += noise
    return out


def to_stored(hu: npt.NDArray[np.float32], volume: SampleVolume, version: StoredVersion) -> npt.NDArray[np.int16]:
    """int16 stored values: ``(HU - intercept) / slope`` for v1, HU for v2."""
    values = hu if version == "v2" else (hu - np.float32(volume.intercept)) / np.float32(volume.slope)
    return np.clip(np.rint(values), -32768, 32767).astype(np.int16)


def write_nifti(path: Path, stored: npt.NDArray[np.int16], spacing: tuple[float, float, float]) -> None:
    """Write ``(D, H, W)`` int16 as a NIfTI-1 file (voxel axes i, j, k = W, H, D), no header scaling.

    Written to a temporary name and renamed, so a killed writer never leaves half a file.
    """
    nib: Any = importlib.import_module("nibabel")
    sz, sy, sx = spacing
    affine = np.diag([-sx, -sy, sz, 1.0])  # RAS affine of an LPS-ordered grid
    image = nib.Nifti1Image(np.ascontiguousarray(stored.transpose(2, 1, 0)), affine)
    image.header.set_data_dtype(np.int16)
    image.header.set_xyzt_units("mm")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp.nii.gz")
    nib.save(image, str(tmp))
    tmp.replace(path)


@dataclass(frozen=True)
class PhantomWriter:
    """A ``volume_writer`` for :func:`rad3d_pipeline.synthetic.sample_data.write_sample_dataset`."""

    size: VolumeSize | tuple[int, int, int] = "small"
    version: StoredVersion = "v1"

    def __call__(self, path: Path, volume: SampleVolume) -> SampleVolume:
        geometry = phantom_geometry(volume, self.size)
        stored = to_stored(render_phantom(volume, geometry), volume, self.version)
        write_nifti(path, stored, geometry.spacing)
        depth, height, width = geometry.shape
        return replace(
            volume,
            z_spacing=geometry.spacing[0],
            xy_spacing=geometry.spacing[2],
            rows=height,
            columns=width,
            slices=depth,
        )

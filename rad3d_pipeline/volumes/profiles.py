"""Preprocessing profiles: a reader, an ordered list of steps and an output dtype.

Built in:

- ``ctclip``: CT-CLIP's procedure. HU from the metadata slope and intercept, clip to
  [-1000, 1000], trilinear resample (``align_corners=False``) to (1.5, 0.75, 0.75) mm, divide by
  1000, centre crop or pad with -1 to 240 x 480 x 480, stored D x H x W with CT-CLIP's in-plane
  order (its loader transposes the nibabel ``(i, j, k)`` array to ``(k, i, j)``: layout ``zxy``).
  float32, 221 MB per volume.
- ``m3d``: the M3D-LaMed preparation. Linear resize of the whole volume straight to 32 x 256 x 256
  (SimpleITK's ``resize_image_itk`` sampling: ``align="origin"``), min-max to [0, 1], float32
  ``1 x 32 x 256 x 256`` in SimpleITK's array order ``(z, y, x)``. 8.4 MB per volume.

Custom profiles come from a YAML file (``RAD3D_VOLUME_PROFILES_FILE``)::

    profiles:
      - name: lung_96               # [a-z0-9_]+, becomes <out>/volumes/<name>/
        reader: nibabel             # nibabel (default) or sitk
        rescale: true               # HU from slope/intercept (default true; never applied twice)
        clip: [-1000, 400]          # optional HU window
        resample:                   # optional; exactly one of spacing or size
          spacing: [3.0, 1.5, 1.5]  # (z, y, x) mm -> int(n * current / target) voxels
          # size: [64, 128, 128]    # (D, H, W)
          align: centers            # centers (torch align_corners=False) or origin (SimpleITK resize)
          interpolation: linear     # linear or nearest
        normalise: {kind: window, lo: -1000, hi: 400}   # scale (divisor), minmax, window, zscore
        crop_pad: {size: [96, 224, 224], value: 0}      # centre crop/pad (D, H, W), pad value
        layout: {axes: zyx, channel: true}              # permutation of zyx, optional channel axis
        dtype: float16              # float32 (default) or float16

Steps always run in that order: rescale, clip, resample, normalise, crop_pad, layout.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rad3d_pipeline.volumes.io import READERS, Reader
from rad3d_pipeline.volumes.steps import (
    AXES,
    Clip,
    CropPad,
    Layout,
    Normalise,
    Resample,
    RescaleToHU,
    Step,
    StepContext,
    Volume,
    run_steps,
)

# Bump when a step's arithmetic changes: outputs of every profile are then rebuilt.
PIPELINE_VERSION = "1"
DTYPES = ("float32", "float16")
NAME_RE = re.compile(r"^[a-z0-9_]+$")
POINTWISE = ("scale", "window")


class ProfileError(ValueError):
    """A profile definition that cannot be used (file, profile and key named)."""


@dataclass(frozen=True)
class Profile:
    name: str
    steps: tuple[Step, ...]
    reader: Reader = "nibabel"
    dtype: str = "float32"
    description: str = ""

    @property
    def version(self) -> str:
        """Changes whenever the arithmetic could: the pipeline version, reader, steps and dtype."""
        spec = f"{PIPELINE_VERSION}|{self.reader}|{self.dtype}|{self.steps!r}"
        return hashlib.sha256(spec.encode()).hexdigest()[:16]

    def describe(self) -> str:
        return " -> ".join([f"read({self.reader})", *(s.name for s in self.steps), self.dtype])

    def compiled(self) -> list[Step]:
        """The steps with a resample followed by a centre crop computing only the surviving window."""
        steps = list(self.steps)
        for i, step in enumerate(steps):
            if not isinstance(step, Resample):
                continue
            for later in steps[i + 1 :]:
                if isinstance(later, CropPad):
                    after = steps[steps.index(later) + 1] if later is not steps[-1] else None
                    axes = after.axes if isinstance(after, Layout) else AXES
                    steps[i] = replace(step, keep=later.size, canvas=True, memory_axes=axes)
                    break
                # Only voxel-wise steps commute with a crop (min-max and z-score see the whole volume).
                if not (isinstance(later, Clip) or (isinstance(later, Normalise) and later.kind in POINTWISE)):
                    break
        for i, step in enumerate(steps[:-1]):
            nxt = steps[i + 1]
            if isinstance(step, CropPad) and isinstance(nxt, Layout):
                steps[i] = replace(step, memory_axes=nxt.axes)
        return steps

    def run(self, vol: Volume, ctx: StepContext) -> tuple[np.ndarray, tuple[float, ...]]:
        """The profile's output array (on the CPU) and its voxel spacing in the output axis order."""
        out = run_steps(vol, self.compiled(), ctx)
        data = out.data.to(getattr(torch, self.dtype)).contiguous().cpu().numpy()
        return data, out.spacing


def ctclip_profile() -> Profile:
    return Profile(
        "ctclip",
        (
            RescaleToHU(),
            Clip(-1000.0, 1000.0),
            Resample(spacing=(1.5, 0.75, 0.75), align="centers"),
            Normalise("scale", divisor=1000.0),
            CropPad((240, 480, 480), value=-1.0),
            Layout("zxy"),
        ),
        description="CT-CLIP: HU, clip [-1000, 1000], trilinear to (1.5, 0.75, 0.75) mm, /1000, "
        "crop/pad -1 to 240x480x480",
    )


def m3d_profile() -> Profile:
    return Profile(
        "m3d",
        (
            RescaleToHU(),
            Resample(size=(32, 256, 256), align="origin"),
            Normalise("minmax"),
            Layout("zyx", channel=True),
        ),
        description="M3D-LaMed: linear resize to 32x256x256, min-max to [0, 1], 1x32x256x256",
    )


BUILTIN = {"ctclip": ctclip_profile, "m3d": m3d_profile}


def _triple(value: Any, where: str, kind: type) -> tuple[Any, Any, Any]:
    if not isinstance(value, list | tuple) or len(value) != 3:
        raise ProfileError(f"{where}: expected a list of three numbers, got {value!r}")
    try:
        items = tuple(kind(v) for v in value)
    except (TypeError, ValueError):
        raise ProfileError(f"{where}: expected numbers, got {value!r}") from None
    if any(v <= 0 for v in items):
        raise ProfileError(f"{where}: every value must be positive, got {value!r}")
    return items[0], items[1], items[2]


def profile_from_dict(spec: dict[str, Any], where: str = "profile") -> Profile:
    """One custom profile from its YAML mapping (schema in the module docstring)."""
    known = {"name", "reader", "rescale", "clip", "resample", "normalise", "crop_pad", "layout", "dtype", "description"}
    name = spec.get("name")
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise ProfileError(f"{where}: 'name' must match [a-z0-9_]+, got {name!r}")
    where = f"{where} {name!r}"
    unknown = sorted(set(spec) - known)
    if unknown:
        raise ProfileError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    reader = spec.get("reader", "nibabel")
    if reader not in READERS:
        raise ProfileError(f"{where}: reader must be one of {', '.join(READERS)}, got {reader!r}")
    dtype = spec.get("dtype", "float32")
    if dtype not in DTYPES:
        raise ProfileError(f"{where}: dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
    steps: list[Step] = []
    if spec.get("rescale", True):
        steps.append(RescaleToHU())
    if spec.get("clip") is not None:
        clip = spec["clip"]
        if not isinstance(clip, list | tuple) or len(clip) != 2 or float(clip[0]) > float(clip[1]):
            raise ProfileError(f"{where}: clip must be [lo, hi] with lo <= hi, got {clip!r}")
        steps.append(Clip(float(clip[0]), float(clip[1])))
    if spec.get("resample") is not None:
        rs = dict(spec["resample"])
        if ("spacing" in rs) == ("size" in rs):
            raise ProfileError(f"{where}: resample needs exactly one of spacing or size")
        align, interp = rs.get("align", "centers"), rs.get("interpolation", "linear")
        if align not in ("centers", "origin") or interp not in ("linear", "nearest"):
            raise ProfileError(f"{where}: resample align centers|origin and interpolation linear|nearest")
        steps.append(
            Resample(
                spacing=_triple(rs["spacing"], f"{where}: resample.spacing", float) if "spacing" in rs else None,
                size=_triple(rs["size"], f"{where}: resample.size", int) if "size" in rs else None,
                align=align,
                interpolation=interp,
            )
        )
    if spec.get("normalise") not in (None, "none"):
        norm = spec["normalise"]
        norm = {"kind": norm} if isinstance(norm, str) else dict(norm)
        if norm.get("kind") not in ("scale", "minmax", "window", "zscore"):
            raise ProfileError(f"{where}: normalise.kind must be scale, minmax, window or zscore")
        steps.append(
            Normalise(
                norm["kind"],
                divisor=float(norm.get("divisor", 1000.0)),
                lo=float(norm.get("lo", -1000.0)),
                hi=float(norm.get("hi", 1000.0)),
            )
        )
    if spec.get("crop_pad") is not None:
        cp = dict(spec["crop_pad"])
        steps.append(CropPad(_triple(cp.get("size"), f"{where}: crop_pad.size", int), float(cp.get("value", 0.0))))
    layout = spec.get("layout") or {}
    layout = {"axes": layout} if isinstance(layout, str) else dict(layout)
    axes = layout.get("axes", "zyx")
    if not isinstance(axes, str) or sorted(axes) != sorted("zyx"):
        raise ProfileError(f"{where}: layout.axes must be a permutation of zyx, got {axes!r}")
    steps.append(Layout(axes, bool(layout.get("channel", False))))
    return Profile(name, tuple(steps), reader, dtype, str(spec.get("description", "custom profile")))


def load_profiles_file(path: Path) -> dict[str, Profile]:
    """Custom profiles from a YAML file; errors name the file and the profile."""
    import yaml

    try:
        doc = yaml.safe_load(Path(path).read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ProfileError(f"{path}: cannot read the profiles file ({exc})") from exc
    items = doc.get("profiles") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ProfileError(f"{path}: expected a mapping with a 'profiles' list")
    profiles: dict[str, Profile] = {}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise ProfileError(f"{path}: profiles[{i}] is not a mapping")
        profile = profile_from_dict(item, f"{path}: profiles[{i}]")
        if profile.name in BUILTIN or profile.name in profiles:
            raise ProfileError(f"{path}: profiles[{i}]: name {profile.name!r} is already taken")
        profiles[profile.name] = profile
    return profiles


def resolve_profiles(names: str | list[str], profiles_file: str | Path | None = None) -> list[Profile]:
    """Profiles by name (comma-separated or a list): built-ins and those of ``profiles_file``."""
    wanted = [n.strip() for n in (names.split(",") if isinstance(names, str) else names) if n.strip()]
    custom = load_profiles_file(Path(profiles_file)) if profiles_file else {}
    out = []
    for name in dict.fromkeys(wanted):
        if name in BUILTIN:
            out.append(BUILTIN[name]())
        elif name in custom:
            out.append(custom[name])
        else:
            available = ", ".join([*BUILTIN, *custom])
            raise ProfileError(f"unknown volume profile {name!r}; available: {available}")
    return out

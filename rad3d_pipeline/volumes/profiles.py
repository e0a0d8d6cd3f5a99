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
The file is validated by the pydantic models below (:class:`ProfileSpec`): an unknown key at any level
is an error, and every error is one line naming the file, the profile, the key and the reason.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

import numpy as np
from pydantic import BeforeValidator, model_validator

from rad3d_pipeline.common.settings_files import SettingsFileError, SettingsModel, read_yaml, validate
from rad3d_pipeline.volumes.io import READERS, Reader
from rad3d_pipeline.volumes.steps import (
    AXES,
    Align,
    Clip,
    CropPad,
    Interpolation,
    Layout,
    Normalise,
    NormaliseKind,
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


class ProfileError(SettingsFileError):
    """A profile definition that cannot be used (file, profile and key named), or an unknown profile name."""


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
        import torch

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


def _triple(kind: type[int] | type[float]) -> Callable[[Any], Any]:
    """A validator: a list of three positive numbers of ``kind`` (today's messages, the key named by pydantic)."""

    def check(value: Any) -> Any:
        if not isinstance(value, list | tuple) or len(value) != 3:
            raise ValueError(f"expected a list of three numbers, got {value!r}")
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in value) or (
            kind is int and any(float(v) != int(v) for v in value)
        ):
            raise ValueError(f"expected {'whole ' if kind is int else ''}numbers, got {value!r}")
        if any(v <= 0 for v in value):
            raise ValueError(f"every value must be positive, got {value!r}")
        return tuple(kind(v) for v in value)

    return check


def _one_of(choices: tuple[str, ...]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if value not in choices:
            raise ValueError(f"must be one of {', '.join(choices)}, got {value!r}")
        return value

    return check


def _mapping_of(key: str) -> Callable[[Any], Any]:
    """A bare string stands for ``{key: string}`` (``normalise: minmax``, ``layout: zxy``)."""

    def expand(value: Any) -> Any:
        return {key: value} if isinstance(value, str) else value

    return expand


FloatTriple = Annotated[tuple[float, float, float], BeforeValidator(_triple(float))]
IntTriple = Annotated[tuple[int, int, int], BeforeValidator(_triple(int))]


class ResampleSpec(SettingsModel):
    spacing: FloatTriple | None = None
    size: IntTriple | None = None
    align: Annotated[Align, BeforeValidator(_one_of(("centers", "origin")))] = "centers"
    interpolation: Annotated[Interpolation, BeforeValidator(_one_of(("linear", "nearest")))] = "linear"

    @model_validator(mode="after")
    def _one_target(self) -> ResampleSpec:
        if (self.spacing is None) == (self.size is None):
            raise ValueError("needs exactly one of spacing or size")
        return self


class NormaliseSpec(SettingsModel):
    kind: Annotated[NormaliseKind, BeforeValidator(_one_of(("scale", "minmax", "window", "zscore")))]
    divisor: float = 1000.0
    lo: float = -1000.0
    hi: float = 1000.0

    @model_validator(mode="after")
    def _usable(self) -> NormaliseSpec:
        if self.kind == "scale" and self.divisor == 0:
            raise ValueError("divisor must not be 0")
        if self.kind == "window" and not self.lo < self.hi:
            raise ValueError(f"window needs lo < hi, got lo={self.lo:g}, hi={self.hi:g}")
        return self


class CropPadSpec(SettingsModel):
    size: IntTriple
    value: float = 0.0


def _axes(value: Any) -> Any:
    if not isinstance(value, str) or sorted(value) != sorted("zyx"):
        raise ValueError(f"must be a permutation of zyx, got {value!r}")
    return value


class LayoutSpec(SettingsModel):
    axes: Annotated[str, BeforeValidator(_axes)] = "zyx"
    channel: bool = False


def _name(value: Any) -> Any:
    if not isinstance(value, str) or not NAME_RE.match(value):
        raise ValueError(f"must match [a-z0-9_]+, got {value!r}")
    return value


def _clip(value: Any) -> Any:
    ok = isinstance(value, list | tuple) and len(value) == 2
    ok = ok and all(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
    if not ok or float(value[0]) > float(value[1]):
        raise ValueError(f"must be [lo, hi] with lo <= hi, got {value!r}")
    return value


def _none_word(value: Any) -> Any:
    return None if value == "none" else value


class ProfileSpec(SettingsModel):
    """One custom profile of the YAML file (schema in the module docstring)."""

    name: Annotated[str, BeforeValidator(_name)]
    reader: Annotated[Reader, BeforeValidator(_one_of(READERS))] = "nibabel"
    rescale: bool = True
    clip: Annotated[tuple[float, float] | None, BeforeValidator(_clip)] = None
    resample: ResampleSpec | None = None
    normalise: Annotated[NormaliseSpec | None, BeforeValidator(_mapping_of("kind")), BeforeValidator(_none_word)] = None
    crop_pad: CropPadSpec | None = None
    layout: Annotated[LayoutSpec | None, BeforeValidator(_mapping_of("axes"))] = None
    dtype: Annotated[str, BeforeValidator(_one_of(DTYPES))] = "float32"
    description: str = "custom profile"

    def profile(self) -> Profile:
        steps: list[Step] = []
        if self.rescale:
            steps.append(RescaleToHU())
        if self.clip is not None:
            steps.append(Clip(self.clip[0], self.clip[1]))
        if self.resample is not None:
            rs = self.resample
            steps.append(Resample(spacing=rs.spacing, size=rs.size, align=rs.align, interpolation=rs.interpolation))
        if self.normalise is not None:
            norm = self.normalise
            steps.append(Normalise(norm.kind, divisor=norm.divisor, lo=norm.lo, hi=norm.hi))
        if self.crop_pad is not None:
            steps.append(CropPad(self.crop_pad.size, self.crop_pad.value))
        layout = self.layout or LayoutSpec()
        steps.append(Layout(layout.axes, layout.channel))
        return Profile(self.name, tuple(steps), self.reader, self.dtype, self.description)


def profile_from_dict(spec: dict[str, Any], where: str = "profile") -> Profile:
    """One custom profile from its YAML mapping (schema in the module docstring).

    Errors name ``where``, the profile (when its name is valid), the key and the reason:
    ``profiles.yaml: profiles[0] 'lung': resample.spacing: every value must be positive, got [0, 1, 1]``.
    """
    name = spec.get("name")
    if isinstance(name, str) and NAME_RE.match(name):
        where = f"{where} {name!r}"
    return validate(ProfileSpec, spec, where, ProfileError).profile()


def load_profiles_file(path: Path) -> dict[str, Profile]:
    """Custom profiles from a YAML file; errors name the file, the profile, the key and the reason."""
    path = Path(path)
    doc = read_yaml(path, "profiles file", ProfileError, ProfileError)
    items = doc.get("profiles") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise ProfileError(f"{path}: expected a mapping with a 'profiles' list")
    unknown = sorted(str(k) for k in doc if k != "profiles")
    if unknown:
        raise ProfileError(f"{path}: unknown key(s) {', '.join(unknown)}; known: profiles")
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

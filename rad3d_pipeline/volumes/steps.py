"""Volume preprocessing steps: small, named, typed units that a profile chains (MONAI-like).

A :class:`Volume` holds a torch tensor ``(D, H, W)`` (CPU or CUDA) plus a *pending* pointwise
transform ``clip(data * scale + offset, lo, hi)``. The rescale and clip steps only update the
pending transform; the next step that needs values applies it, and the resample step applies
it to the voxels it gathers, so the int16 volume is never copied to float32 whole. Every
step is also exact on its own: chaining steps one by one gives the same values as the fused
path (tested).

Resampling is separable linear (or nearest) interpolation in float32, one output slice at a
time: the two input slices it needs are converted (pending transform applied) and blended,
then the plane is resized, so no intermediate volume exists and the peak is the input, the
output and a few planes. Each axis samples the input at continuous indices, either
``align="centers"`` (torch ``F.interpolate(mode="trilinear", align_corners=False)``: voxel
centres of the old and new grids span the same extent; the plane goes through
``F.interpolate(mode="bilinear")``) or ``align="origin"`` (SimpleITK's resize in the classic
``resize_image_itk`` recipe: same origin, spacing scaled by in/out, so sample ``n`` reads input
index ``n * in / out``). When a centre crop/pad follows, only the voxels that survive the crop
are computed, straight into the interior of the padded output (laid out in the final axis
order), and the crop/pad step only fills the border.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal, Protocol

import numpy as np

from rad3d_pipeline.volumes.version import Rescale

if TYPE_CHECKING:  # torch is imported where a step runs: loading the definitions stays cheap
    import torch

Align = Literal["centers", "origin"]
Interpolation = Literal["linear", "nearest"]
NormaliseKind = Literal["scale", "minmax", "window", "zscore"]
AXES = "zyx"


@dataclass
class Volume:
    """A volume in flight: data, spacing ``(z, y, x)`` mm, and the pending pointwise transform."""

    data: torch.Tensor
    spacing: tuple[float, float, float]
    scale: float = 1.0
    offset: float = 0.0
    clip: tuple[float, float] | None = None
    owned: bool = False  # True when ``data`` may be modified in place
    axes: str = AXES
    channel: bool = False
    rescale_applied: Rescale | None = None
    # When the resample wrote into the padded buffer of a following crop/pad: that buffer and
    # where ``data`` sits in it; the crop/pad step then only fills the border.
    canvas: torch.Tensor | None = None
    canvas_inner: tuple[slice, slice, slice] | None = None

    @property
    def pending(self) -> bool:
        return self.scale != 1.0 or self.offset != 0.0 or self.clip is not None

    def apply_pointwise(self, values: torch.Tensor) -> torch.Tensor:
        """Apply the pending transform in place to a float32 tensor (a copy the caller owns)."""
        if self.scale != 1.0:
            values.mul_(self.scale)
        if self.offset != 0.0:
            values.add_(self.offset)
        if self.clip is not None:
            values.clamp_(self.clip[0], self.clip[1])
        return values

    def materialize(self) -> Volume:
        """float32, owned, nothing pending."""
        import torch

        if self.owned and self.data.dtype == torch.float32 and not self.pending:
            return self
        copy = not self.owned or self.data.dtype != torch.float32
        values = self.data.to(torch.float32, copy=copy)
        return replace(self, data=self.apply_pointwise(values), scale=1.0, offset=0.0, clip=None, owned=True)

    def affine(self, scale: float, offset: float) -> Volume:
        """Compose ``x * scale + offset`` after the pending transform."""
        vol = self.materialize() if self.clip is not None else self
        return replace(vol, scale=vol.scale * scale, offset=vol.offset * scale + offset)


@dataclass(frozen=True)
class StepContext:
    """What a step may need beyond the voxels: the metadata rescale and the rescale decision."""

    slope: float = 1.0
    intercept: float = 0.0
    rescale: Rescale = "none"
    header_scaling: tuple[float, float] | None = None


class Step(Protocol):
    @property
    def name(self) -> str: ...

    def __call__(self, vol: Volume, ctx: StepContext) -> Volume: ...


@dataclass(frozen=True)
class RescaleToHU:
    """HU = slope * stored + intercept, from the metadata (v1) or the header; nothing for v2. Runs once."""

    name: str = field(default="rescale", init=False)

    def __call__(self, vol: Volume, ctx: StepContext) -> Volume:
        if vol.rescale_applied is not None:
            raise RuntimeError(f"rescale to HU already applied ({vol.rescale_applied}); it never runs twice")
        if ctx.rescale == "metadata":
            vol = vol.affine(ctx.slope, ctx.intercept)
        elif ctx.rescale == "header":
            if ctx.header_scaling is None:
                raise ValueError("rescale 'header' without header scaling")
            vol = vol.affine(*ctx.header_scaling)
        return replace(vol, rescale_applied=ctx.rescale)


@dataclass(frozen=True)
class Clip:
    """Clip values to ``[lo, hi]`` (an HU window after the rescale)."""

    lo: float
    hi: float
    name: str = field(default="clip", init=False)

    def __call__(self, vol: Volume, ctx: StepContext) -> Volume:
        if self.lo > self.hi:
            raise ValueError(f"clip: lo {self.lo} > hi {self.hi}")
        lo, hi = (self.lo, self.hi) if vol.clip is None else (max(self.lo, vol.clip[0]), min(self.hi, vol.clip[1]))
        return replace(vol, clip=(lo, max(lo, hi)))


def source_coords(n_in: int, n_out: int, align: Align) -> np.ndarray:
    """Continuous input index sampled by each output index along one axis."""
    ratio = n_in / n_out
    dst = np.arange(n_out, dtype=np.float64)
    if align == "centers":
        return np.maximum((dst + 0.5) * ratio - 0.5, 0.0)
    if align == "origin":
        return dst * ratio
    raise ValueError(f"unknown align {align!r}: use centers or origin")


def _axis_plan(
    coords: np.ndarray, n_in: int, interpolation: Interpolation
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(lower index, upper index, weight of the upper) per output position."""
    if interpolation == "nearest":
        idx = np.minimum(np.floor(coords + 0.5), n_in - 1).astype(np.int64)
        return idx, idx, np.zeros(len(coords))
    i0 = np.minimum(np.floor(coords), n_in - 1).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, coords - i0


@contextmanager
def single_thread(device: torch.device) -> Iterator[None]:
    """Run many small CPU ops on one thread: OpenMP's fork-join costs more than it saves on a plane."""
    import torch

    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _float_slab(vol: Volume, part: torch.Tensor) -> torch.Tensor:
    """A float32 copy of part of the volume's data with the pending transform applied."""
    import torch

    return vol.apply_pointwise(part.to(torch.float32, copy=True))


def _lerp_gather(plane: torch.Tensor, axis: int, plan: tuple[np.ndarray, np.ndarray, np.ndarray]) -> torch.Tensor:
    """Linear (or nearest) interpolation of a 2-D plane along one axis at the planned indices."""
    import torch

    i0, i1, weight = plan
    lo = torch.from_numpy(i0).to(plane.device)
    lower = plane.index_select(axis, lo)
    if not np.any(weight != 0):
        return lower
    upper = plane.index_select(axis, torch.from_numpy(i1).to(plane.device))
    shape = [1, 1]
    shape[axis] = len(i0)
    return lower.lerp_(upper, torch.from_numpy(weight.astype(np.float32)).to(plane.device).view(shape))


def _resample_by_slice(
    vol: Volume,
    z_plan: tuple[np.ndarray, np.ndarray, np.ndarray],
    in_plane: Callable[[torch.Tensor], torch.Tensor] | None,
    target: torch.Tensor,
) -> None:
    """One output slice at a time: lerp two input planes (pending transform applied), then in-plane.

    No intermediate volume is ever allocated: the peak is the input, the output and a few planes.
    """
    import torch

    src = vol.data
    direct = src.dtype == torch.float32 and not vol.pending
    cache: dict[int, torch.Tensor] = {}

    def plane(i: int) -> torch.Tensor:
        if direct:
            return src[i]
        if i not in cache:
            if len(cache) >= 2:
                cache.pop(min(cache))
            cache[i] = _float_slab(vol, src[i])
        return cache[i]

    i0, i1, weight = z_plan
    with single_thread(src.device):
        for k, (a, b, w) in enumerate(zip(i0.tolist(), i1.tolist(), weight.tolist(), strict=True)):
            mixed = plane(a) if (w == 0.0 or a == b) else torch.lerp(plane(a), plane(b), w)
            target[k] = in_plane(mixed) if in_plane is not None else mixed


@dataclass(frozen=True)
class Resample:
    """Resample to a target spacing ``(z, y, x)`` mm or a target size ``(D, H, W)``.

    A target spacing gives ``int(n * current / target)`` voxels per axis (CT-CLIP's rule).
    ``keep`` (set by the profile when a centre crop follows) limits the computation to the
    centre window of that size; with ``canvas`` the window is written into the interior of the
    crop/pad step's buffer. One output slice at a time: two input slices blended along z, then
    the plane resized (``F.interpolate`` bilinear for ``centers``/``linear``, else a gather per axis).
    """

    spacing: tuple[float, float, float] | None = None
    size: tuple[int, int, int] | None = None
    align: Align = "centers"
    interpolation: Interpolation = "linear"
    keep: tuple[int, int, int] | None = None
    canvas: bool = False  # write into the padded buffer of the following crop/pad (set by the profile)
    memory_axes: str = AXES  # memory order of that buffer (the final layout)
    name: str = field(default="resample", init=False)

    def output_size(self, shape: tuple[int, ...], spacing: tuple[float, float, float]) -> tuple[int, int, int]:
        if (self.spacing is None) == (self.size is None):
            raise ValueError("resample: give exactly one of spacing or size")
        if self.size is not None:
            return self.size
        assert self.spacing is not None
        sizes = tuple(max(1, int(n * cur / tgt)) for n, cur, tgt in zip(shape, spacing, self.spacing, strict=True))
        return sizes  # type: ignore[return-value]

    def _window(self, axis: int, n_out: int) -> slice:
        if self.keep is None:
            return slice(0, n_out)
        return _crop_pad_slices(n_out, self.keep[axis])[0]

    def _target(
        self, full: tuple[int, int, int], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor | None, tuple[slice, slice, slice] | None]:
        """Where the resampled voxels go: a new tensor, or the interior of the crop/pad buffer."""
        import torch

        kept = [self._window(axis, n).stop - self._window(axis, n).start for axis, n in enumerate(full)]
        if not self.canvas or self.keep is None:
            return torch.empty(kept, dtype=torch.float32, device=device), None, None
        order = [AXES.index(a) for a in self.memory_axes]
        buffer = torch.empty([self.keep[i] for i in order], dtype=torch.float32, device=device)
        canvas = buffer.permute(*(order.index(i) for i in range(3)))
        (_, bz, _), (_, by, _), (_, bx, _) = (_crop_pad_slices(n, t) for n, t in zip(full, self.keep, strict=True))
        inner = (slice(bz, bz + kept[0]), slice(by, by + kept[1]), slice(bx, bx + kept[2]))
        return canvas[inner], canvas, inner

    def __call__(self, vol: Volume, ctx: StepContext) -> Volume:
        import torch.nn.functional as F

        if vol.axes != AXES or vol.channel:
            raise ValueError("resample must run before layout")
        shape = tuple(int(n) for n in vol.data.shape)
        full = self.output_size(shape, vol.spacing)
        windows = [self._window(axis, n_out) for axis, n_out in enumerate(full)]
        coords = [
            source_coords(n_in, n_out, self.align)[w] for n_in, n_out, w in zip(shape, full, windows, strict=True)
        ]
        changes = [not (len(c) == n and np.array_equal(c, np.arange(n))) for c, n in zip(coords, shape, strict=True)]
        sz, sy, sx = (sp * n / m for sp, n, m in zip(vol.spacing, shape, full, strict=True))
        out_spacing = (sz, sy, sx)
        if not any(changes):
            return replace(vol.materialize(), spacing=out_spacing)
        target, canvas, inner = self._target(full, vol.data.device)
        z_plan = _axis_plan(coords[0], shape[0], self.interpolation)
        if self.align == "centers" and self.interpolation == "linear":
            size, window = (full[1], full[2]), (windows[1], windows[2])

            def in_plane(plane: torch.Tensor) -> torch.Tensor:
                return F.interpolate(plane[None, None], size=size, mode="bilinear", align_corners=False)[0, 0][window]
        else:
            y_plan = _axis_plan(coords[1], shape[1], self.interpolation)
            x_plan = _axis_plan(coords[2], shape[2], self.interpolation)

            def in_plane(plane: torch.Tensor) -> torch.Tensor:
                return _lerp_gather(_lerp_gather(plane, 0, y_plan), 1, x_plan)

        _resample_by_slice(vol, z_plan, in_plane if (changes[1] or changes[2]) else None, target)
        return replace(
            vol,
            data=target,
            scale=1.0,
            offset=0.0,
            clip=None,
            owned=True,
            spacing=out_spacing,
            canvas=canvas,
            canvas_inner=inner,
        )


@dataclass(frozen=True)
class Normalise:
    """``scale``: x / divisor; ``minmax``: to [0, 1]; ``window``: clip to [lo, hi] then to [0, 1];
    ``zscore``: (x - mean) / std."""

    kind: NormaliseKind = "scale"
    divisor: float = 1000.0
    lo: float = -1000.0
    hi: float = 1000.0
    name: str = field(default="normalise", init=False)

    def __call__(self, vol: Volume, ctx: StepContext) -> Volume:
        import torch

        if self.kind == "window":
            vol = Clip(self.lo, self.hi)(vol, ctx).affine(1.0 / (self.hi - self.lo), -self.lo / (self.hi - self.lo))
            return vol.materialize()
        vol = vol.materialize()
        data = vol.data
        if self.kind == "scale":
            if self.divisor == 0:
                raise ValueError("normalise: divisor 0")
            data.div_(self.divisor)
        elif self.kind == "minmax":
            lo, hi = (float(v) for v in torch.aminmax(data))
            data.sub_(lo)
            if hi > lo:
                data.div_(hi - lo)
        elif self.kind == "zscore":
            std, mean = (float(v) for v in torch.std_mean(data))
            data.sub_(mean)
            if std > 0:
                data.div_(std)
        else:
            raise ValueError(f"unknown normalisation {self.kind!r}")
        return vol


def _crop_pad_slices(n: int, target: int) -> tuple[slice, int, int]:
    """CT-CLIP's rule: centre crop (start ``(n - t) // 2``), then pad ``(t - n') // 2`` before, the rest after."""
    start = max((n - target) // 2, 0)
    stop = min(start + target, n)
    kept = stop - start
    before = (target - kept) // 2
    return slice(start, stop), before, target - kept - before


@dataclass(frozen=True)
class CropPad:
    """Centre crop or pad (with ``value``) to ``size`` ``(D, H, W)``."""

    size: tuple[int, int, int]
    value: float = -1.0
    memory_axes: str = AXES  # set by the profile to the following layout: the padded buffer is laid out in it
    name: str = field(default="crop_pad", init=False)

    def __call__(self, vol: Volume, ctx: StepContext) -> Volume:
        import torch

        if vol.axes != AXES or vol.channel:
            raise ValueError("crop_pad must run before layout")
        if vol.canvas is not None and vol.canvas_inner is not None and tuple(vol.canvas.shape) == self.size:
            return self._fill_border(vol)
        plans = [_crop_pad_slices(n, t) for n, t in zip(vol.data.shape, self.size, strict=True)]
        region = tuple(p[0] for p in plans)
        cropped = replace(vol, data=vol.data[region]).materialize()
        if all(p[1] == 0 and p[2] == 0 for p in plans):
            return cropped
        # Allocated in the final layout's memory order, so the layout step needs no copy.
        order = [AXES.index(a) for a in self.memory_axes]
        buffer = torch.full(
            [self.size[i] for i in order], float(self.value), dtype=torch.float32, device=vol.data.device
        )
        out = buffer.permute(*(order.index(i) for i in range(3)))
        inner = tuple(slice(b, t - a) for (_, b, a), t in zip(plans, self.size, strict=True))
        out[inner] = cropped.data
        return replace(cropped, data=out, owned=True)

    def _fill_border(self, vol: Volume) -> Volume:
        """The resample already wrote the interior of this step's buffer: pad value on the border only."""
        vol = vol.materialize()  # applies anything pending to the interior, in place
        assert vol.canvas is not None and vol.canvas_inner is not None
        for axis, inner in enumerate(vol.canvas_inner):
            for part in (slice(0, inner.start), slice(inner.stop, self.size[axis])):
                if part.stop > part.start:
                    index = [slice(None)] * 3
                    index[axis] = part
                    vol.canvas[tuple(index)] = float(self.value)
        return replace(vol, data=vol.canvas, canvas=None, canvas_inner=None)


@dataclass(frozen=True)
class Layout:
    """Order the axes (a permutation of ``zyx``) and optionally add a leading channel axis."""

    axes: str = AXES
    channel: bool = False
    name: str = field(default="layout", init=False)

    def __call__(self, vol: Volume, ctx: StepContext) -> Volume:
        if sorted(self.axes) != sorted(AXES):
            raise ValueError(f"layout {self.axes!r}: a permutation of {AXES!r}")
        vol = vol.materialize()
        data = vol.data.permute(*(vol.axes.index(a) for a in self.axes))
        if self.channel:
            data = data.unsqueeze(0)
        spacing = tuple(vol.spacing[AXES.index(a)] for a in self.axes)
        return replace(vol, data=data, axes=self.axes, channel=self.channel, spacing=spacing)  # type: ignore[arg-type]


def run_steps(vol: Volume, steps: list[Step], ctx: StepContext) -> Volume:
    for step in steps:
        vol = step(vol, ctx)
    return vol.materialize()


def volume_from_array(array: np.ndarray, spacing: tuple[float, float, float], device: str = "cpu") -> Volume:
    """Wrap a ``(D, H, W)`` array (no copy on the CPU)."""
    import torch

    if array.ndim != 3:
        raise ValueError(f"expected a (D, H, W) array, got shape {array.shape}")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # a read-only buffer: steps never write to unowned data
        tensor = torch.from_numpy(np.ascontiguousarray(array))
    if device != "cpu":
        tensor = tensor.to(device)
    return Volume(tensor, spacing, owned=False)


def float32_bytes(shape: tuple[int, ...]) -> int:
    return 4 * math.prod(shape)

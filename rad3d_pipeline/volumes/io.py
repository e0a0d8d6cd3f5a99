"""Reading CT volumes (NIfTI, with nibabel or SimpleITK) into one axis order, and atomic .npy writes.

Axis order. Every reader returns the stored voxels as ``(D, H, W)`` = ``(k, j, i)``: the
NIfTI voxel axes reversed, which is exactly what ``SimpleITK.GetArrayFromImage`` returns
and what nibabel's Fortran-ordered array is after ``.T`` (a view, no copy). Nothing is
reoriented to RAS or LPS: the models' own loaders (CT-CLIP's nibabel code, M3D's
SimpleITK code) work in stored voxel order too. A profile's ``layout`` step then orders
the axes the way its model expects (CT-CLIP's loader puts the NIfTI i axis first in plane).

The default reader inflates the whole .nii.gz in one call (ISA-L's ``isal`` when installed,
2-3x faster than zlib, else zlib) and lets nibabel parse the header; the voxels are a view
of the inflated buffer. Stored values come back unscaled (int16 for CT-RATE). When the NIfTI header carries a
non-trivial ``scl_slope``/``scl_inter``, it is returned as ``header_scaling`` and applied
by the rescale step, never together with the metadata CSV's slope and intercept.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import math
import os
import stat
import uuid
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

Reader = Literal["nibabel", "sitk"]
READERS: tuple[Reader, ...] = ("nibabel", "sitk")


class BadVolume(Exception):
    """A volume that cannot be processed; the message is the quarantine reason."""


_FILE_KINDS: tuple[tuple[Any, str], ...] = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def file_kind(mode: int) -> str:
    """What a non-regular file is, in words (``a directory``, ``a FIFO (named pipe)``...)."""
    return next((words for test, words in _FILE_KINDS if test(mode)), "not a regular file")


def os_error_reason(path: Path, exc: OSError) -> str:
    """The quarantine reason for an OS error met while reading ``path``: missing, dangling link, permission..."""
    if isinstance(exc, FileNotFoundError):
        if os.path.islink(path):
            try:
                target = os.readlink(path)
            except OSError:
                target = "?"
            return f"dangling symbolic link (points to {target}, which does not exist)"
        return "file not found (listed, but gone when it was read)"
    if isinstance(exc, PermissionError):
        return "permission denied"
    if isinstance(exc, IsADirectoryError):
        return "a directory, not a volume file"
    words = exc.strerror or str(exc)
    return f"unreadable ({type(exc).__name__}: {words})"


def open_regular_file(path: Path) -> int:
    """Open ``path`` for reading and return the descriptor, or raise :class:`BadVolume` with the reason.

    Opened non-blocking so that a FIFO in place of a volume is refused instead of waiting forever
    for a writer; the file type is checked on the open descriptor (no race with a swap after a check).
    """
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise BadVolume(os_error_reason(path, exc)) from exc
    try:
        mode = os.fstat(fd).st_mode
        if not stat.S_ISREG(mode):
            raise BadVolume(f"{file_kind(mode)}, not a volume file")
    except BaseException:
        os.close(fd)
        raise
    return fd


def read_file_bytes(path: Path) -> bytes:
    """The whole file, or :class:`BadVolume` naming what went wrong (missing, dangling link, permission, I/O)."""
    fd = open_regular_file(path)
    try:
        with os.fdopen(fd, "rb", closefd=True) as handle:
            return handle.read()
    except OSError as exc:
        raise BadVolume(os_error_reason(path, exc)) from exc


@dataclass(frozen=True)
class RawVolume:
    """Stored voxels ``(D, H, W)`` in their own dtype, the header's spacing ``(z, y, x)`` and scaling."""

    data: npt.NDArray[Any]
    header_spacing: tuple[float, float, float]
    header_scaling: tuple[float, float] | None  # (slope, intercept) from the NIfTI header, None when trivial


def _scaling(slope: float, inter: float) -> tuple[float, float] | None:
    slope = 1.0 if not math.isfinite(slope) or slope == 0 else slope
    inter = 0.0 if not math.isfinite(inter) else inter
    return None if (slope, inter) == (1.0, 0.0) else (slope, inter)


def _check_shape(shape: tuple[int, ...]) -> tuple[int, ...]:
    dims = list(shape)
    while len(dims) > 3 and dims[-1] == 1:  # (x, y, z, 1) is a 3-D volume
        dims.pop()
    if len(dims) == 4:
        raise BadVolume(f"4-D data (shape {tuple(shape)}), expected a 3-D volume")
    if len(dims) != 3:
        raise BadVolume(f"{len(dims)}-D data (shape {tuple(shape)}), expected a 3-D volume")
    if min(dims) < 2:
        raise BadVolume(f"degenerate 3-D shape {tuple(shape)}: every axis needs at least 2 voxels")
    return tuple(dims)


def _inflate(path: Path, blob: bytes) -> bytes:
    """Whole-buffer gzip decompression: ISA-L (``isal``) when installed, else zlib."""
    if blob[:2] != b"\x1f\x8b":
        raise BadVolume(f"not gzip-compressed (starts with {blob[:4]!r}) although named {path.name}")
    inflate_lib: Any
    try:
        from isal import isal_zlib as inflate_lib
    except ImportError:
        inflate_lib = zlib
    # The gzip trailer's ISIZE (size mod 2**32) sizes the output buffer: one allocation, no regrowth.
    size_hint = int.from_bytes(blob[-4:], "little") or len(blob) * 2
    try:
        raw = bytes(inflate_lib.decompress(blob, 31, size_hint))
        if len(raw) % 2**32 == int.from_bytes(blob[-4:], "little"):
            return raw
        # A multi-member gzip (bgzip, concatenated streams): one-shot decompress stops after the
        # first member, whose size differs from the last member's ISIZE. Inflate member by member.
        parts, rest = [], blob
        while rest[:2] == b"\x1f\x8b":
            member = inflate_lib.decompressobj(31)
            parts.append(member.decompress(rest))
            if not member.eof:
                raise BadVolume("truncated gzip (the last member ends early)")
            rest = member.unused_data
        return b"".join(parts)
    except BadVolume:
        raise
    except Exception as exc:  # zlib.error, isal's IsalError: truncated or corrupt stream
        raise BadVolume(f"truncated or corrupt gzip ({type(exc).__name__}: {exc})") from exc


def _nifti_header(raw: bytes) -> Any:
    nib: Any = importlib.import_module("nibabel")

    if len(raw) < 348:
        raise BadVolume(f"not a NIfTI file: {len(raw)} bytes, shorter than a NIfTI-1 header")
    sizeof = int.from_bytes(raw[:4], "little")
    if sizeof not in (348, 540):
        sizeof = int.from_bytes(raw[:4], "big")
    klass = {348: nib.Nifti1Header, 540: nib.Nifti2Header}.get(sizeof)
    if klass is None:
        raise BadVolume("not a NIfTI file (header size field is neither 348 nor 540)")
    header = klass.from_fileobj(io.BytesIO(raw[:sizeof]), check=False)
    if bytes(header["magic"]).rstrip(b"\x00") not in (b"n+1", b"n+2", b"ni1", b"ni2"):
        raise BadVolume(f"not a NIfTI file (magic {bytes(header['magic'])!r})")
    return header


def read_nibabel(path: Path) -> RawVolume:
    """nibabel parses the header; the voxels come from one whole-buffer inflate (no copy after it)."""
    blob = read_file_bytes(path)
    try:
        raw = _inflate(path, blob) if path.name.endswith(".gz") else blob
        del blob
    except BadVolume:
        raise
    except (OSError, EOFError, zlib.error) as exc:
        raise BadVolume(f"truncated or corrupt gzip ({type(exc).__name__}: {exc})") from exc
    except Exception as exc:  # isal raises its own error types for corrupt streams
        raise BadVolume(f"corrupt gzip ({type(exc).__name__}: {exc})") from exc
    header = _nifti_header(raw)
    try:
        shape = _check_shape(tuple(int(n) for n in header.get_data_shape()))
        dtype = header.get_data_dtype()
        offset = int(header.get_data_offset())
        zooms = tuple(float(z) for z in header.get_zooms()[:3])
        slope, inter = header.get_slope_inter()
    except BadVolume:
        raise
    except Exception as exc:
        raise BadVolume(f"unusable NIfTI header ({type(exc).__name__}: {exc})") from exc
    count = math.prod(shape)
    if len(raw) < offset + count * dtype.itemsize:
        raise BadVolume(f"truncated NIfTI: {len(raw)} bytes, the header promises {offset + count * dtype.itemsize}")
    data = np.frombuffer(raw, dtype=dtype, count=count, offset=offset).reshape(shape, order="F").T
    if not data.dtype.isnative:
        data = data.astype(data.dtype.newbyteorder("="))
    scaling = _scaling(float(slope) if slope is not None else 1.0, float(inter) if inter is not None else 0.0)
    return RawVolume(data, (zooms[2], zooms[1], zooms[0]), scaling)


def header_scaling(path: Path) -> tuple[float, float] | None:
    """The NIfTI header's own ``scl_slope``/``scl_inter`` (a header-only read), None when it has none.

    SimpleITK applies them while reading and does not say so: a profile that reads with SimpleITK
    alone asks here, so that the metadata rescale never runs on top of the header's.
    """
    nib: Any = importlib.import_module("nibabel")
    try:
        # nibabel moves the header's scaling into the array proxy (the loaded header reads None).
        proxy = nib.load(str(path)).dataobj
        slope, inter = getattr(proxy, "slope", 1.0), getattr(proxy, "inter", 0.0)
    except Exception as exc:
        raise BadVolume(f"unusable NIfTI header ({type(exc).__name__}: {exc})") from exc
    return _scaling(float(slope) if slope is not None else 1.0, float(inter) if inter is not None else 0.0)


def read_sitk(path: Path) -> RawVolume:
    sitk: Any = importlib.import_module("SimpleITK")
    try:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        size = reader.GetSize()
        _check_shape(tuple(int(n) for n in size))
        image = reader.Execute()
        data = sitk.GetArrayFromImage(image)
        spacing = image.GetSpacing()
    except BadVolume:
        raise
    except Exception as exc:
        raise BadVolume(f"unreadable NIfTI ({type(exc).__name__}: {exc})") from exc
    if data.ndim > 3:
        data = data.reshape(data.shape[-3:]) if math.prod(data.shape[:-3]) == 1 else data
    if data.ndim != 3:
        raise BadVolume(f"{data.ndim}-D data (shape {data.shape}), expected a 3-D volume")
    # SimpleITK applies header scaling itself (the array comes back as float then).
    return RawVolume(data, (float(spacing[2]), float(spacing[1]), float(spacing[0])), None)


def read_volume(path: Path, reader: Reader = "nibabel") -> RawVolume:
    """Read one volume; raise :class:`BadVolume` with the reason when it cannot be used."""
    if reader not in READERS:
        raise ValueError(f"unknown reader {reader!r}: use one of {', '.join(READERS)}")
    if reader == "sitk":  # SimpleITK opens the file itself: refuse what it would fail on or block on first
        os.close(open_regular_file(path))
    raw = read_nibabel(path) if reader == "nibabel" else read_sitk(path)
    return raw


def save_npy_atomic(array: npt.NDArray[Any], path: Path) -> str:
    """Write ``array`` as .npy through a temporary file and a rename; return the file's sha256.

    The data goes straight from the array's buffer to the file and to the hash (no copy).
    """
    data = np.ascontiguousarray(array)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    try:
        with tmp.open("wb") as handle:
            np.lib.format.write_array(handle, data, allow_pickle=False)
        with tmp.open("rb") as handle:
            digest = hashlib.sha256(handle.read(tmp.stat().st_size - data.nbytes))  # the .npy header
        digest.update(data.data.cast("B"))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return digest.hexdigest()


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()

"""Peak memory of a piece of work, measured from the operating system (numpy, torch and C libraries alike).

Freed heap memory is first handed back to the OS (glibc ``malloc_trim``), so that memory
an allocator kept from the previous volume does not hide this one's use. On Linux the
kernel's high-water mark of the resident set (``VmHWM``) is reset by writing
``5`` to ``/proc/self/clear_refs``; the peak of a block is then ``VmHWM - VmRSS`` at its start.
Elsewhere (or when the reset is not permitted) only growth of the process-lifetime
``ru_maxrss`` is seen, a lower bound; ``exact`` says which one was measured.
"""

from __future__ import annotations

import contextlib
import ctypes
import resource
import sys
from pathlib import Path
from types import TracebackType

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")


def _status_kb(field: str) -> int | None:
    try:
        for line in _STATUS.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        return None
    return None


def _reset_peak() -> bool:
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return True


def release_free_memory() -> None:
    """Hand freed heap memory back to the OS (glibc ``malloc_trim``), so RSS is an honest baseline."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _maxrss_kb() -> int:
    value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return value // 1024 if sys.platform == "darwin" else value


class PeakMemory:
    """``with PeakMemory() as peak: ...`` then ``peak.bytes``: the block's peak above its starting RSS."""

    def __init__(self) -> None:
        self.bytes = 0
        self.exact = False
        self._base_kb = 0

    def __enter__(self) -> PeakMemory:
        release_free_memory()
        rss = _status_kb("VmRSS")
        self.exact = rss is not None and _reset_peak()
        self._base_kb = rss if self.exact and rss is not None else _maxrss_kb()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        peak = _status_kb("VmHWM") if self.exact else None
        if peak is None:
            peak = _maxrss_kb()
        self.bytes = max(0, peak - self._base_kb) * 1024

    @property
    def mb(self) -> float:
        return self.bytes / 2**20

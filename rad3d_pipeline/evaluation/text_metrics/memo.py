"""What every text metric shares: per-text memo caches, counting in C, the collector pause, numpy's mean.

Nothing here imports a metric library or numpy: the spatial protocol's whole path stays quick to start.
"""

from __future__ import annotations

import functools
import gc
from collections import _count_elements  # type: ignore[attr-defined]  # stdlib C helper behind Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

V = TypeVar("V")
_MISSING: Any = object()
_CLEARERS: list[Callable[[], None]] = []


def on_clear(clear: Callable[[], None]) -> Callable[[], None]:
    """Register ``clear`` to run on :func:`clear_caches` (returns it, so it can decorate)."""
    _CLEARERS.append(clear)
    return clear


def clear_caches() -> None:
    """Forget every memoised text, word, stem and synonym set, and stop the worker pools.

    Values never depend on the caches; this gives their memory back and lets a benchmark time
    a cold run again in the same process.
    """
    for clear in list(_CLEARERS):
        clear()


def per_text(fn: Callable[[str], V], maxsize: int = 1 << 16, max_chars: int = 4_000_000) -> Callable[[str], V]:
    """``fn`` memoised per text in a plain dict, emptied when it holds ``maxsize`` texts or ``max_chars`` characters.

    ``functools.lru_cache`` links its entries in objects the cyclic garbage collector tracks;
    tens of thousands of them make the collector's full passes (which also walk the large
    WordNet index a METEOR process may hold) cost a fifth of the scoring time. A dict of strings
    to the untracked tuples and dicts kept here gives the collector nothing to walk.
    :func:`clear_caches` gives the memory back.
    """
    cache: dict[str, V] = {}
    chars = [0]

    @on_clear
    def clear() -> None:
        cache.clear()
        chars[0] = 0

    def cached(text: str) -> V:
        value = cache.get(text, _MISSING)
        if value is _MISSING:
            if len(cache) >= maxsize or chars[0] >= max_chars:
                clear()
            value = cache[text] = fn(text)
            chars[0] += len(text)
        return value  # type: ignore[no-any-return]

    cached.cache_clear = clear  # type: ignore[attr-defined]
    return functools.wraps(fn)(cached)


@contextmanager
def gc_paused() -> Iterator[None]:
    """Pause the cyclic garbage collector around a scoring loop (restored afterwards).

    The loops allocate many short-lived counters and tuples but create no reference cycles,
    so reference counting frees them all; the collector's passes would only rescan the
    long-lived objects a process holds.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def count(keys: Iterable[Any]) -> dict[Any, int]:
    """A plain dict of counts, counted in C as ``collections.Counter`` counts (``_count_elements``, stdlib)."""
    counts: dict[Any, int] = {}
    _count_elements(counts, keys)
    return counts


def ngram_keys(tokens: Sequence[str], n: int) -> Iterator[str]:
    """The ``n``-token windows of ``tokens``, each joined by a space."""
    return map(" ".join, zip(*(tokens[k:] for k in range(n)), strict=False))


def common_runs(tokens: Sequence[str], common: set[str] | frozenset[str], min_length: int = 2) -> list[Sequence[str]]:
    """The maximal stretches of ``tokens`` whose every token is in ``common``, at least ``min_length`` long.

    Every n-gram two texts share lies inside such a stretch in each of them (its tokens occur in both),
    and each of its occurrences in a text lies inside one: n-gram matches can be counted on these alone.
    """
    runs: list[Sequence[str]] = []
    start = -1
    for i, token in enumerate(tokens):
        if token in common:
            if start < 0:
                start = i
        elif start >= 0:
            if i - start >= min_length:
                runs.append(tokens[start:i])
            start = -1
    if start >= 0 and len(tokens) - start >= min_length:
        runs.append(tokens[start:])
    return runs


def ngram_counts(runs: list[Sequence[str]], n: int) -> dict[tuple[str, ...], int]:
    """Counts of every ``n``-gram (a tuple of tokens) inside ``runs``, counted in C."""
    counts: dict[tuple[str, ...], int] = {}
    for run in runs:
        if len(run) >= n:
            _count_elements(counts, zip(*[run[k:] for k in range(n)], strict=False))
    return counts


def clipped_matches(hyp_runs: list[Sequence[str]], ref_runs: list[Sequence[str]], n: int) -> int:
    """Σ over the ``n``-grams of both (only those inside the runs) of min(count in hyp, count in ref)."""
    hyp = ngram_counts(hyp_runs, n)
    if not hyp:
        return 0
    ref = ngram_counts(ref_runs, n)
    return sum([min(hyp[g], ref[g]) for g in hyp.keys() & ref.keys()])


# --------------------------------------------------------------------------- numpy's float64 mean, bit for bit

_PAIRWISE_BLOCK = 128  # numpy's PW_BLOCKSIZE


def _pairwise_sum(values: Sequence[float], lo: int, n: int) -> float:
    """numpy's ``pairwise_sum`` for float64 (``loops_utils.h``): same additions in the same order."""
    if n < 8:
        total = -0.0
        for i in range(lo, lo + n):
            total += values[i]
        return total
    if n <= _PAIRWISE_BLOCK:
        r0, r1, r2, r3, r4, r5, r6, r7 = values[lo : lo + 8]
        end = lo + n - n % 8
        for b in range(lo + 8, end, 8):
            r0 += values[b]
            r1 += values[b + 1]
            r2 += values[b + 2]
            r3 += values[b + 3]
            r4 += values[b + 4]
            r5 += values[b + 5]
            r6 += values[b + 6]
            r7 += values[b + 7]
        total = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
        for i in range(end, lo + n):
            total += values[i]
        return total
    half = n // 2
    half -= half % 8
    return _pairwise_sum(values, lo, half) + _pairwise_sum(values, lo + half, n - half)


def numpy_mean(values: Sequence[float]) -> float:
    """``float(numpy.mean(numpy.asarray(values, dtype=float64)))`` without numpy; 0.0 when empty.

    numpy sums a contiguous float64 array by pairwise summation (blocks of 128 with eight
    accumulators) starting from its identity 0.0, then divides by the count; the benchmark's
    published means are that sum, so it is reproduced here operation for operation (checked
    against numpy in ``tests/test_text_metrics.py``). Importing numpy costs about 0.1 s per process.
    """
    n = len(values)
    if not n:
        return 0.0
    return (0.0 + _pairwise_sum(values, 0, n)) / n

"""Scoring many pairs: identical pairs once, the distinct ones spread over a kept pool of worker processes.

``multiprocessing`` and ``concurrent.futures`` are imported only when a pool is started, so a process that
scores in one process (a small file, ``workers=1``) never pays for them.
"""

from __future__ import annotations

import gc
import os
from collections.abc import Sequence
from itertools import repeat
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from rad3d_pipeline.evaluation.text_metrics.memo import on_clear
from rad3d_pipeline.evaluation.text_metrics.meteor_score import nltk_wordnet, wordnet_synonyms
from rad3d_pipeline.evaluation.text_metrics.pairs import Pair, score_chunk

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

Protocol = Literal["spatial", "3drad"]
# Fewer distinct pairs than this are scored in the calling process: starting workers would cost more.
MIN_PARALLEL = 64


def init_worker(nltk_data: str) -> None:
    from rad3d_pipeline.evaluation.text_metrics.wordnet_setup import ensure_wordnet

    ensure_wordnet(Path(nltk_data))
    if nltk_wordnet.cache_info().currsize:
        # A forked worker inherits the parent's open WordNet data files, and with them their shared
        # file offsets: concurrent seeks from several workers would read garbage. Each worker opens
        # its own handles instead.
        reader = nltk_wordnet()
        reader._data_file_map = {}
    # Everything a forked worker inherits lives as long as the worker: moved out of the collector's
    # sight, a full collection no longer walks it. The worker runs nothing but these scorers.
    gc.freeze()


WORKER_POOLS: dict[int, ProcessPoolExecutor] = {}
# A process forked from one that holds a pool cannot use that pool (its workers belong to the
# parent): the child starts its own on first use.
os.register_at_fork(after_in_child=WORKER_POOLS.clear)


def worker_pool(workers: int) -> ProcessPoolExecutor:
    """The process's pool of ``workers`` scoring processes, started once and kept.

    Kept across calls, the workers keep their per-text caches (tokens, stems, synonyms), so the
    answers several models' files share are processed once per worker, not once per file.
    The synonym table is opened in the parent first, so forked workers inherit it; they only run
    these scorers, never torch, so forking a process that has loaded torch is safe here.
    Platforms without fork spawn workers that load WordNet themselves.
    """
    pool = WORKER_POOLS.get(workers)
    if pool is None:
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        from rad3d_pipeline.evaluation.text_metrics.wordnet_setup import ensure_wordnet

        nltk_root = ensure_wordnet()
        method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
        if method == "fork":
            wordnet_synonyms()  # a memory map: forked workers share it
        pool = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context(method),
            initializer=init_worker,
            initargs=(str(nltk_root),),
        )
        WORKER_POOLS[workers] = pool
    return pool


def discard_worker_pool(workers: int, wait: bool = False) -> None:
    pool = WORKER_POOLS.pop(workers, None)
    if pool is not None:
        pool.shutdown(wait=wait, cancel_futures=True)


@on_clear
def discard_worker_pools() -> None:
    for workers in list(WORKER_POOLS):
        discard_worker_pool(workers, wait=True)


def _chunks(items: Sequence[Pair], n: int) -> list[Sequence[Pair]]:
    size = max(1, -(-len(items) // n))
    return [items[i : i + size] for i in range(0, len(items), size)]


def score_pairs(
    protocol: Protocol, pairs: Sequence[Pair], *, workers: int = 1, cache: bool = True
) -> list[tuple[float, ...]]:
    """Per-pair scores in input order: spatial -> (rouge1, rouge2, rougeL, meteor); 3drad -> (bleu1, rouge1, meteor).

    With ``cache`` identical pairs are scored once. ``workers > 1`` spreads the distinct
    pairs over a process pool (fork where available); results do not depend on either setting.
    """
    if protocol not in ("spatial", "3drad"):
        raise ValueError(f"unknown protocol {protocol!r}; expected one of ['3drad', 'spatial']")
    return score_all(protocol, pairs, workers=workers, cache=cache)


def score_all(scorer: str, pairs: Sequence[Pair], *, workers: int, cache: bool) -> list[tuple[float, ...]]:
    """:func:`score_pairs` with any key of :data:`rad3d_pipeline.evaluation.text_metrics.pairs.PAIR_SCORERS`."""
    todo: Sequence[Pair] = list(dict.fromkeys(pairs)) if cache else list(pairs)
    if workers > 1 and len(todo) >= MIN_PARALLEL:
        from concurrent.futures.process import BrokenProcessPool

        chunks = _chunks(todo, workers * 16)
        try:
            pool = worker_pool(workers)
            results = [s for chunk in pool.map(score_chunk, repeat(scorer), chunks, repeat(cache)) for s in chunk]
        except BrokenProcessPool:  # a worker died (e.g. killed): start a fresh pool once
            discard_worker_pool(workers)
            pool = worker_pool(workers)
            results = [s for chunk in pool.map(score_chunk, repeat(scorer), chunks, repeat(cache)) for s in chunk]
    else:
        results = score_chunk(scorer, todo, cache)
    if not cache:
        return results
    by_pair = dict(zip(todo, results, strict=True))
    return [by_pair[pair] for pair in pairs]

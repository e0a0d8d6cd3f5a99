"""Content versions of tables: a hash of what a table holds, the same in every run and process.

A table's version covers its column names and order, each column's dtype, its row count and every
value in row order; nothing else (not the index, the object identities, Python's per-process
``hash()`` seed, the library that later writes the file, or the time). Scalar columns are hashed
with pandas' own stable row hashes (``pandas.util.hash_pandas_object``, SipHash with a fixed key);
a column holding lists, arrays, dicts or mixed types is hashed through a canonical JSON text of each
value, so a list and the NumPy array Parquet reads it back as are the same content.

Used as the Dagster data version of every table (``resources/parquet_io.py``): an identical rebuild
keeps the version, any changed value changes it.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

# Bump when the hashing below changes: every table then gets a new version once (a deliberate rebuild).
SCHEME = "rad3d-content-1"
VERSION_CHARS = 24  # 96 bits, as the CT-RATE source versions (assets/automation.py)

_STRING_KINDS = {"string", "empty"}


def _jsonable(value: Any) -> Any:
    """A value as JSON-ready Python: arrays and tuples as lists, NumPy scalars as Python ones, dict keys as text."""
    if isinstance(value, np.ndarray | list | tuple):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, set | frozenset):  # no order of its own (and Python's differs per process): sorted
        return {"set": sorted((_jsonable(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))}
    if isinstance(value, np.generic):
        return _jsonable(value.item())
    if isinstance(value, bytes):
        return {"bytes": value.hex()}
    if isinstance(value, float) and math.isnan(value):
        return None  # NaN and None are one "missing", as Parquet stores them
    if value is pd.NaT or value is pd.NA:
        return None
    if isinstance(value, pd.Timestamp | pd.Timedelta):
        return {type(value).__name__: value.isoformat()}
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return {type(value).__name__: str(value)}


def canonical_text(value: Any) -> str | None:
    """One value's canonical text (``None`` when missing): JSON with sorted keys, typed (``1`` is not ``"1"``)."""
    plain = _jsonable(value)
    if plain is None:
        return None
    return json.dumps(plain, sort_keys=True, ensure_ascii=False, allow_nan=True, separators=(",", ":"))


def _column_hashes(column: pd.Series) -> np.ndarray:
    """One unsigned 64-bit hash per row of ``column``, independent of the index."""
    if column.dtype == object and pd.api.types.infer_dtype(column, skipna=True) not in _STRING_KINDS:
        column = column.map(canonical_text).astype(object)
    try:
        hashes = pd.util.hash_pandas_object(column, index=False)
    except (TypeError, ValueError, NotImplementedError):  # e.g. an Arrow-backed list column: hash its values' text
        hashes = pd.util.hash_pandas_object(column.astype(object).map(canonical_text).astype(object), index=False)
    return np.ascontiguousarray(hashes.to_numpy(dtype=np.uint64).astype("<u8"))


def frame_version(frame: pd.DataFrame) -> str:
    """The content version of one table (hex, :data:`VERSION_CHARS` characters)."""
    digest = hashlib.sha256()
    digest.update(f"{SCHEME}\nrows={len(frame)}\ncolumns={len(frame.columns)}\n".encode())
    for position, name in enumerate(frame.columns):
        column = frame.iloc[:, position]
        digest.update(f"{json.dumps(str(name))}:{column.dtype}\n".encode())
        if len(frame):
            digest.update(_column_hashes(column).tobytes())
    return digest.hexdigest()[:VERSION_CHARS]


def combined_version(versions: Mapping[str, str]) -> str:
    """One version for several partitions' versions (sorted by partition key, whatever order they came in): it
    changes when any of them does."""
    digest = hashlib.sha256(f"{SCHEME}\npartitions={len(versions)}\n".encode())
    for key in sorted(versions):
        digest.update(f"{key}\t{versions[key]}\n".encode())
    return digest.hexdigest()[:VERSION_CHARS]


@dataclass(frozen=True)
class Recorded:
    """What a partition's latest materialization recorded: its content version and its data version."""

    content_version: str | None
    data_version: str | None


def output_data_version(current: Mapping[str, str], recorded: Mapping[str, Recorded | None]) -> str:
    """The one data version a run gives every partition it wrote (Dagster records one per step output).

    ``current`` maps each partition of the run to its content version, ``recorded`` to what
    its latest materialization recorded. When every partition's content is what it was and they all carried
    one data version, that version stays (a partition rebuilt alone after a range run, or a range rebuilt
    as it was): nothing downstream turns stale. Otherwise a new one: the partition's own content version
    for a run of one partition, else the range's. A data version therefore always stands for one content
    of each partition that carries it: it is kept only for the very content it was given to.
    """
    keys = list(current)
    if not keys:
        raise ValueError("output_data_version: a run writes at least one partition")
    kept = [_kept(recorded.get(key), current[key]) for key in keys]
    if kept[0] is not None and all(version == kept[0] for version in kept):
        return kept[0]
    return current[keys[0]] if len(keys) == 1 else combined_version(current)


def _kept(recorded: Recorded | None, content_version: str) -> str | None:
    """The recorded data version when it was given to this very content, else ``None``."""
    if recorded is None or recorded.content_version != content_version:
        return None
    return recorded.data_version

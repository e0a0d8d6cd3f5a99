"""Writing one Parquet file atomically (a temporary file and a rename): the IO manager's tables and the
core's own side files."""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq


def write_parquet_atomic(frame: pd.DataFrame, path: Path, schema: pa.Schema | None = None) -> None:
    """Write ``frame`` to ``path`` via a temporary file in the same folder and a rename; ``schema`` fixes
    the column types (for frames whose rows cannot tell them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{uuid.uuid4().hex[:8]}")
    if schema is None:
        frame.to_parquet(tmp, index=False)
    else:
        pq.write_table(pa.Table.from_pandas(frame, schema=schema, preserve_index=False), tmp)
    os.replace(tmp, path)

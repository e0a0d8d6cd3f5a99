"""Reading tables that come from other tools (JSONL, CSV, Parquet), with errors that name file and line."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pandas as pd


def read_table_file(
    path: Path, suffixes: tuple[str, ...] = (".jsonl", ".csv", ".parquet"), error: type[ValueError] = ValueError
) -> pd.DataFrame:
    """The rows of ``path`` as strings as written: JSONL (one object a line, blank lines skipped), CSV or Parquet.

    A line that is not a JSON object, or a suffix outside ``suffixes``, raises ``error`` naming the file
    (and the line).
    """
    if path.suffix not in suffixes:
        raise error(f"{path}: use {', '.join(suffixes)}")
    if path.suffix == ".csv":
        return pd.read_csv(path, dtype=str, keep_default_na=False)
    if path.suffix == ".parquet":
        return pd.read_parquet(path)
    return pd.DataFrame.from_records(read_jsonl_records(path, error))


def read_jsonl_records(path: Path, error: type[ValueError] = ValueError) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, one a line, blank lines skipped; ``error`` names the file and line.

    Lines end at a newline only (as the companion benchmark reads them), not at the other
    characters ``str.splitlines`` breaks at, such as U+2028 written unescaped inside a string.
    """
    lines = path.read_text(encoding="utf-8").split("\n")  # read_text turns \r\n and \r into \n
    try:  # every line parsed on its own, in C; on any problem the loop below names the line
        records = list(map(json.loads, filter(str.strip, lines)))
        if all(type(record) is dict for record in records):
            return records
    except json.JSONDecodeError:
        pass
    records = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise error(f"{path}: line {number}: not JSON ({exc})") from None
        if not isinstance(record, dict):
            raise error(f"{path}: line {number}: expected a JSON object")
        records.append(record)
    return records

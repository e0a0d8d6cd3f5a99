"""Reading tables that come from other tools (JSONL, CSV, Parquet), with errors that name file and line.

Files are read the way real exports arrive: UTF-8 with or without a byte-order mark (Excel's
"CSV UTF-8"), ``\\r\\n`` or ``\\n`` line ends, blank lines between JSONL records. What cannot be read as
it stands stops with one line naming the file and the place: bytes that are not UTF-8 (line and byte
offset), an empty file, a CSV with a header and no rows, a CSV row with more or fewer fields than the
header (a cut-off last line), a JSONL line that is not one JSON object. Line numbers are physical
lines of the file, 1-based; a Parquet row is ``row N`` (1-based).
"""

from __future__ import annotations

import codecs
import csv
import io
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class TableRows:
    """The rows of a table file: column names in file order, one record per row, and where each row is."""

    path: Path
    columns: list[str]  # in file order (JSONL: the order keys first appear)
    records: list[dict[str, Any]]  # JSONL values as parsed; CSV values as written (strings)
    places: list[str]  # per record: "line 7" (JSONL, CSV: the row's first physical line) or "row 7" (Parquet)


def read_text(path: Path, error: type[ValueError] = ValueError) -> str:
    """The text of ``path`` (UTF-8, a leading byte-order mark dropped); not UTF-8 or empty raises ``error``.

    The error for a byte that is not UTF-8 names the line, the byte and its offset in the file, e.g.
    ``preds.csv: line 3: not UTF-8 (byte 0xe9 at byte offset 171, column 24); save the file as UTF-8``.
    """
    data = path.read_bytes()
    skip = len(codecs.BOM_UTF8) if data.startswith(codecs.BOM_UTF8) else 0
    try:
        text = data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = skip + exc.start
        line = data.count(b"\n", 0, offset) + 1
        column = offset - (data.rfind(b"\n", 0, offset) + 1) + 1
        raise error(
            f"{path}: line {line}: not UTF-8 (byte 0x{data[offset]:02x} at byte offset {offset}, column {column}); "
            "save the file as UTF-8"
        ) from None
    if not text.strip():
        raise error(f"{path}: empty file ({len(data)} bytes{', only blank lines' if data else ''})")
    return text


def read_table_rows(
    path: Path, suffixes: tuple[str, ...] = (".jsonl", ".csv", ".parquet"), error: type[ValueError] = ValueError
) -> TableRows:
    """Every row of ``path`` with its place in the file; see the module notes for what raises ``error``."""
    if path.suffix not in suffixes:
        raise error(f"{path}: use {', '.join(suffixes)}")
    if path.suffix == ".csv":
        return _read_csv(path, error)
    if path.suffix == ".parquet":
        return _read_parquet(path, error)
    records, lines = read_jsonl(path, error)
    columns = list(dict.fromkeys(key for record in records for key in record))
    return TableRows(path, columns, records, [f"line {n}" for n in lines])


def read_table_file(
    path: Path, suffixes: tuple[str, ...] = (".jsonl", ".csv", ".parquet"), error: type[ValueError] = ValueError
) -> pd.DataFrame:
    """The rows of ``path`` as a frame: JSONL (one object a line, blank lines skipped), CSV (strings as
    written) or Parquet. Everything :func:`read_table_rows` refuses raises ``error`` naming the file (and line).
    """
    if path.suffix == ".parquet" and path.suffix in suffixes:
        return _parquet_frame(path, error)
    import pandas as pd

    rows = read_table_rows(path, suffixes, error)
    return pd.DataFrame.from_records(rows.records, columns=rows.columns)


def _parquet_frame(path: Path, error: type[ValueError]) -> pd.DataFrame:
    import pandas as pd

    try:
        frame = pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged or foreign file
        raise error(f"{path}: not a readable Parquet file ({type(exc).__name__}: {exc})".splitlines()[0]) from None
    if frame.empty:
        what = "no rows" if len(frame.columns) else "no columns and no rows"
        raise error(f"{path}: {what} (columns: {', '.join(map(str, frame.columns)) or 'none'})")
    return frame


def _read_parquet(path: Path, error: type[ValueError]) -> TableRows:
    frame = _parquet_frame(path, error)
    columns = [str(c) for c in frame.columns]
    frame.columns = columns
    records: list[dict[str, Any]] = [dict(zip(columns, row, strict=True)) for row in frame.itertuples(index=False)]
    return TableRows(path, columns, records, [f"row {n}" for n in range(1, len(records) + 1)])


def _read_csv(path: Path, error: type[ValueError]) -> TableRows:
    text = read_text(path, error)
    # a model's runaway output can be longer than the csv module's default 128 KiB field limit
    csv.field_size_limit(max(csv.field_size_limit(), len(text) + 1))
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    header: list[str] | None = None
    records: list[dict[str, Any]] = []
    places: list[str] = []
    previous = 0  # physical lines read before the current row
    try:
        for row in reader:
            start, previous = previous + 1, reader.line_num
            if not row or (len(row) == 1 and not row[0].strip()):
                continue  # a blank line
            if header is None:
                header = _csv_header(path, row, error)
                continue
            if len(row) != len(header):
                cut = " (cut off?)" if len(row) < len(header) else ""
                raise error(f"{path}: line {start}: {len(row)} fields where the header has {len(header)}{cut}")
            records.append(dict(zip(header, row, strict=True)))
            places.append(f"line {start}")
    except csv.Error as exc:
        raise error(f"{path}: line {reader.line_num}: not valid CSV ({exc})") from None
    assert header is not None  # read_text refused a file without any text
    if not records:
        raise error(f"{path}: header only, no rows (columns: {', '.join(header)})")
    return TableRows(path, header, records, places)


def _csv_header(path: Path, row: list[str], error: type[ValueError]) -> list[str]:
    """Column names of a CSV header; unnamed columns as pandas names them, a repeated name refused."""
    names = [name if name.strip() else f"Unnamed: {i}" for i, name in enumerate(row)]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise error(f"{path}: line 1: column(s) {', '.join(repeated)} appear more than once in the header")
    return names


def read_jsonl_records(path: Path, error: type[ValueError] = ValueError) -> list[dict[str, Any]]:
    """The JSON objects of a JSONL file, one a line, blank lines skipped; ``error`` names the file and line."""
    return read_jsonl(path, error)[0]


def read_jsonl(path: Path, error: type[ValueError] = ValueError) -> tuple[list[dict[str, Any]], list[int]]:
    """The JSON objects of a JSONL file and the physical line of each; blank lines skipped.

    Lines end at a newline only (as the companion benchmark reads them), not at the other
    characters ``str.splitlines`` breaks at, such as U+2028 written unescaped inside a string.
    A file without any object (empty, or blank lines only) or with bytes that are not UTF-8
    raises ``error`` as :func:`read_text` does.
    """
    text = read_text(path, error)
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    numbers = [number for number, line in enumerate(lines, 1) if line.strip()]
    try:  # every line parsed on its own, in C; on any problem the loop below names the line
        records = list(map(json.loads, filter(str.strip, lines)))
        if all(type(record) is dict for record in records):
            return records, numbers
    except json.JSONDecodeError:
        pass
    records = []
    for number in numbers:
        try:
            record = json.loads(lines[number - 1])
        except json.JSONDecodeError as exc:
            raise error(f"{path}: line {number}: not JSON ({exc})") from None
        if not isinstance(record, dict):
            raise error(f"{path}: line {number}: expected a JSON object")
        records.append(record)
    return records, numbers

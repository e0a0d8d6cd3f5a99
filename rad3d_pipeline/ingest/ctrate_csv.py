"""One CT-RATE CSV file, read so that row-level damage stays row-level.

A record that cannot be read (an undecodable byte, a broken quote, a wrong field count) is set
aside as a *damaged record*: its first physical line (1-based, the header is line 1), its span in
physical lines (a quoted Findings text may run over several), the reason and the raw text. The
rest of the file flows. Only file-level faults raise :class:`CtrateInputError` (an
:class:`~rad3d_pipeline.common.errors.InputFileError`) with one line naming the file, the line and the
reason: the file missing or unreadable, empty (no columns), header-only, or its header not readable.

Two parses, one result:

- the fast parse (pyarrow's multithreaded CSV reader) is taken when it finds nothing odd: every row
  has the header's field count, the text is UTF-8, no field holds a quote character or a line that
  starts a new record, and the physical lines add up;
- otherwise the careful parse: the file split into physical lines, each decoded on its own, then
  Python's ``csv`` reader in strict mode over them, tracking which physical lines each record
  took. An unterminated quote swallows the following lines only up to the next line that starts a
  CT-RATE record (``train_...``/``valid_...`` followed by the delimiter); that record and the rest
  of the file are read normally.

Both give the same table for a clean file (tested), so the fast one is only a shortcut.
"""

from __future__ import annotations

import csv
import io
import mmap
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from rad3d_pipeline.common.errors import InputFileError

LINE = "_line"
SPAN = "_lines"
QUARANTINE_COLUMNS: tuple[str, ...] = ("source", "line", "lines", "VolumeName", "reason", "raw")

_BOM = b"\xef\xbb\xbf"


class CtrateInputError(InputFileError):
    """A CT-RATE input that cannot be read at all (missing, unreadable, empty, header-only, a column missing)."""


# A physical line that begins a CT-RATE record: a (possibly quoted) volume name, then the delimiter.
RECORD_START = re.compile(r'"?(?:train|valid)_[^,"\r\n]*\.nii(?:\.gz)?"?,')
_RECORD_START_ARROW = r'\n"?(train|valid)_[^,"\r\n]*\.nii(\.gz)?"?,'
_NOT_SPACE = re.compile(rb"\S")
_RECORD_START_BYTES = re.compile(rb'\n"?((?:train|valid)_[^,"\r\n]*)"?,')


def fmt_line(line: int) -> str:
    """Line numbers as people read them in messages: ``1,204``."""
    return f"{line:,}"


@dataclass
class CsvFile:
    """The readable records of one CSV file, and the damaged ones.

    ``frame`` has the header's columns (strings, as written) plus ``_line`` (first physical line)
    and ``_lines`` (physical lines the record spans). ``damaged`` holds quarantine rows
    (:data:`QUARANTINE_COLUMNS`).
    """

    path: Path
    columns: tuple[str, ...]
    frame: pd.DataFrame
    damaged: list[dict[str, Any]]
    data: bytes = field(repr=False)
    careful: bool = False
    _texts: list[str] | None = field(default=None, repr=False)

    def raw(self, line: int, span: int = 1) -> str:
        """The raw text of physical lines ``line .. line+span-1`` (undecodable bytes as ``\\xe9``)."""
        if self._texts is None:
            self._texts = [_decode_line(b)[0] for b in _physical_lines(self.data)]
        return "\n".join(self._texts[line - 1 : line - 1 + span])

    @property
    def records(self) -> int:
        """Records in the file (readable and damaged), header excluded."""
        return len(self.frame) + len(self.damaged)


def _physical_lines(data: bytes, keep_cr: bool = False) -> list[bytes]:
    """The file's lines without their ``\\n`` (and without a ``\\r`` before it unless ``keep_cr``)."""
    lines = data.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    if keep_cr:
        return lines
    return [line[:-1] if line.endswith(b"\r") else line for line in lines]


def _decode_line(line: bytes) -> tuple[str, str | None]:
    """The text of one physical line, and why it is not UTF-8 (None when it is)."""
    try:
        return line.decode("utf-8"), None
    except UnicodeDecodeError as exc:
        column = len(line[: exc.start].decode("utf-8")) + 1
        return line.decode("utf-8", "backslashreplace"), f"byte 0x{line[exc.start]:02x} at column {column:,}"


def read_bytes(path: Path) -> bytes:
    """The file's bytes (BOM removed), or an InputFileError naming the file and the reason."""
    if not path.exists():
        raise CtrateInputError(f"{path}: file not found")
    if not path.is_file():
        raise CtrateInputError(f"{path}: not a regular file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise CtrateInputError(f"{path}: unreadable ({exc.strerror or type(exc).__name__})") from exc
    return data[len(_BOM) :] if data.startswith(_BOM) else data


def _header(path: Path, data: bytes) -> tuple[tuple[str, ...], int]:
    """Column names and the byte offset where the first record starts."""
    if _NOT_SPACE.search(data) is None:
        raise CtrateInputError(f"{path}: no columns (empty file)")
    end = data.find(b"\n")
    first = data if end < 0 else data[:end]
    text, bad = _decode_line(first.rstrip(b"\r"))
    if bad:
        raise CtrateInputError(f"{path} line 1: header not UTF-8 ({bad})")
    try:
        columns = next(csv.reader([text], strict=True))
    except (csv.Error, StopIteration) as exc:
        raise CtrateInputError(f"{path} line 1: unreadable header ({exc})") from exc
    if not any(c.strip() for c in columns):
        raise CtrateInputError(f"{path} line 1: no columns (blank header line)")
    body = len(data) if end < 0 else end + 1
    if _NOT_SPACE.search(data, body) is None:
        raise CtrateInputError(f"{path}: header only, no rows")
    return tuple(columns), body


def _fast_parse(data: bytes, body: int, columns: tuple[str, ...]) -> pd.DataFrame | None:
    """The records by pyarrow, or None when anything looks damaged (the careful parse decides)."""
    names = [f"c{i}" for i in range(len(columns))]
    invalid: list[int] = []

    def on_invalid(row: Any) -> str:
        invalid.append(1)
        return "skip"

    try:
        table = pa_csv.read_csv(
            io.BytesIO(memoryview(data)[body:]),
            read_options=pa_csv.ReadOptions(column_names=names),
            parse_options=pa_csv.ParseOptions(newlines_in_values=True, invalid_row_handler=on_invalid),
            convert_options=pa_csv.ConvertOptions(
                column_types={n: pa.string() for n in names},
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
            ),
        )
    except (pa.ArrowInvalid, pa.ArrowException):
        return None
    if invalid:
        return None
    spans = np.ones(table.num_rows, dtype="int64")
    for name in names:
        col = table[name]
        if not pc.any(pc.match_substring_regex(col, '["\\n]')).as_py():
            continue  # the common case: one scan per column
        if pc.any(pc.match_substring(col, '"')).as_py():
            return None  # a quote in a value: strict quoting is the careful parse's job
        if pc.any(pc.match_substring(col, "\n")).as_py():
            if pc.any(pc.match_substring_regex(col, _RECORD_START_ARROW)).as_py():
                return None  # a record inside a field: an unterminated quote swallowed it
            spans += pc.count_substring(col, "\n").to_numpy(zero_copy_only=False).astype("int64")
    lines_in_body = data.count(b"\n", body) + (0 if data.endswith(b"\n") else 1)
    if int(spans.sum()) != lines_in_body:
        return None  # blank lines or stray line ends: let the careful parse number the lines
    frame: pd.DataFrame = table.to_pandas()
    frame.columns = pd.Index(list(columns))
    starts = 2 + np.cumsum(spans) - spans
    frame[LINE] = starts.astype("int64")
    frame[SPAN] = spans
    return frame


def _careful_parse(path: Path, data: bytes, columns: tuple[str, ...]) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    # Lines keep a CR before their LF so a quoted CRLF inside a field reads as the fast parse reads it.
    decoded = [_decode_line(b) for b in _physical_lines(data, keep_cr=True)]
    texts = [t for t, _ in decoded]
    n = len(texts)
    ncols = len(columns)
    good: list[list[str]] = []
    lines: list[int] = []
    spans: list[int] = []
    damaged: list[dict[str, Any]] = []
    pos = [1]  # next physical line to hand to the reader (0-based; line 0 is the header)

    def feed() -> Iterator[str]:
        while pos[0] < n:
            i = pos[0]
            pos[0] += 1
            yield texts[i] + "\n"

    def set_aside(start: int, end: int, reason: str) -> None:
        first = texts[start].split(",", 1)[0].strip().strip('"').strip()
        damaged.append(
            {
                "source": str(path),
                "line": start + 1,
                "lines": end - start,
                "VolumeName": first,
                "reason": reason,
                "raw": "\n".join(t.removesuffix("\r") for t in texts[start:end]),
            }
        )

    reader = csv.reader(feed(), strict=True)
    while pos[0] < n:
        start = pos[0]
        error: str | None = None
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as exc:
            row, error = [], str(exc)
        end = pos[0]
        if error is None and end - start == 1 and not "".join(row).strip():
            continue  # a blank line
        inner = next((j for j in range(start + 1, end) if RECORD_START.match(texts[j])), None)
        if inner is not None:
            set_aside(start, inner, f"broken quote: quoted field not closed before line {fmt_line(inner + 1)}")
            pos[0] = inner
            reader = csv.reader(feed(), strict=True)
            continue
        reasons = []
        bad_bytes = [(j, decoded[j][1]) for j in range(start, end) if decoded[j][1]]
        if bad_bytes:
            j, why = bad_bytes[0]
            where = why if j == start else f"{why} of line {fmt_line(j + 1)}"
            reasons.append(f"not UTF-8 ({where})")
        if error is not None:
            if "unexpected end of data" in error:
                reasons.append("broken quote: quoted field not closed before the end of the file")
            elif "expected after" in error:
                reasons.append(f"broken quote ({error})")
            else:
                reasons.append(f"unreadable CSV record ({error})")
        elif len(row) != ncols:
            reasons.append(f"wrong field count: {len(row)} fields, the header has {ncols}")
        if reasons:
            set_aside(start, end, "; ".join(reasons))
            continue
        good.append(row)
        lines.append(start + 1)
        spans.append(end - start)
    frame = pd.DataFrame(
        {col: pd.array([r[i] for r in good], dtype="str") for i, col in enumerate(columns)},
        columns=list(columns),
    )
    frame[LINE] = np.asarray(lines, dtype="int64")
    frame[SPAN] = np.asarray(spans, dtype="int64")
    return frame, damaged


def read_csv_file(path: Path, required: tuple[str, ...], *, careful: bool = False) -> CsvFile:
    """Read one CSV file: readable records in ``frame``, damaged ones in ``damaged``.

    ``careful`` forces the careful parse (tests compare the two).
    """
    data = read_bytes(path)
    columns, body = _header(path, data)
    missing = [c for c in required if c not in columns]
    if missing:
        raise CtrateInputError(f"{path} line 1: missing column(s) {', '.join(repr(c) for c in missing)}")
    frame = None if careful else _fast_parse(data, body, columns)
    if frame is not None:
        return CsvFile(path, columns, frame, [], data)
    frame, damaged = _careful_parse(path, data, columns)
    return CsvFile(path, columns, frame, damaged, data, careful=True)


def volume_names_in(path: Path) -> list[str]:
    """VolumeNames that begin a record in the file, by a scan of its lines (damaged records included).

    Cheap (one regex pass over the bytes): the cross-file check uses it to see which volumes a file
    lists even when some of its records are damaged.
    """
    if not path.is_file():
        read_bytes(path)  # raises the one-line error: not found, not a regular file
    try:
        if path.stat().st_size == 0:
            return []
        with path.open("rb") as handle, mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ) as view:
            found: list[bytes] = _RECORD_START_BYTES.findall(view)
    except OSError as exc:
        raise CtrateInputError(f"{path}: unreadable ({exc.strerror or type(exc).__name__})") from exc
    return [m.decode("utf-8", "replace") for m in found]

"""The 3D-RAD release layout: ``3DRAD/{test,train}/<TaskFolder>/<Subtask>.csv``.

What an export writes is exactly what the current build says (docs/release-layout.md):

- the rows are every QA table on disk (closed_qa, curated_qa) restricted to the build's
  splits (:func:`current_rows`): a task not selected in this build keeps its rows from its
  table, a split no longer built is left out;
- the release holds one folder per built split (``test`` from CT-RATE ``valid``, ``train``)
  and the seeded training fractions when ``train`` is built;
- every file of the previous release that the new one does not write (a split, task or
  subtask no longer built, a stray file) is moved aside to ``<out>/3DRAD.stale/<stamp>/``
  under its release path, never deleted and never counted.

Each split folder is written into a temporary sibling and swapped in by rename, so a
failed export never leaves a half-written release.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pa_csv

from rad3d_pipeline.common.errors import UserFacingError
from rad3d_pipeline.open_qa.qa_rows import RELEASE_COLUMNS

TASK_FOLDERS: dict[int, str] = {
    1: "Task1_Image_Observation",
    2: "Task2_Anomaly_Detection",
    3: "Task3_Medical_Computation",
    4: "Task4_Existence_Detection",
    5: "Task5_Static_Temporal_Diagnosis",
    6: "Task6_Longitudinal_Temporal_Diagnosis",
}
RELEASE_FOLDER = "3DRAD"
STALE_FOLDER = "3DRAD.stale"
DEFAULT_TRAIN_FRACTIONS: tuple[float, ...] = (0.01, 0.10)


def release_split(split: str, rename_valid_to_test: bool = True) -> str:
    """Folder name of a CT-RATE split in the release (``valid`` is published as ``test``)."""
    if split == "valid":
        return "test" if rename_valid_to_test else "valid"
    return split


def release_volume_names(names: pd.Series, rename_valid_to_test: bool = True) -> pd.Series:
    if not rename_valid_to_test:
        return names
    return names.str.replace(r"^valid_", "test_", regex=True)


def fraction_folder(fraction: float) -> str:
    """``train_1pct`` for 0.01, ``train_10pct`` for 0.1, ``train_2.5pct`` for 0.025."""
    pct = round(fraction * 100, 6)
    text = f"{pct:g}"
    return f"train_{text}pct"


def release_folders(
    splits: tuple[str, ...], rename_valid_to_test: bool = True, train_fractions: tuple[float, ...] = ()
) -> list[str]:
    """The top-level folders a release of these CT-RATE splits may hold (fractions only with train)."""
    folders = [release_split(s, rename_valid_to_test) for s in splits]
    if "train" in splits:
        folders += [fraction_folder(f) for f in train_fractions]
    return folders


def current_rows(qa: pd.DataFrame, splits: tuple[str, ...]) -> tuple[pd.DataFrame, dict[str, int]]:
    """The QA rows of the build's splits, and the rows left out per other split (from older, wider builds)."""
    keep = qa["split"].isin(list(splits)).to_numpy()
    dropped = qa.loc[~keep, "split"].astype(str).value_counts().sort_index()
    rows = qa if keep.all() else qa.loc[keep].reset_index(drop=True)
    return rows, {str(k): int(v) for k, v in dropped.items()}


def _ranks(values: pd.Series) -> np.ndarray:
    """Integer ranks of the values in sort order (equal values, equal ranks); nulls last."""
    codes, _ = pd.factorize(values, sort=True, use_na_sentinel=True)
    codes = np.asarray(codes, dtype=np.int64)
    return np.where(codes < 0, np.iinfo(np.int64).max, codes)


def release_rows(qa: pd.DataFrame, rename_valid_to_test: bool = True) -> pd.DataFrame:
    """QA rows in release order with release VolumeNames and a ``release_split`` column.

    Order: split, task, subtask, VolumeName (as a string, as the release sorts), then the
    rows' own order.
    """
    splits = qa["split"].astype(str)
    split_codes, split_names = pd.factorize(splits, sort=False)
    folder_names = pd.Series([release_split(s, rename_valid_to_test) for s in split_names], dtype=splits.dtype)
    volumes = qa["VolumeName"].astype(str)
    volume_codes, names = pd.factorize(volumes, sort=False)
    renamed = release_volume_names(pd.Series(names, dtype=volumes.dtype), rename_valid_to_test)
    release_split_col = pd.Series(folder_names.take(split_codes).to_numpy(), index=qa.index, dtype=splits.dtype)
    volume_col = pd.Series(renamed.take(volume_codes).to_numpy(), index=qa.index, dtype=volumes.dtype)
    keys = [
        np.arange(len(qa)),  # the rows' own order breaks ties (a stable sort)
        _ranks(volume_col),
        _ranks(qa["Subtask"]),
        _ranks(qa["Task"]),
        _ranks(release_split_col),
    ]
    order = np.lexsort(keys)
    rows = qa.assign(VolumeName=volume_col, release_split=release_split_col)
    return rows.take(order).reset_index(drop=True)


def sample_fraction(rows: pd.DataFrame, fraction: float, seed: int) -> pd.DataFrame:
    """A seeded per-task sample of the rows (at least one row of every non-empty task)."""
    parts = []
    for task, group in rows.groupby("Task", sort=True):
        n = max(1, round(len(group) * fraction))
        parts.append(group.sample(n=n, random_state=(seed * 1000 + int(str(task))) % (2**32)).sort_index())
    if not parts:
        return rows.iloc[0:0]
    return pd.concat(parts)


# ---------------------------------------------------------------- CSV text


def _csv_field(value: str) -> str:
    """``value`` as Python's csv writer (QUOTE_MINIMAL, as pandas) writes it among other fields."""
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator="\n").writerow([value, "x"])
    return buffer.getvalue()[: -len(",x\n")]


_NEEDS_QUOTES = r'[,"\n]'  # with lineterminator "\n", QUOTE_MINIMAL quotes these in every Python


def _csv_column(values: pd.Series, suffix: str = "") -> pa.Array | None:
    """One column's fields as CSV text (each followed by ``suffix``), or None where pandas must format it."""
    if values.isna().any():
        return None
    if isinstance(values.dtype, pd.CategoricalDtype):
        categories = values.cat.categories
        if not all(isinstance(v, str) for v in categories):
            return None
        text, indices = _quote_strings(pa.array(list(categories), type=pa.large_string())), values.cat.codes.to_numpy()
        if suffix:
            text = _with_suffix(text, suffix)
        return text.take(pa.array(indices))
    kind = values.dtype.kind
    if kind in "iu":
        indices, uniques = pd.factorize(values.to_numpy(), sort=False)
        text = pa.array([str(v) for v in uniques.tolist()], type=pa.large_string())
    elif kind == "b":
        indices = values.to_numpy().astype(np.int64)
        text = pa.array(["False", "True"], type=pa.large_string())
    elif kind in "OU" or isinstance(values.dtype, pd.StringDtype):
        try:
            encoded = pc.dictionary_encode(pa.array(values, from_pandas=True))
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            return None  # not all strings
        if not (pa.types.is_string(encoded.type.value_type) or pa.types.is_large_string(encoded.type.value_type)):
            return None
        text, indices = _quote_strings(pc.cast(encoded.dictionary, pa.large_string())), encoded.indices
    else:
        return None
    if suffix:
        text = _with_suffix(text, suffix)
    return text.take(pa.array(indices))


def _quote_strings(raw: pa.Array) -> pa.Array:
    """Distinct strings as CSV fields (QUOTE_MINIMAL, doubled quotes)."""
    mark, empty = pa.scalar('"', pa.large_string()), pa.scalar("", pa.large_string())
    quoted = pc.binary_join_element_wise(mark, pc.replace_substring(raw, '"', '""'), mark, empty)
    text = pc.if_else(pc.match_substring_regex(raw, _NEEDS_QUOTES), quoted, raw)
    carriage = pc.match_substring(raw, "\r")
    if pc.any(carriage).as_py():
        # Whether a lone \r is quoted depends on the Python version: ask its csv writer.
        where = np.flatnonzero(carriage.to_numpy(zero_copy_only=False))
        fixed = pa.array([_csv_field(raw[int(i)].as_py()) for i in where], type=pa.large_string())
        text = pc.replace_with_mask(text, carriage, fixed)
    return text


def _with_suffix(text: pa.Array, suffix: str) -> pa.Array:
    return pc.binary_join_element_wise(text, pa.scalar(suffix, pa.large_string()), pa.scalar("", pa.large_string()))


def _csv_body(frame: pd.DataFrame) -> tuple[str, pa.Buffer | None] | None:
    """(header line, body bytes) of ``frame.to_csv(index=False)``, or None where pandas must write it."""
    if len(frame.columns) < 2 or not frame.columns.is_unique:
        return None
    last = len(frame.columns) - 1
    columns = [_csv_column(frame[c], "\n" if i == last else "") for i, c in enumerate(frame.columns)]
    if any(c is None for c in columns):
        return None
    header = ",".join(_csv_field(str(c)) for c in frame.columns) + "\n"
    if len(frame) == 0:
        return header, None
    lines = pc.binary_join_element_wise(*columns, pa.scalar(",", pa.large_string()))
    # Every line ends in "\n": the lines' data buffer is the body, end to end.
    offsets = np.frombuffer(lines.buffers()[1], dtype=np.int64)[lines.offset : lines.offset + len(lines) + 1]
    return header, lines.buffers()[2].slice(int(offsets[0]), int(offsets[-1] - offsets[0]))


def frame_csv_bytes(frame: pd.DataFrame) -> bytes:
    """The bytes of ``frame.to_csv(path, index=False)``, several times faster on large string tables.

    Fields that hold a comma, a quote or a newline are quoted with doubled quotes (Python's csv
    QUOTE_MINIMAL, as pandas writes); a field with a carriage return is quoted by Python's csv
    writer itself; Arrow joins the lines. Frames this does not cover (floats, nulls, fewer than
    two columns, values that are not strings) go through pandas.
    """
    parts = _csv_body(frame)
    if parts is None:
        return frame.to_csv(index=False).encode("utf-8")
    header, body = parts
    return header.encode("utf-8") + (body.to_pybytes() if body is not None else b"")


def write_csv(frame: pd.DataFrame, path: Path) -> None:
    """Write ``frame`` as ``frame.to_csv(path, index=False)`` would, faster (:func:`frame_csv_bytes`)."""
    parts = _csv_body(frame)
    if parts is None:
        frame.to_csv(path, index=False)
        return
    header, body = parts
    with path.open("wb") as handle:
        handle.write(header.encode("utf-8"))
        if body is not None:
            handle.write(body)


# ---------------------------------------------------------------- the export


@dataclass
class ExportSummary:
    root: Path
    files: dict[str, int] = field(default_factory=dict)  # relative path -> rows
    stale: list[str] = field(default_factory=list)  # relative paths moved aside
    stale_folder: Path | None = None

    @property
    def rows(self) -> int:
        return sum(self.files.values())


def _write_split_folder(rows: pd.DataFrame, folder: Path, summary: ExportSummary, split_name: str) -> None:
    for (task, name), group in rows.groupby(["Task", "subtask_name"], sort=True):
        relative = Path(TASK_FOLDERS[int(str(task))]) / f"{name}.csv"
        target = folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        write_csv(group[list(RELEASE_COLUMNS)], target)
        summary.files[f"{split_name}/{relative.as_posix()}"] = len(group)


def _release_files(folder: Path, hidden: bool = False) -> set[str]:
    """Relative paths of the files and links under ``folder`` (a link to a folder counts as a file)."""
    found = set()
    for dirpath, dirnames, filenames in os.walk(folder):
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        dirnames[:] = [d for d in dirnames if d not in links and (hidden or not d.startswith("."))]
        for name in [*filenames, *links]:
            if hidden or not name.startswith("."):
                found.add((Path(dirpath) / name).relative_to(folder).as_posix())
    return found


class _StaleMover:
    """Moves release entries under ``<out>/3DRAD.stale/<stamp>/`` keeping their release paths."""

    def __init__(self, root: Path, summary: ExportSummary) -> None:
        self.root, self.summary = root, summary
        self.folder: Path | None = None

    def _target(self, relative: str) -> Path:
        if self.folder is None:
            base = self.root.parent / STALE_FOLDER
            stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
            folder, n = base / stamp, 1
            while folder.exists():
                n += 1
                folder = base / f"{stamp}-{n}"
            self.folder = folder
            self.summary.stale_folder = folder
        target = self.folder / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        return target

    def move(self, source: Path, relative: str, files: list[str]) -> None:
        os.replace(source, self._target(relative))
        self.summary.stale.extend(files)


def _swap_in(tmp: Path, final: Path, name: str, stale: _StaleMover) -> None:
    """Replace ``final`` by ``tmp`` with renames only; old files the new folder lacks are moved aside first."""
    if final.is_symlink() or (final.exists() and not final.is_dir()):
        stale.move(final, name, [name])
    elif final.exists():
        new = _release_files(tmp, hidden=True)
        for relative in sorted(_release_files(final, hidden=True) - new):
            stale.move(final / relative, f"{name}/{relative}", [f"{name}/{relative}"])
    old = final.with_name(f".{final.name}.old-{uuid.uuid4().hex[:8]}")
    if final.exists():
        os.replace(final, old)
    os.replace(tmp, final)
    if old.exists():
        shutil.rmtree(old)


def write_release(
    rows: pd.DataFrame,
    out: Path,
    *,
    splits: tuple[str, ...] | None = None,
    rename_valid_to_test: bool = True,
    train_fractions: tuple[float, ...] = DEFAULT_TRAIN_FRACTIONS,
    seed: int = 0,
) -> ExportSummary:
    """Write release rows (from :func:`release_rows`) under ``out/3DRAD``; move what no longer belongs aside.

    ``splits`` are the CT-RATE splits of the build (default: the splits of ``rows``). The release
    then holds one folder per built split that has rows, and ``train_<p>pct`` folders (seeded
    per-task fractions of the training rows) when train has rows. Every other entry of ``3DRAD``,
    and every file of a rewritten folder that the new folder does not have, is moved to
    ``out/3DRAD.stale/<UTC stamp>/`` under its release path. Rows of splits outside ``splits``
    are an error: filter them with :func:`current_rows` first.
    """
    root = Path(out) / RELEASE_FOLDER
    root.mkdir(parents=True, exist_ok=True)
    summary = ExportSummary(root)
    present = {str(s) for s in rows["split"].unique()} if "split" in rows else set()
    if splits is None:
        splits = tuple(sorted(present))
    outside = sorted(present - set(splits))
    if outside:
        raise ValueError(f"release rows of split(s) {', '.join(outside)} outside the build's {', '.join(splits)}")
    folders: dict[str, pd.DataFrame] = {str(split): group for split, group in rows.groupby("release_split", sort=True)}
    if "train" in folders:
        for fraction in train_fractions:
            folders[fraction_folder(fraction)] = sample_fraction(folders["train"], fraction, seed)
    stale = _StaleMover(root, summary)
    staged: list[tuple[Path, Path, str]] = []
    try:
        for name, group in folders.items():
            tmp = root / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
            tmp.mkdir()
            staged.append((tmp, root / name, name))
            _write_split_folder(group, tmp, summary, name)
        for tmp, final, name in staged:
            _swap_in(tmp, final, name, stale)
        for entry in sorted(root.iterdir()):
            if entry.name in folders:
                continue
            if entry.name.startswith(".") and (".tmp-" in entry.name or ".old-" in entry.name):
                # Left by an export that was killed between its renames; never release content.
                shutil.rmtree(entry, ignore_errors=True) if entry.is_dir() else entry.unlink(missing_ok=True)
                continue
            files = sorted(f"{entry.name}/{f}" for f in _release_files(entry)) if entry.is_dir() else [entry.name]
            stale.move(entry, entry.name, files)
    finally:
        for tmp, _, _ in staged:
            if tmp.exists():
                shutil.rmtree(tmp)
    return summary


# ---------------------------------------------------------------- reading back


def read_release(root: Path) -> pd.DataFrame:
    """Read a release folder (``.../3DRAD/test``) back into one table with ``subtask_name``."""
    frames = []
    for task, folder in TASK_FOLDERS.items():
        for path in sorted((root / folder).glob("*.csv")):
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
            frame["subtask_name"] = path.stem
            frame["Task"] = frame["Task"].astype(int)
            frame["Subtask"] = frame["Subtask"].astype(int)
            if not (frame["Task"] == task).all():
                raise ValueError(f"{path}: rows with a Task other than {task}")
            frames.append(frame)
    if not frames:
        return pd.DataFrame(columns=[*RELEASE_COLUMNS, "subtask_name"])
    return pd.concat(frames, ignore_index=True)


def _read_strings(path: Path) -> pa.Table:
    """A release CSV as strings (Arrow's parser: quoted newlines allowed, empty fields kept as "")."""
    with path.open("rb") as handle:
        names = next(csv.reader(io.TextIOWrapper(handle, encoding="utf-8", newline="")), [])
    return pa_csv.read_csv(
        path,
        parse_options=pa_csv.ParseOptions(newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in names}, strings_can_be_null=False
        ),
    )


def verify_release(summary: ExportSummary) -> list[str]:
    """Problems of the release on disk against what the export wrote (empty when it holds).

    Every file written is read back: the release columns in order, the row count, a Task
    column equal to its folder's task, and on closed questions the ``Choice <AnswerChoice>``
    equal to the Answer. The release holds no file the export did not write.
    """
    problems: list[str] = []
    on_disk = _release_files(summary.root)
    extra, missing = sorted(on_disk - set(summary.files)), sorted(set(summary.files) - on_disk)
    if extra:
        problems.append(f"{len(extra)} file(s) on disk the export did not write, e.g. {extra[0]}")
    if missing:
        problems.append(f"{len(missing)} file(s) written but not on disk, e.g. {missing[0]}")
    task_of_folder = {folder: task for task, folder in TASK_FOLDERS.items()}
    for relative, expected in sorted(summary.files.items()):
        if relative in missing:
            continue
        table = _read_strings(summary.root / relative)
        if table.column_names != list(RELEASE_COLUMNS):
            problems.append(f"{relative}: columns {table.column_names}")
            continue
        if table.num_rows != expected:
            problems.append(f"{relative}: {table.num_rows} rows on disk, {expected} written")
        task = str(task_of_folder.get(relative.split("/")[1], ""))
        if not pc.all(pc.equal(table["Task"], task)).as_py() and table.num_rows:
            problems.append(f"{relative}: rows with a Task other than {task}")
        closed = table.filter(pc.equal(table["QuestionType"], "Close"))
        if closed.num_rows:
            letter = closed["AnswerChoice"]
            chosen = pc.case_when(
                pc.make_struct(*[pc.equal(letter, x) for x in "ABCD"]),
                *[closed[f"Choice {x}"] for x in "ABCD"],
            )
            wrong = closed.num_rows - int(pc.sum(pc.fill_null(pc.equal(chosen, closed["Answer"]), False)).as_py() or 0)
            if wrong:
                problems.append(f"{relative}: {wrong} rows whose AnswerChoice is not the Answer")
    return problems


class ReleaseInputError(UserFacingError):
    """Nothing to export: no QA table, or none of the build's splits."""


@dataclass
class ReleaseExport:
    """One export: the rows written, what was written and moved aside, rows of other splits left out."""

    rows: pd.DataFrame
    summary: ExportSummary
    dropped: dict[str, int]

    def figures(self) -> dict[str, int]:
        """Rows per split and task (``rows_test_task4``), and rows of splits this build leaves out."""
        sizes = self.rows.groupby(["release_split", "Task"]).size().reset_index(name="n")
        out = {f"rows_left_out_{split}": n for split, n in self.dropped.items()}
        for split, task, n in zip(sizes["release_split"], sizes["Task"], sizes["n"], strict=True):
            out[f"rows_{split}_task{int(task)}"] = int(n)
        return out


def export_release(
    tables: list[pd.DataFrame],
    out: Path,
    splits: tuple[str, ...],
    *,
    rename_valid_to_test: bool,
    train_fractions: tuple[float, ...],
    seed: int,
) -> ReleaseExport:
    """The release of ``splits`` from the QA tables (open- and closed-ended), written under ``out``."""
    parts = [frame for frame in tables if not frame.empty]
    if not parts:
        raise ReleaseInputError("release_export: no QA rows to export; materialize closed_qa or curated_qa first")
    qa, dropped = current_rows(pd.concat(parts, ignore_index=True), splits)
    if qa.empty:
        raise ReleaseInputError(
            f"release_export: no QA rows of the split(s) {', '.join(splits)} (the tables hold {', '.join(dropped)}); "
            "build closed_qa or curated_qa for these splits first"
        )
    rows = release_rows(qa, rename_valid_to_test)
    summary = write_release(
        rows,
        out,
        splits=splits,
        rename_valid_to_test=rename_valid_to_test,
        train_fractions=train_fractions,
        seed=seed,
    )
    return ReleaseExport(rows, summary, dropped)

"""CT-RATE CSVs damaged the way downloads and hand edits break them.

Row-level damage (an undecodable byte, a broken quote, a wrong field count, duplicates) quarantines
that record with its file, first physical line, line span, reason and raw text, and the rest of the
file flows; file-level damage (empty, header-only, a column missing, unreadable) is one line naming
the file. The report texts are CT-RATE's own (the public fixture), several made multi-line the way
CT-RATE's quoted Findings are.
"""

from __future__ import annotations

import csv
import io
import json
import warnings
from pathlib import Path

import pandas as pd
import pytest

from rad3d_pipeline.common.errors import InputFileError
from rad3d_pipeline.ingest.ctrate import (
    CtrateInputError,
    CtrateLayout,
    crosscheck,
    read_labels,
    read_metadata,
    read_reports,
)
from rad3d_pipeline.ingest.ctrate_csv import read_csv_file
from rad3d_pipeline.ingest.labels import CTRATE_LABELS

warnings.filterwarnings("ignore", module="dagster")

REPORTS = Path("radiology_text_reports") / "validation_reports.csv"
LABELS = Path("multi_abnormality_labels") / "valid_predicted_labels.csv"


def fixture_rows(fixtures: Path, relative: Path) -> list[list[str]]:
    with (fixtures / "ctrate_mini" / relative).open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def to_csv(rows: list[list[str]], newline: str = "\n") -> str:
    buffer = io.StringIO()
    csv.writer(buffer, lineterminator=newline).writerows(rows)
    return buffer.getvalue()


def multiline(rows: list[list[str]], every: int = 3) -> list[list[str]]:
    """Every ``every``-th report's Findings broken into one line per sentence (CT-RATE's multi-line records)."""
    out = [rows[0]]
    for i, row in enumerate(rows[1:]):
        row = list(row)
        if i % every == 0:
            row[3] = row[3].replace(". ", ".\n")
        out.append(row)
    return out


def physical_lines(text: str) -> list[str]:
    return text.split("\n")


def first_line_of(text: str, volume: str) -> int:
    """The physical line (1-based) where the record of ``volume`` starts."""
    return next(i + 1 for i, line in enumerate(physical_lines(text)) if line.startswith(volume + ","))


def write(root: Path, relative: Path, data: str | bytes) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(data, str):
        data = data.encode("utf-8")
    path.write_bytes(data)
    return path


def one_line(exc: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(exc.value)
    assert "\n" not in message
    assert isinstance(exc.value, InputFileError)
    return message


# ---------------------------------------------------------------- labels


def test_label_file_cut_off_mid_row(fixtures: Path, tmp_path: Path) -> None:
    rows = fixture_rows(fixtures, LABELS)
    text = to_csv(rows)
    cut = text.index("\n", len(text) // 2) + 12  # twelve characters into a row, no line end after it
    path = write(tmp_path, LABELS, text[:cut])
    write(tmp_path, REPORTS, (fixtures / "ctrate_mini" / REPORTS).read_bytes())
    result = read_labels(CtrateLayout.resolve(tmp_path), "valid")
    last_line = text[:cut].count("\n") + 1
    assert len(result.table) == last_line - 2  # every complete row flows
    assert result.table["VolumeName"].tolist() == [r[0] for r in rows[1 : last_line - 1]]
    q = result.quarantine
    assert len(q) == 1
    assert (q.at[0, "source"], q.at[0, "line"], q.at[0, "lines"]) == (str(path), last_line, 1)
    assert q.at[0, "reason"] == f"wrong field count: 1 fields, the header has {len(CTRATE_LABELS) + 1}"
    assert q.at[0, "raw"] == text[:cut].rsplit("\n", 1)[1]
    # The cut is visible: the volumes after it have a report and no label row.
    counts = crosscheck(CtrateLayout.resolve(tmp_path), ("valid",))["valid"]
    listed = {r[0] for r in rows[1 : last_line - 1]}
    reports = {r[0] for r in fixture_rows(fixtures, REPORTS)[1:]}
    assert counts["reports_without_labels"] == len(reports - listed) > 10
    assert counts["labels_without_reports"] == 0
    assert counts["reports_without_labels_examples"] == sorted(reports - listed)[:5]


def test_header_only_and_empty_label_files_are_errors(tmp_path: Path) -> None:
    header = ",".join(["VolumeName", *CTRATE_LABELS]) + "\n"
    path = write(tmp_path, LABELS, header + "\n\n")
    with pytest.raises(CtrateInputError) as exc:
        read_labels(CtrateLayout.resolve(tmp_path), "valid")
    assert one_line(exc) == f"{path}: header only, no rows"
    write(tmp_path, LABELS, b"")
    with pytest.raises(CtrateInputError) as exc:
        read_labels(CtrateLayout.resolve(tmp_path), "valid")
    assert one_line(exc) == f"{path}: no columns (empty file)"
    write(tmp_path, LABELS, b"\xef\xbb\xbf\r\n  \r\n")
    with pytest.raises(CtrateInputError, match="no columns"):
        read_labels(CtrateLayout.resolve(tmp_path), "valid")


def test_unreadable_or_columnless_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / LABELS
    path.mkdir(parents=True)  # a folder where the file should be
    with pytest.raises(CtrateInputError) as exc:
        read_labels(CtrateLayout.resolve(tmp_path), "valid")
    assert one_line(exc) == f"{path}: not a regular file"
    path.rmdir()
    write(tmp_path, LABELS, "VolumeName;Cardiomegaly\nvalid_1_a_1.nii.gz;0\n")
    with pytest.raises(CtrateInputError) as exc:
        read_labels(CtrateLayout.resolve(tmp_path), "valid")
    assert one_line(exc).startswith(f"{path} line 1: missing column(s) 'VolumeName', 'Medical material'")
    write(tmp_path, LABELS, b"VolumeName,Cardiom\xe9galie\n")
    with pytest.raises(CtrateInputError) as exc:
        read_labels(CtrateLayout.resolve(tmp_path), "valid")
    assert one_line(exc) == f"{path} line 1: header not UTF-8 (byte 0xe9 at column 19)"


def test_a_file_with_no_usable_row_is_an_error(tmp_path: Path) -> None:
    header = ",".join(["VolumeName", *CTRATE_LABELS])
    path = write(tmp_path, LABELS, header + "\n" + "train_1_a_1.nii.gz" + ",0" * len(CTRATE_LABELS) + "\n")
    with pytest.raises(CtrateInputError) as exc:
        read_labels(CtrateLayout.resolve(tmp_path), "valid")
    assert one_line(exc) == (
        f"{path}: no usable rows: all 1 record(s) quarantined "
        "(first, line 2: VolumeName belongs to split train, file is valid)"
    )


def test_conflicting_duplicates_are_all_quarantined(fixtures: Path, tmp_path: Path) -> None:
    rows = fixture_rows(fixtures, LABELS)
    twin = list(rows[5])
    twin[3] = "1" if twin[3] == "0" else "0"  # Cardiomegaly differs
    rows.insert(20, twin)
    text = to_csv(rows)
    path = write(tmp_path, LABELS, text)
    result = read_labels(CtrateLayout.resolve(tmp_path), "valid")
    name = rows[5][0]
    assert name not in set(result.table["VolumeName"])
    assert len(result.table) == len(rows) - 1 - 2
    q = result.quarantine
    assert q["line"].tolist() == [6, 21]
    assert (q["source"] == str(path)).all() and (q["VolumeName"] == name).all()
    assert q["reason"].tolist() == [f"conflicting duplicate: {name} is on lines 6, 21 with different Cardiomegaly"] * 2
    assert q["raw"].tolist() == [",".join(rows[5]), ",".join(twin)]
    assert result.counts == {}


def test_identical_duplicates_are_collapsed_and_counted(fixtures: Path, tmp_path: Path) -> None:
    rows = fixture_rows(fixtures, LABELS)
    copy = list(rows[7])
    copy[4] = f" {copy[4]} "  # spaces around a value do not make a conflict
    rows += [rows[7], copy]
    write(tmp_path, LABELS, to_csv(rows))
    result = read_labels(CtrateLayout.resolve(tmp_path), "valid")
    assert result.table["VolumeName"].tolist() == [r[0] for r in rows[1:-2]]
    assert result.counts == {"identical_duplicates_collapsed": 2}
    assert result.quarantine["reason"].tolist() == ["identical duplicate of line 8 (collapsed)"] * 2
    assert result.quarantine["line"].tolist() == [len(rows) - 1, len(rows)]


def test_wrong_field_counts_in_labels_and_metadata(fixtures: Path, tmp_path: Path) -> None:
    rows = fixture_rows(fixtures, LABELS)
    rows[3] = rows[3] + ["0"]  # one field too many (line 4)
    rows[9] = rows[9][:-2]  # two too few (line 10)
    write(tmp_path, LABELS, to_csv(rows))
    result = read_labels(CtrateLayout.resolve(tmp_path), "valid")
    assert result.quarantine["line"].tolist() == [4, 10]
    assert result.quarantine["reason"].tolist() == [
        "wrong field count: 20 fields, the header has 19",
        "wrong field count: 17 fields, the header has 19",
    ]
    assert result.quarantine["raw"].tolist() == [",".join(rows[3]), ",".join(rows[9])]
    assert len(result.table) == len(rows) - 3

    meta = [
        ["VolumeName", "XYSpacing", "ZSpacing", "RescaleSlope", "RescaleIntercept"],
        ["valid_1_a_1.nii.gz", "[0.75, 0.75]", "1.5", "1", "-1024"],
        ["valid_2_a_1.nii.gz", "[0.7, 0.7]", "1", "1"],
        ["valid_3_a_1.nii.gz", "[0.7, 0.7]", "1", "1", "-1024"],
        ["valid_3_a_1.nii.gz", "[0.7, 0.7]", "2", "1", "-1024"],
    ]
    write(tmp_path, Path("metadata") / "validation_metadata.csv", to_csv(meta))
    loaded = read_metadata(CtrateLayout.resolve(tmp_path), "valid")
    assert loaded.table["VolumeName"].tolist() == ["valid_1_a_1.nii.gz"]
    assert loaded.quarantine["reason"].tolist() == [
        "wrong field count: 4 fields, the header has 5",
        "conflicting duplicate: valid_3_a_1.nii.gz is on lines 4, 5 with different ZSpacing",
        "conflicting duplicate: valid_3_a_1.nii.gz is on lines 4, 5 with different ZSpacing",
    ]


# ---------------------------------------------------------------- reports


def test_latin1_byte_quarantines_one_report(fixtures: Path, tmp_path: Path) -> None:
    rows = fixture_rows(fixtures, REPORTS)
    data = to_csv(rows).encode("utf-8")
    target = rows[10][0]
    start = data.index(b"\n" + target.encode()) + 1
    at = data.index(b"normal", start)
    damaged = data[:at] + "n\u00e9rmal".encode("latin-1") + data[at + 6 :]
    path = write(tmp_path, REPORTS, damaged)
    result = read_reports(CtrateLayout.resolve(tmp_path), "valid")
    assert len(result.table) == len(rows) - 2
    assert target not in set(result.table["VolumeName"])
    q = result.quarantine
    assert len(q) == 1
    line_start = data.rfind(b"\n", 0, at) + 1
    column = len(data[line_start:at].decode()) + 2
    assert (q.at[0, "source"], q.at[0, "line"], q.at[0, "lines"]) == (str(path), 11, 1)
    assert q.at[0, "VolumeName"] == target
    assert q.at[0, "reason"] == f"not UTF-8 (byte 0xe9 at column {column:,})"
    assert "n\\xe9rmal" in q.at[0, "raw"] and q.at[0, "raw"].startswith(target + ",")
    # The good rows are exactly the fixture's other reports, texts intact.
    clean = read_reports(CtrateLayout.resolve(fixtures / "ctrate_mini"), "valid").table
    expected = clean[clean["VolumeName"] != target].reset_index(drop=True)
    pd.testing.assert_frame_equal(result.table, expected)


def test_unterminated_quote_quarantines_one_report(fixtures: Path, tmp_path: Path) -> None:
    rows = multiline(fixture_rows(fixtures, REPORTS))
    text = to_csv(rows)
    target = rows[9][0]  # a one-line record; the next one is multi-line
    line = first_line_of(text, target)
    lines = physical_lines(text)
    head, sep, tail = lines[line - 1].rpartition('",')
    assert sep and "\n" not in rows[9][3] and "\n" in rows[10][3]
    lines[line - 1] = f"{head},{tail}"  # the closing quote of the Findings lost
    path = write(tmp_path, REPORTS, "\n".join(lines))
    result = read_reports(CtrateLayout.resolve(tmp_path), "valid")
    assert len(result.table) == len(rows) - 2
    q = result.quarantine
    assert (q.at[0, "source"], q.at[0, "line"], q.at[0, "lines"], q.at[0, "VolumeName"]) == (
        str(path),
        line,
        1,
        target,
    )
    assert q.at[0, "reason"] == f"broken quote: quoted field not closed before line {line + 1:,}"
    assert q.at[0, "raw"] == lines[line - 1]
    # The record after it, multi-line, is read in full from its own first line.
    follower = rows[10]
    got = result.table.set_index("VolumeName")
    assert got.at[follower[0], "Findings_EN"] == follower[3] and "\n" in follower[3]


def test_broken_quotes_inside_and_at_the_end(fixtures: Path, tmp_path: Path) -> None:
    rows = fixture_rows(fixtures, REPORTS)
    text = to_csv(rows)
    lines = physical_lines(text)
    inner, last = rows[4][0], rows[-1][0]
    i = first_line_of(text, inner) - 1
    lines[i] = lines[i].replace("bronchi", 'bronchi "as usual', 1)  # a stray quote inside a quoted Findings
    assert '"as usual' in lines[i] and lines[i].count('"') % 2 == 1
    j = first_line_of(text, last) - 1
    head, _, tail = lines[j].rpartition(',"')
    lines[j] = f'{head},"{tail[:-1]}'  # the last record's closing quote lost: runs to the end of the file
    write(tmp_path, REPORTS, "\n".join(lines))
    result = read_reports(CtrateLayout.resolve(tmp_path), "valid")
    q = result.quarantine.set_index("VolumeName")
    assert q.at[inner, "line"] == i + 1 and q.at[inner, "reason"].startswith("broken quote")
    assert q.at[last, "line"] == j + 1
    assert q.at[last, "reason"] == "broken quote: quoted field not closed before the end of the file"
    assert len(result.table) == len(rows) - 3


def test_multiline_records_are_numbered_by_physical_line(fixtures: Path, tmp_path: Path) -> None:
    rows = multiline(fixture_rows(fixtures, REPORTS))
    bad_name = rows[13][0]
    rows[13][0] = bad_name.replace(".nii.gz", ".nii")  # malformed VolumeName on a multi-line record
    bad_byte = rows[19][0]
    assert "\n" in rows[13][3] and "\n" in rows[19][3] and "\n" in rows[22][3]
    text = to_csv(rows, newline="\r\n")  # CRLF line ends, with bare LF inside the quoted Findings
    data = text.encode()
    first = first_line_of(text.replace("\r\n", "\n"), bad_byte)
    third = data.split(b"\n")[first + 1]  # the record's third physical line
    at = data.index(third) + 3
    data = data[:at] + b"\xb5" + data[at + 1 :]
    path = write(tmp_path, REPORTS, b"\xef\xbb\xbf" + data)
    result = read_reports(CtrateLayout.resolve(tmp_path), "valid")
    q = result.quarantine
    plain = text.replace("\r\n", "\n")
    malformed_line = next(i + 1 for i, ln in enumerate(physical_lines(plain)) if ln.startswith(rows[13][0] + ","))
    assert q["line"].tolist() == [malformed_line, first]
    assert q["lines"].tolist() == [rows[13][3].count("\n") + 1, rows[19][3].count("\n") + 1]
    assert malformed_line > 14  # record 13 (line 14 if one line each): its physical line is further down
    assert q.at[0, "reason"].startswith("malformed VolumeName")
    assert q.at[1, "reason"] == f"not UTF-8 (byte 0xb5 at column 4 of line {first + 2:,})"
    assert q.at[0, "raw"].split("\n")[0].startswith(rows[13][0] + ",")
    assert q.at[0, "raw"].count("\n") == rows[13][3].count("\n")
    assert "\\xb5" in q.at[1, "raw"].split("\n")[2]
    assert (q["source"] == str(path)).all()
    # Every other record flows with its text intact, line breaks included.
    got = result.table.set_index("VolumeName")
    assert len(got) == len(rows) - 3
    assert got.at[rows[22][0], "Findings_EN"] == rows[22][3]


def test_fast_and_careful_parse_agree(fixtures: Path, tmp_path: Path) -> None:
    rows = multiline(fixture_rows(fixtures, REPORTS), every=2)
    text = to_csv(rows)
    path = write(tmp_path, REPORTS, text)
    fast = read_csv_file(path, ("VolumeName",))
    careful = read_csv_file(path, ("VolumeName",), careful=True)
    assert not fast.careful and careful.careful
    pd.testing.assert_frame_equal(fast.frame, careful.frame)
    assert fast.frame["_line"].tolist() == [first_line_of(text, r[0]) for r in rows[1:]]
    assert fast.frame["_lines"].tolist() == [r[3].count("\n") + 1 for r in rows[1:]]
    # CRLF line ends, CRLF inside quoted fields and a BOM: still the fast parse, the same values.
    crlf = write(
        tmp_path / "c",
        REPORTS,
        b"\xef\xbb\xbf" + to_csv(rows, newline="\r\n").replace("\n", "\r\n").replace("\r\r", "\r").encode(),
    )
    fast_crlf = read_csv_file(crlf, ("VolumeName",))
    careful_crlf = read_csv_file(crlf, ("VolumeName",), careful=True)
    assert not fast_crlf.careful and fast_crlf.columns[0] == "VolumeName"
    pd.testing.assert_frame_equal(fast_crlf.frame, careful_crlf.frame)
    assert fast_crlf.frame["_line"].tolist() == fast.frame["_line"].tolist()
    assert fast_crlf.frame["Findings_EN"].str.replace("\r\n", "\n").tolist() == fast.frame["Findings_EN"].tolist()
    # Blank lines between records: the careful parse numbers around them.
    spaced = write(tmp_path / "b", REPORTS, text.replace("\n" + rows[5][0], "\n\n" + rows[5][0]))
    blank = read_csv_file(spaced, ("VolumeName",))
    assert blank.careful and blank.frame["_line"].iloc[4] == fast.frame["_line"].iloc[4] + 1
    assert not blank.damaged


def test_crosscheck_both_directions(fixtures: Path, tmp_path: Path) -> None:
    labels = fixture_rows(fixtures, LABELS)
    reports = fixture_rows(fixtures, REPORTS)
    write(tmp_path, LABELS, to_csv([*labels, ["valid_99999_a_1.nii.gz", *(["0"] * len(CTRATE_LABELS))]]))
    write(tmp_path, REPORTS, to_csv(multiline(reports)))
    counts = crosscheck(CtrateLayout.resolve(tmp_path), ("valid",))["valid"]
    only_reports = sorted({r[0] for r in reports[1:]} - {r[0] for r in labels[1:]})
    assert counts["reports"] == len(reports) - 1 and counts["labels"] == len(labels)
    assert counts["reports_without_labels"] == len(only_reports)
    assert counts["reports_without_labels_examples"] == only_reports[:5]
    assert counts["labels_without_reports"] == 1
    assert counts["labels_without_reports_examples"] == ["valid_99999_a_1.nii.gz"]
    (tmp_path / REPORTS).unlink()
    skipped = crosscheck(CtrateLayout.resolve(tmp_path), ("valid",))["valid"]
    assert skipped["reports_without_labels"] is None and "validation_reports.csv: file not found" in skipped["skipped"]


# ---------------------------------------------------------------- through Dagster


def _materialize(root: Path, out: Path, selection: list[str], tags: dict[str, str] | None = None):  # type: ignore[no-untyped-def]
    from dagster import DagsterInstance, materialize

    from rad3d.definitions import build_definitions
    from tests.dagster_runs import SHARD_RANGE

    defs = build_definitions(ctrate_root=str(root), out_dir=str(out), splits="valid")
    return materialize(
        list(defs.assets),
        resources=dict(defs.resources),
        selection=selection,
        tags=tags or SHARD_RANGE,  # the ingest assets are shard-partitioned
        instance=DagsterInstance.ephemeral(),
        raise_on_error=False,
    )


def _closed_qa(root: Path, out: Path):  # type: ignore[no-untyped-def]
    """Tasks 4-6 over their whole range, from the tables the first run wrote."""
    range_tags = {"dagster/asset_partition_range_start": "4", "dagster/asset_partition_range_end": "6"}
    result = _materialize(root, out, ["closed_qa"], range_tags)
    assert result.success
    assert all((out / "tables" / "closed_qa" / f"{task}.parquet").exists() for task in "456")
    return result


def _materialized(result) -> set[str]:  # type: ignore[no-untyped-def]
    return {e.asset_key.to_user_string() for e in result.get_asset_materialization_events()}


def _checks(result) -> dict[str, bool]:  # type: ignore[no-untyped-def]
    return {
        e.asset_check_evaluation_data.check_name: e.asset_check_evaluation_data.passed
        for e in result.all_events
        if e.event_type_value == "ASSET_CHECK_EVALUATION"
    }


SELECTION = ["ctrate_labels", "ctrate_reports", "patients", "temporal_sequences"]


@pytest.mark.slow
def test_damaged_reports_through_dagster(fixtures: Path, tmp_path: Path) -> None:
    """A bad byte and a broken quote in the reports: every asset builds, the two records are quarantined;
    a header-only reports file fails ctrate_reports alone, with one line, and Tasks 4-6 still build."""
    from rad3d.build import root_cause

    root = tmp_path / "ctrate"
    write(root, LABELS, (fixtures / "ctrate_mini" / LABELS).read_bytes())
    rows = multiline(fixture_rows(fixtures, REPORTS))
    text = to_csv(rows)
    lines = physical_lines(text)
    i = first_line_of(text, rows[9][0]) - 1
    head, _, tail = lines[i].rpartition('",')
    lines[i] = f"{head},{tail}"  # broken quote
    data = "\n".join(lines).encode()
    at = data.index(b" the ", data.index(("\n" + rows[30][0]).encode()))
    write(root, REPORTS, data[:at] + b" th\xe9 " + data[at + 5 :])  # a latin-1 byte
    out = tmp_path / "out"
    result = _materialize(root, out, SELECTION)
    assert result.success
    assert _materialized(result) == set(SELECTION)
    _closed_qa(root, out)
    q = pd.read_csv(out / "quarantine" / "ctrate_reports.csv", dtype=str, keep_default_na=False)
    assert len(q) == 2
    assert {r.split(" ")[0] for r in q["reason"]} == {"broken", "not"}
    assert set(q.columns) == {"source", "line", "lines", "VolumeName", "reason", "raw"}
    checks = _checks(result)
    assert checks["no_quarantined_rows"] is False  # the reports' check warns (the labels' passes)
    assert checks["labels_match_reports"] is False  # the fixture has two reports without labels
    cross = json.loads((out / "quarantine" / "crosscheck.json").read_text())
    assert cross["valid"]["reports_without_labels"] == 2 and cross["valid"]["labels_without_reports"] == 0

    reports = write(root, REPORTS, text.split("\n", 1)[0] + "\n")
    failed = _materialize(root, tmp_path / "out2", SELECTION)
    assert not failed.success
    assert _materialized(failed) == set(SELECTION) - {"ctrate_reports"}
    failures = [e for e in failed.all_events if e.is_step_failure]
    assert len(failures) == 1
    assert root_cause(failures[0].step_failure_data.error) == f"{reports}: header only, no rows"
    _closed_qa(root, tmp_path / "out2")
    cross = json.loads((tmp_path / "out2" / "quarantine" / "crosscheck.json").read_text())
    assert cross["valid"]["reports_without_labels"] == 0  # header-only: no report listed
    assert cross["valid"]["labels_without_reports"] == len(fixture_rows(fixtures, LABELS)) - 1


def test_drop_fingerprints_survive_a_damaged_reports_file(fixtures: Path, tmp_path: Path) -> None:
    """The drop sensor reads the same files: a bad byte changes only the damaged patient's shard."""
    from rad3d_pipeline.ingest.drops import changed_shards, shard_fingerprints
    from rad3d_pipeline.ingest.patients import shard_key

    rows = fixture_rows(fixtures, REPORTS)
    data = to_csv(rows).encode("utf-8")
    write(tmp_path, REPORTS, data)
    layout = CtrateLayout.resolve(tmp_path)
    before = shard_fingerprints(layout, ("valid",), 16)
    target = rows[10][0]
    at = data.index(b"normal", data.index(b"\n" + target.encode()) + 1)
    write(tmp_path, REPORTS, data[:at] + "n\u00e9rmal".encode("latin-1") + data[at + 6 :])
    after = shard_fingerprints(layout, ("valid",), 16)
    patient = "_".join(target.split("_")[:2])
    assert changed_shards(before, after) == [shard_key(patient, 16)]

"""Reading and validating a CT-RATE download (reports, labels, metadata, volume tree).

File-level problems (missing, unreadable, empty, header-only, a required column missing, no
usable row at all) raise :class:`CtrateInputError` (an ``InputFileError``) with one line naming
the file, the line and the reason. Row problems set the record aside in a quarantine table
(:data:`~rad3d_pipeline.ingest.ctrate_csv.QUARANTINE_COLUMNS`: file, first physical line, physical lines
spanned, VolumeName, reason, raw text) and the good rows flow on: damage to the record itself
(an undecodable byte, a broken quote, a wrong field count; see :mod:`rad3d_pipeline.ingest.ctrate_csv`),
a malformed VolumeName, a volume of the wrong split, a bad value, and duplicated VolumeNames
(identical copies collapsed to the first, each copy noted; conflicting ones all quarantined as
"conflicting duplicate").
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from rad3d_pipeline.ingest.ctrate_csv import (
    LINE,
    QUARANTINE_COLUMNS,
    SPAN,
    CsvFile,
    fmt_line,
    read_csv_file,
    volume_names_in,
)
from rad3d_pipeline.ingest.ctrate_csv import CtrateInputError as CtrateInputError
from rad3d_pipeline.ingest.labels import CTRATE_LABELS

Split = Literal["train", "valid"]
SPLITS: tuple[Split, ...] = ("train", "valid")

VOLUME_NAME_RE = re.compile(r"^(train|valid)_(\d+)_([a-z])_(\d+)\.nii\.gz$")
_VOLUME_NAME_GROUPS = r"^(?P<split>train|valid)_(?P<patient>\d+)_(?P<scan>[a-z])_(?P<recon>\d+)\.nii\.gz$"

REPORT_COLUMNS: tuple[str, ...] = ("VolumeName", "Findings_EN", "Impressions_EN")
METADATA_COLUMNS: tuple[str, ...] = (
    "VolumeName",
    "XYSpacing",
    "ZSpacing",
    "RescaleSlope",
    "RescaleIntercept",
)
VOLUME_ID_COLUMNS: tuple[str, ...] = ("VolumeName", "split", "patient_id", "patient", "scan", "recon")

# CT-RATE spells the validation split "validation" in some file names and "valid" in others.
_REPORT_FILE = {"train": "train_reports.csv", "valid": "validation_reports.csv"}
_LABEL_FILE = {"train": "train_predicted_labels.csv", "valid": "valid_predicted_labels.csv"}
_METADATA_FILE = {"train": "train_metadata.csv", "valid": "validation_metadata.csv"}


@dataclass(frozen=True)
class VolumeId:
    """The parts of a CT-RATE VolumeName such as ``valid_1006_c_2.nii.gz``."""

    volume_name: str
    split: Split
    patient: int
    scan: str
    recon: int

    @property
    def patient_id(self) -> str:
        """Patient key unique across splits (``valid_1006``)."""
        return f"{self.split}_{self.patient}"


def parse_volume_name(name: str) -> VolumeId:
    """Parse a VolumeName; raise ValueError with the reason when malformed."""
    match = VOLUME_NAME_RE.match(name)
    if match is None:
        raise ValueError(
            f"malformed VolumeName {name!r}: expected <train|valid>_<patient>_<scan letter>_<recon>.nii.gz"
        )
    split, patient, scan, recon = match.groups()
    return VolumeId(name, split, int(patient), scan, int(recon))  # type: ignore[arg-type]


def parse_splits(value: str) -> tuple[Split, ...]:
    """``valid``, ``train`` or ``all`` (also accepts ``validation`` and ``test``)."""
    aliases: dict[str, tuple[Split, ...]] = {
        "valid": ("valid",),
        "validation": ("valid",),
        "test": ("valid",),
        "train": ("train",),
        "all": SPLITS,
    }
    try:
        return aliases[value.strip().lower()]
    except KeyError:
        raise ValueError(f"unknown split {value!r}: use valid, train or all") from None


@dataclass(frozen=True)
class CtrateLayout:
    """Where CT-RATE's files are, with or without the ``dataset/`` folder level."""

    base: Path

    @classmethod
    def resolve(cls, root: Path | str) -> CtrateLayout:
        root = Path(root).expanduser()
        if not root.is_dir():
            raise CtrateInputError(f"{root}: CT-RATE root folder not found")
        nested = root / "dataset"
        known = ("radiology_text_reports", "multi_abnormality_labels", "metadata", "train", "valid")
        if nested.is_dir() and any((nested / k).exists() for k in known):
            return cls(nested)
        return cls(root)

    def reports_csv(self, split: Split) -> Path:
        return self.base / "radiology_text_reports" / _REPORT_FILE[split]

    def labels_csv(self, split: Split) -> Path:
        return self.base / "multi_abnormality_labels" / _LABEL_FILE[split]

    def metadata_csv(self, split: Split) -> Path:
        return self.base / "metadata" / _METADATA_FILE[split]

    def volume_path(self, volume_name: str) -> Path:
        vid = parse_volume_name(volume_name)
        patient_dir = f"{vid.split}_{vid.patient}"
        return self.base / vid.split / patient_dir / f"{patient_dir}_{vid.scan}" / volume_name


@dataclass
class LoadResult:
    """Good rows plus the quarantined ones (and counts worth showing, e.g. collapsed duplicates)."""

    table: pd.DataFrame
    quarantine: pd.DataFrame
    counts: dict[str, int] = field(default_factory=dict)


def empty_quarantine() -> pd.DataFrame:
    ints = ("line", "lines")
    return pd.DataFrame({c: pd.Series(dtype="int64" if c in ints else "object") for c in QUARANTINE_COLUMNS})


def _quarantine_rows(csv_file: CsvFile, frame: pd.DataFrame, mask: pd.Series, reasons: pd.Series) -> pd.DataFrame:
    bad = frame.loc[mask]
    lines = bad[LINE].to_numpy(dtype="int64")
    spans = bad[SPAN].to_numpy(dtype="int64")
    return pd.DataFrame(
        {
            "source": str(csv_file.path),
            "line": lines,
            "lines": spans,
            "VolumeName": bad["VolumeName"].astype(object).to_numpy(),
            "reason": reasons.loc[mask].astype(object).to_numpy(),
            "raw": [csv_file.raw(int(line), int(span)) for line, span in zip(lines, spans, strict=True)],
        },
        columns=list(QUARANTINE_COLUMNS),
    )


def _read_csv(path: Path, required: tuple[str, ...]) -> tuple[CsvFile, list[pd.DataFrame]]:
    """The file's readable records, and its damaged ones as a quarantine table."""
    csv_file = read_csv_file(path, required)
    damaged = [pd.DataFrame(csv_file.damaged, columns=list(QUARANTINE_COLUMNS))] if csv_file.damaged else []
    return csv_file, damaged


def _validate_volume_names(csv_file: CsvFile, split: Split) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Quarantine malformed and wrong-split VolumeNames; add the id columns."""
    frame = csv_file.frame
    quarantined: list[pd.DataFrame] = []
    names = frame["VolumeName"].str.strip()
    # pyarrow's regex kernel: one C pass instead of a Python regex per row (50k rows in ms).
    matched = pc.extract_regex(pa.array(names.to_numpy(dtype=object), type=pa.string()), _VOLUME_NAME_GROUPS)
    parts = {
        key: pd.Series(pc.struct_field(matched, key).to_numpy(zero_copy_only=False), index=frame.index)
        for key in ("split", "patient", "scan", "recon")
    }
    malformed = parts["split"].isna()
    wrong_split = ~malformed & (parts["split"] != split)
    bad = malformed | wrong_split
    if bad.any():
        reasons = pd.Series("", index=frame.index, dtype=object)
        for idx in frame.index[bad]:
            if malformed.at[idx]:
                reasons.at[idx] = (
                    f"malformed VolumeName {names.at[idx]!r}: expected <split>_<patient>_<scan>_<recon>.nii.gz"
                )
            else:
                reasons.at[idx] = f"VolumeName belongs to split {parts['split'].at[idx]}, file is {split}"
        quarantined.append(_quarantine_rows(csv_file, frame, bad, reasons))
    keep = ~bad
    good = frame.loc[keep].copy()
    good["VolumeName"] = names.loc[keep]
    good["split"] = parts["split"].loc[keep].astype(str)
    good["patient"] = parts["patient"].loc[keep].astype("int64")
    good["patient_id"] = good["split"] + "_" + parts["patient"].loc[keep].astype(str)
    good["scan"] = parts["scan"].loc[keep].astype(str)
    good["recon"] = parts["recon"].loc[keep].astype("int64")
    return good, quarantined


def _split_duplicates(
    csv_file: CsvFile, good: pd.DataFrame, value_columns: list[str], quarantined: list[pd.DataFrame]
) -> tuple[pd.DataFrame, int]:
    """Collapse identical duplicate VolumeNames (the first kept), quarantine every row of a conflicting one.

    ``value_columns`` hold the (normalised) values compared. Returns the rows kept and how many
    identical duplicates were collapsed.
    """
    repeated = good["VolumeName"].duplicated(keep=False)
    if not repeated.any():
        return good, 0
    reasons = pd.Series("", index=good.index, dtype=object)
    collapsed = 0
    for name, group in good.loc[repeated].groupby("VolumeName", sort=False):
        lines = group[LINE].tolist()
        values = group[value_columns].astype(object)
        if len(values.drop_duplicates()) == 1:
            for idx in group.index[1:]:
                reasons.at[idx] = f"identical duplicate of line {fmt_line(lines[0])} (collapsed)"
                collapsed += 1
            continue
        differing = [c.removeprefix("_cmp_") for c in value_columns if values[c].nunique() > 1]
        shown = ", ".join(differing[:4]) + (f" and {len(differing) - 4} more" if len(differing) > 4 else "")
        where = ", ".join(fmt_line(n) for n in lines)
        for idx in group.index:
            reasons.at[idx] = f"conflicting duplicate: {name} is on lines {where} with different {shown}"
    bad = reasons != ""
    quarantined.append(_quarantine_rows(csv_file, good, bad, reasons))
    return good.loc[~bad], collapsed


def _finish(
    csv_file: CsvFile, good: pd.DataFrame, quarantined: list[pd.DataFrame], columns: list[str], collapsed: int
) -> LoadResult:
    """The table in file order, the quarantine by line; a file with records but none usable is an error."""
    quarantine = pd.concat(quarantined, ignore_index=True) if quarantined else empty_quarantine()
    quarantine = quarantine.sort_values("line", kind="stable").reset_index(drop=True)
    quarantine["line"] = quarantine["line"].astype("int64")
    quarantine["lines"] = quarantine["lines"].astype("int64")
    if good.empty and len(quarantine):
        first = quarantine.iloc[0]
        raise CtrateInputError(
            f"{csv_file.path}: no usable rows: all {csv_file.records:,} record(s) quarantined "
            f"(first, line {fmt_line(int(first['line']))}: {first['reason']})"
        )
    table = good[columns].reset_index(drop=True)
    return LoadResult(table, quarantine, {"identical_duplicates_collapsed": collapsed} if collapsed else {})


def read_labels(layout: CtrateLayout, split: Split) -> LoadResult:
    """The 18 abnormality labels of one split, validated; labels as int8 0/1."""
    csv_file, quarantined = _read_csv(layout.labels_csv(split), ("VolumeName", *CTRATE_LABELS))
    good, more = _validate_volume_names(csv_file, split)
    quarantined += more
    labels = list(CTRATE_LABELS)
    values = good[labels].apply(lambda col: col.str.strip())
    not_binary = ~values.isin(["0", "1"])
    bad_rows = not_binary.any(axis=1)
    if bad_rows.any():
        reasons = pd.Series("", index=good.index, dtype=object)
        for idx in good.index[bad_rows]:
            cols = [c for c in CTRATE_LABELS if not_binary.at[idx, c]]
            shown = ", ".join(f"{c}={values.at[idx, c]!r}" for c in cols)
            reasons.at[idx] = f"label not 0/1: {shown}"
        quarantined.append(_quarantine_rows(csv_file, good, bad_rows, reasons))
        good = good.loc[~bad_rows]
        values = values.loc[~bad_rows]
    good = good.copy()
    for col in CTRATE_LABELS:
        good[col] = values[col].astype("int8")
    good, collapsed = _split_duplicates(csv_file, good, labels, quarantined)
    return _finish(csv_file, good, quarantined, [*VOLUME_ID_COLUMNS, *CTRATE_LABELS], collapsed)


def read_reports(layout: CtrateLayout, split: Split) -> LoadResult:
    """The English reports of one split (findings and impressions), validated."""
    csv_file, quarantined = _read_csv(layout.reports_csv(split), REPORT_COLUMNS)
    good, more = _validate_volume_names(csv_file, split)
    quarantined += more
    empty = (good["Findings_EN"].str.strip() == "") & (good["Impressions_EN"].str.strip() == "")
    if empty.any():
        reasons = pd.Series("report has neither findings nor impressions", index=good.index, dtype=object)
        quarantined.append(_quarantine_rows(csv_file, good, empty, reasons))
        good = good.loc[~empty]
    extra = [c for c in ("ClinicalInformation_EN", "Technique_EN") if c in good.columns]
    texts = [*extra, "Findings_EN", "Impressions_EN"]
    compared = good.assign(**{f"_cmp_{c}": good[c].str.strip() for c in texts})
    compared, collapsed = _split_duplicates(csv_file, compared, [f"_cmp_{c}" for c in texts], quarantined)
    return _finish(csv_file, compared, quarantined, [*VOLUME_ID_COLUMNS, *texts], collapsed)


def _parse_xy_spacing(value: str) -> float:
    cleaned = value.strip().strip("[]()")
    parts = [p for p in re.split(r"[,\s]+", cleaned) if p]
    if not parts:
        raise ValueError("empty")
    numbers = [float(p) for p in parts]
    if len(numbers) == 2 and abs(numbers[0] - numbers[1]) > 1e-6:
        raise ValueError(f"anisotropic in-plane spacing {numbers}")
    return numbers[0]


def read_metadata(layout: CtrateLayout, split: Split) -> LoadResult:
    """Scan metadata of one split: spacings (mm) and the DICOM rescale slope and intercept."""
    csv_file, quarantined = _read_csv(layout.metadata_csv(split), METADATA_COLUMNS)
    good, more = _validate_volume_names(csv_file, split)
    quarantined += more
    xy = pd.Series(float("nan"), index=good.index)
    reasons = pd.Series("", index=good.index, dtype=object)
    for idx, raw in good["XYSpacing"].items():
        try:
            xy.at[idx] = _parse_xy_spacing(raw)
        except ValueError as exc:
            reasons.at[idx] = f"unreadable XYSpacing {raw!r} ({exc})"
    numeric = {c: pd.to_numeric(good[c], errors="coerce") for c in ("ZSpacing", "RescaleSlope", "RescaleIntercept")}
    for col, values in numeric.items():
        bad_num = values.isna() & (reasons == "")
        reasons = reasons.where(~bad_num, f"{col} is not a number")
    bad = reasons != ""
    if bad.any():
        quarantined.append(_quarantine_rows(csv_file, good, bad, reasons))
    extra = [c for c in good.columns if c not in (*VOLUME_ID_COLUMNS, *METADATA_COLUMNS, LINE, SPAN)]
    compared = [*METADATA_COLUMNS[1:], *extra]
    good = good.assign(**{f"_cmp_{c}": good[c].str.strip() for c in compared})
    good["XYSpacing"] = xy
    for col, values in numeric.items():
        good[col] = values
    good = good.loc[~bad]
    good, collapsed = _split_duplicates(csv_file, good, [f"_cmp_{c}" for c in compared], quarantined)
    return _finish(csv_file, good, quarantined, [*VOLUME_ID_COLUMNS, *METADATA_COLUMNS[1:], *extra], collapsed)


def read_splits(
    reader: Callable[[CtrateLayout, Split], LoadResult], layout: CtrateLayout, splits: tuple[Split, ...]
) -> LoadResult:
    """Apply one reader (read_labels, read_reports, read_metadata) to several splits."""
    results = [reader(layout, split) for split in splits]
    tables = [r.table for r in results]
    quarantines = [r.quarantine for r in results if len(r.quarantine)]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    quarantine = pd.concat(quarantines, ignore_index=True) if quarantines else empty_quarantine()
    counts: dict[str, int] = {}
    for result in results:
        for key, value in result.counts.items():
            counts[key] = counts.get(key, 0) + value
    return LoadResult(table, quarantine, counts)


CROSSCHECK_EXAMPLES = 5


def crosscheck(layout: CtrateLayout, splits: tuple[Split, ...]) -> dict[str, dict[str, Any]]:
    """Per split, the volumes with a report but no label row and the reverse.

    Which volumes a file lists comes from a scan of its record starts
    (:func:`~rad3d_pipeline.ingest.ctrate_csv.volume_names_in`), so a damaged record still counts as
    listed (it is in its own quarantine) and a file cut off mid-way shows as volumes missing.
    A file that cannot be read leaves its split's counts ``None`` with the reason under
    ``"skipped"``. The shape, per split::

        {"labels_file": str, "reports_file": str, "labels": int, "reports": int,
         "reports_without_labels": int, "labels_without_reports": int,
         "reports_without_labels_examples": [VolumeName, ...], "labels_without_reports_examples": [...]}
    """
    result: dict[str, dict[str, Any]] = {}
    for split in splits:
        paths = {"labels": layout.labels_csv(split), "reports": layout.reports_csv(split)}
        entry: dict[str, Any] = {f"{kind}_file": str(path) for kind, path in paths.items()}
        listed: dict[str, set[str]] = {}
        skipped: list[str] = []
        for kind, path in paths.items():
            try:
                names = volume_names_in(path)
                listed[kind] = {n for n in names if n.startswith(f"{split}_") and VOLUME_NAME_RE.match(n)}
            except CtrateInputError as exc:
                skipped.append(str(exc))
        for kind in paths:
            entry[kind] = len(listed[kind]) if kind in listed else None
        for missing, present, absent in (
            ("reports_without_labels", "reports", "labels"),
            ("labels_without_reports", "labels", "reports"),
        ):
            if skipped:
                entry[missing] = None
                entry[f"{missing}_examples"] = []
                continue
            names = sorted(listed[present] - listed[absent])
            entry[missing] = len(names)
            entry[f"{missing}_examples"] = names[:CROSSCHECK_EXAMPLES]
        if skipped:
            entry["skipped"] = "; ".join(skipped)
        result[split] = entry
    return result

"""Reading and validating a CT-RATE download (reports, labels, metadata, volume tree).

Whole-file problems (a missing file or column) raise :class:`CtrateInputError` naming the
file and the reason. Row problems (a malformed VolumeName, a label that is not 0/1, a
duplicate volume, a volume of the wrong split) set the row aside in a quarantine table
(file, row, VolumeName, reason) and the good rows flow on.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import pandas as pd

from rad3d_pipeline.labels import CTRATE_LABELS

Split = Literal["train", "valid"]
SPLITS: tuple[Split, ...] = ("train", "valid")

VOLUME_NAME_RE = re.compile(r"^(train|valid)_(\d+)_([a-z])_(\d+)\.nii\.gz$")

REPORT_COLUMNS: tuple[str, ...] = ("VolumeName", "Findings_EN", "Impressions_EN")
METADATA_COLUMNS: tuple[str, ...] = (
    "VolumeName",
    "XYSpacing",
    "ZSpacing",
    "RescaleSlope",
    "RescaleIntercept",
)
QUARANTINE_COLUMNS: tuple[str, ...] = ("source", "row", "VolumeName", "reason")
VOLUME_ID_COLUMNS: tuple[str, ...] = ("VolumeName", "split", "patient_id", "patient", "scan", "recon")

# CT-RATE spells the validation split "validation" in some file names and "valid" in others.
_REPORT_FILE = {"train": "train_reports.csv", "valid": "validation_reports.csv"}
_LABEL_FILE = {"train": "train_predicted_labels.csv", "valid": "valid_predicted_labels.csv"}
_METADATA_FILE = {"train": "train_metadata.csv", "valid": "validation_metadata.csv"}


class CtrateInputError(Exception):
    """A CT-RATE input that cannot be read at all (missing file, missing column)."""


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
    """Good rows plus the quarantined ones."""

    table: pd.DataFrame
    quarantine: pd.DataFrame


def empty_quarantine() -> pd.DataFrame:
    return pd.DataFrame({c: pd.Series(dtype="int64" if c == "row" else "object") for c in QUARANTINE_COLUMNS})


def _read_csv(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise CtrateInputError(f"{path}: file not found")
    try:
        frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise CtrateInputError(f"{path}: not a readable CSV file ({exc})") from exc
    missing = [c for c in required if c not in frame.columns]
    if missing:
        raise CtrateInputError(f"{path}: missing column(s) {', '.join(repr(c) for c in missing)}")
    return frame


def _quarantine_rows(path: Path, frame: pd.DataFrame, mask: pd.Series, reasons: pd.Series) -> pd.DataFrame:
    bad = frame.loc[mask]
    return pd.DataFrame(
        {
            "source": str(path),
            # Line number in the file: the header is line 1.
            "row": (bad.index.to_numpy() + 2).astype("int64"),
            "VolumeName": bad["VolumeName"].to_numpy(),
            "reason": reasons.loc[mask].to_numpy(),
        }
    )


def _validate_volume_names(path: Path, frame: pd.DataFrame, split: Split) -> tuple[pd.DataFrame, list[pd.DataFrame]]:
    """Quarantine malformed, wrong-split and duplicate VolumeNames; add the id columns."""
    quarantined: list[pd.DataFrame] = []
    names = frame["VolumeName"].str.strip()
    parts = names.str.extract(VOLUME_NAME_RE)
    malformed = parts[0].isna()
    reasons = "malformed VolumeName " + names.map(repr) + ": expected <split>_<patient>_<scan>_<recon>.nii.gz"
    wrong_split = ~malformed & (parts[0] != split)
    reasons = reasons.where(malformed, "VolumeName belongs to split " + parts[0].fillna("") + f", file is {split}")
    bad = malformed | wrong_split
    if bad.any():
        quarantined.append(_quarantine_rows(path, frame, bad, reasons))
    duplicate = ~bad & names.where(~bad).duplicated(keep="first")
    if duplicate.any():
        first_line = {n: i + 2 for i, n in reversed(list(enumerate(names))) if not bad.iloc[i]}
        dup_reasons = names.map(lambda n: f"duplicate volume: first seen on line {first_line.get(n, '?')}")
        quarantined.append(_quarantine_rows(path, frame, duplicate, dup_reasons))
    keep = ~(bad | duplicate)
    good = frame.loc[keep].copy()
    good["VolumeName"] = names.loc[keep]
    ids = parts.loc[keep]
    good["split"] = ids[0].astype(str)
    good["patient"] = ids[1].astype("int64")
    good["patient_id"] = good["split"] + "_" + ids[1].astype(str)
    good["scan"] = ids[2].astype(str)
    good["recon"] = ids[3].astype("int64")
    return good, quarantined


def _finish(good: pd.DataFrame, quarantined: list[pd.DataFrame], columns: list[str]) -> LoadResult:
    table = good[columns].reset_index(drop=True)
    quarantine = pd.concat(quarantined, ignore_index=True) if quarantined else empty_quarantine()
    return LoadResult(table, quarantine)


def read_labels(layout: CtrateLayout, split: Split) -> LoadResult:
    """The 18 abnormality labels of one split, validated; labels as int8 0/1."""
    path = layout.labels_csv(split)
    frame = _read_csv(path, ("VolumeName", *CTRATE_LABELS))
    good, quarantined = _validate_volume_names(path, frame, split)
    values = good[list(CTRATE_LABELS)].apply(lambda col: col.str.strip())
    not_binary = ~values.isin(["0", "1"])
    bad_rows = not_binary.any(axis=1)
    if bad_rows.any():
        reasons = pd.Series("", index=good.index)
        for idx in good.index[bad_rows]:
            cols = [c for c in CTRATE_LABELS if not_binary.at[idx, c]]
            shown = ", ".join(f"{c}={values.at[idx, c]!r}" for c in cols)
            reasons.at[idx] = f"label not 0/1: {shown}"
        quarantined.append(_quarantine_rows(path, good, bad_rows, reasons))
        good = good.loc[~bad_rows]
        values = values.loc[~bad_rows]
    good = good.copy()
    for col in CTRATE_LABELS:
        good[col] = values[col].astype("int8")
    return _finish(good, quarantined, [*VOLUME_ID_COLUMNS, *CTRATE_LABELS])


def read_reports(layout: CtrateLayout, split: Split) -> LoadResult:
    """The English reports of one split (findings and impressions), validated."""
    path = layout.reports_csv(split)
    frame = _read_csv(path, REPORT_COLUMNS)
    good, quarantined = _validate_volume_names(path, frame, split)
    empty = (good["Findings_EN"].str.strip() == "") & (good["Impressions_EN"].str.strip() == "")
    if empty.any():
        reasons = pd.Series("report has neither findings nor impressions", index=good.index)
        quarantined.append(_quarantine_rows(path, good, empty, reasons))
        good = good.loc[~empty]
    extra = [c for c in ("ClinicalInformation_EN", "Technique_EN") if c in good.columns]
    return _finish(good, quarantined, [*VOLUME_ID_COLUMNS, *extra, "Findings_EN", "Impressions_EN"])


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
    path = layout.metadata_csv(split)
    frame = _read_csv(path, METADATA_COLUMNS)
    good, quarantined = _validate_volume_names(path, frame, split)
    xy = pd.Series(float("nan"), index=good.index)
    reasons = pd.Series("", index=good.index)
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
        quarantined.append(_quarantine_rows(path, good, bad, reasons))
    good = good.copy()
    good["XYSpacing"] = xy
    for col, values in numeric.items():
        good[col] = values
    good = good.loc[~bad]
    extra = [c for c in good.columns if c not in (*VOLUME_ID_COLUMNS, *METADATA_COLUMNS)]
    return _finish(good, quarantined, [*VOLUME_ID_COLUMNS, *METADATA_COLUMNS[1:], *extra])


def read_splits(
    reader: Callable[[CtrateLayout, Split], LoadResult], layout: CtrateLayout, splits: tuple[Split, ...]
) -> LoadResult:
    """Apply one reader (read_labels, read_reports, read_metadata) to several splits."""
    results = [reader(layout, split) for split in splits]
    tables = [r.table for r in results]
    quarantines = [r.quarantine for r in results if len(r.quarantine)]
    table = pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()
    quarantine = pd.concat(quarantines, ignore_index=True) if quarantines else empty_quarantine()
    return LoadResult(table, quarantine)

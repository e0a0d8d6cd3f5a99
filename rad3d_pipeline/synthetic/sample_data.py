"""A synthetic, deterministic CT-RATE-shaped data set (both splits), so everything runs offline.

Reports are English in CT-RATE's style (findings and impressions, measurements such as
"5 mm nodule", "14 mm in thickness", "3x4 cm mass", negations, laterality, lobes); the 18
labels agree with each report; patients have one to four scans whose labels change over
time so that every temporal class occurs; one or two reconstructions per scan. Volumes
are drawn by a caller-supplied ``volume_writer`` (``rad3d sample-data`` passes the phantom
writer), which receives each volume's path in CT-RATE's tree and what its report states, and
may return the volume with the grid it actually wrote (spacing, rows, columns), which the
metadata CSV then records. Every patient whose number is a multiple of 7 carries the DICOM
intercept -8192 instead of -1024 (CT-RATE has such volumes).

A sample folder holds exactly what the last call wrote. The files written are listed in
``<out>/.rad3d-sample-data`` (and, while a call runs, appended one by one to
``<out>/.rad3d-sample-data.journal`` before each is written, so a killed call leaves nothing
unlisted); a rerun with other settings (fewer patients, another seed, no volumes) removes what it
no longer writes. A folder that holds files sample-data did not write (a real CT-RATE download,
a build's outputs) is refused with :class:`~rad3d_pipeline.common.errors.SampleDataError`, as is a
folder that predates the list unless it is recognisably an earlier sample (every metadata row
``SYNTHETIC``, every file one that sample would have written).
"""

from __future__ import annotations

import csv
import os
import random
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from rad3d_pipeline.common.errors import SampleDataError
from rad3d_pipeline.ingest.labels import CTRATE_LABELS, TEMPORAL_LABELS

MARKER = ".rad3d-sample-data"
JOURNAL = ".rad3d-sample-data.journal"
_MARKER_HEADER = "# rad3d sample-data: the files it wrote in this folder, one relative path a line"
SPLIT_FILE = {"train": "train", "valid": "validation"}
LABEL_FILE = {"train": "train", "valid": "valid"}
LOBES: tuple[tuple[str, str], ...] = (
    ("right", "upper"),
    ("right", "middle"),
    ("right", "lower"),
    ("left", "upper"),
    ("left", "lower"),
)
PREVALENCE: dict[str, float] = {
    "Medical material": 0.1,
    "Arterial wall calcification": 0.3,
    "Cardiomegaly": 0.12,
    "Pericardial effusion": 0.07,
    "Coronary artery wall calcification": 0.25,
    "Hiatal hernia": 0.12,
    "Lymphadenopathy": 0.22,
    "Emphysema": 0.2,
    "Atelectasis": 0.22,
    "Lung nodule": 0.45,
    "Lung opacity": 0.35,
    "Pulmonary fibrotic sequela": 0.25,
    "Pleural effusion": 0.12,
    "Mosaic attenuation pattern": 0.07,
    "Peribronchial thickening": 0.1,
    "Consolidation": 0.15,
    "Bronchiectasis": 0.1,
    "Interlobular septal thickening": 0.08,
}
NORMAL_SENTENCES: tuple[str, ...] = (
    "Trachea and both main bronchi are open.",
    "Calibration of the thoracic main vascular structures is natural.",
    "Thoracic esophagus calibration was normal and no significant tumoral wall thickening was detected.",
    "Both hemithorax are symmetrical.",
    "The liver parenchyma entering the cross-sectional area is of normal density.",
    "Bone structures in the study area are natural.",
)
NEGATIVE_SENTENCES: dict[str, str] = {
    "Cardiomegaly": "Heart contour and size are normal.",
    "Pericardial effusion": "Pericardial effusion-thickening was not observed.",
    "Lymphadenopathy": "No lymph node in pathological size and configuration was detected in the mediastinum.",
    "Pleural effusion": "No pleural effusion was detected.",
    "Consolidation": "No consolidation was observed in the lung parenchyma.",
    "Lung nodule": "No mass or nodule was detected in both lungs.",
    "Hiatal hernia": "No hiatal hernia was observed.",
    "Emphysema": "No emphysematous change was observed.",
}


@dataclass(frozen=True)
class SampleFinding:
    kind: str  # "nodule" | "effusion" | "mass"
    side: str
    lobe: str | None
    size_mm: float


@dataclass(frozen=True)
class SampleVolume:
    volume_name: str
    split: str
    patient: int
    scan: str
    recon: int
    labels: dict[str, int]
    findings: tuple[SampleFinding, ...]
    xy_spacing: float
    z_spacing: float
    slope: float
    intercept: float
    rows: int = 512
    columns: int = 512
    slices: int = 0  # 0 when no volume was written


@dataclass(frozen=True)
class SampleSummary:
    root: Path
    patients: dict[str, int]
    volumes: dict[str, int]
    files: list[Path] = field(default_factory=list)  # the CSV files
    removed: list[Path] = field(default_factory=list)  # files of an earlier call that this one no longer writes


@dataclass
class _Scan:
    labels: dict[str, int]
    findings: list[SampleFinding]
    findings_text: str
    impressions_text: str


def _positive_sentence(label: str, rng: random.Random, findings: list[SampleFinding]) -> tuple[str, str]:
    """(findings sentence, impressions phrase) for a positive label; records drawable findings."""
    side, lobe = rng.choice(LOBES)
    where = f"{side} lung {lobe} lobe"
    if label == "Lung nodule":
        size = rng.choice([3, 4, 5, 6, 7, 8, 9, 11, 14, 18])
        findings.append(SampleFinding("nodule", side, lobe, float(size)))
        kind = rng.choice(["solid", "calcified", "ground-glass", "subpleural"])
        return f"A {size} mm {kind} nodule is observed in the {where}.", f"{size} mm nodule in the {where}"
    if label == "Pleural effusion":
        thickness = rng.choice([8, 12, 14, 18, 22, 27])
        findings.append(SampleFinding("effusion", side, None, float(thickness)))
        return (
            f"Pleural effusion reaching {thickness} mm in thickness was observed in the {side} hemithorax.",
            f"{side.capitalize()} pleural effusion",
        )
    if label == "Consolidation":
        a, b = rng.choice([(3, 4), (2, 3), (4, 5)])
        findings.append(SampleFinding("mass", side, lobe, float(max(a, b) * 10)))
        return f"A consolidation area of {a}x{b} cm is seen in the {where}.", f"Consolidation in the {where}"
    if label == "Lymphadenopathy":
        size = rng.choice([11, 13, 15, 17])
        return (
            f"Lymph nodes with a short axis of {size} mm are observed in the {side} hilar region.",
            "Mediastinal lymphadenopathy",
        )
    if label == "Cardiomegaly":
        return "The heart size is increased (cardiomegaly).", "Cardiomegaly"
    if label == "Arterial wall calcification":
        diameter = rng.choice([3.4, 3.8, 4.1, 4.5])
        return (
            f"Atherosclerotic calcifications are observed in the aortic wall; the ascending aorta diameter is "
            f"{diameter} cm.",
            "Atherosclerotic changes in the aorta",
        )
    phrases = {
        "Medical material": ("A cardiac pacemaker is observed on the left chest wall.", "Pacemaker"),
        "Pericardial effusion": (
            "Pericardial effusion reaching 9 mm in thickness is observed.",
            "Pericardial effusion",
        ),
        "Coronary artery wall calcification": (
            "Calcific plaques are seen in the coronary arteries.",
            "Coronary calcification",
        ),
        "Hiatal hernia": ("A hiatal hernia is observed at the lower end of the esophagus.", "Hiatal hernia"),
        "Emphysema": (f"Centrilobular emphysematous changes are seen in the {where}.", "Emphysema"),
        "Atelectasis": (f"Linear atelectasis is observed in the {where}.", f"Atelectasis in the {where}"),
        "Lung opacity": (f"Patchy ground-glass opacities are seen in the {where}.", "Ground-glass opacities"),
        "Pulmonary fibrotic sequela": (f"Fibrotic sequelae are observed in the {where}.", "Fibrotic sequelae"),
        "Mosaic attenuation pattern": ("A mosaic attenuation pattern is seen in both lungs.", "Mosaic attenuation"),
        "Peribronchial thickening": ("Peribronchial thickening is observed in both lungs.", "Peribronchial thickening"),
        "Bronchiectasis": (f"Cylindrical bronchiectasis is seen in the {where}.", "Bronchiectasis"),
        "Interlobular septal thickening": (
            "Interlobular septal thickening is seen in both lungs.",
            "Interlobular septal thickening",
        ),
    }
    return phrases[label]


def _report(labels: dict[str, int], rng: random.Random) -> tuple[str, str, list[SampleFinding]]:
    findings: list[SampleFinding] = []
    sentences = list(rng.sample(NORMAL_SENTENCES, k=3))
    impressions = []
    for label in CTRATE_LABELS:
        if labels[label]:
            sentence, phrase = _positive_sentence(label, rng, findings)
            sentences.append(sentence)
            impressions.append(phrase)
        elif label in NEGATIVE_SENTENCES and rng.random() < 0.6:
            sentences.append(NEGATIVE_SENTENCES[label])
    if not impressions:
        impressions.append("No significant pathology was detected in the thorax")
    return " ".join(sentences), ". ".join(impressions) + ".", findings


# Forced label histories so that every temporal class occurs: persistent, resolved, new, absent.
_FORCED: tuple[tuple[str, tuple[int, ...]], ...] = (
    ("Lung nodule", (1, 1)),
    ("Pleural effusion", (1, 0)),
    ("Consolidation", (0, 1)),
)


def _patient_scans(rng: random.Random, forced: tuple[str, tuple[int, ...]] | None) -> list[_Scan]:
    n_scans = len(forced[1]) if forced else rng.choice([1, 1, 1, 2, 2, 3, 4])
    base = {label: int(rng.random() < PREVALENCE[label]) for label in CTRATE_LABELS}
    scans = []
    for s in range(n_scans):
        labels = dict(base)
        if s > 0:
            for label in TEMPORAL_LABELS:
                if rng.random() < 0.2:
                    labels[label] = 1 - labels[label]
            labels["Medical material"] = base["Medical material"]
        if forced:
            labels[forced[0]] = forced[1][s]
        findings_text, impressions_text, findings = _report(labels, rng)
        scans.append(_Scan(labels, findings, findings_text, impressions_text))
        base = labels
    return scans


def _number(value: float) -> int | float:
    """1.0 -> 1 as CT-RATE's CSV writes whole numbers."""
    return int(value) if float(value).is_integer() else value


def _present_files(root: Path) -> list[str]:
    """Every non-directory entry under ``root`` (links to folders included), relative, POSIX style."""
    present: list[str] = []
    for folder, dirs, files in os.walk(root):
        links = [d for d in dirs if os.path.islink(os.path.join(folder, d))]
        dirs[:] = [d for d in dirs if d not in links]
        for name in [*files, *links]:
            present.append(Path(folder, name).relative_to(root).as_posix())
    return sorted(present)


def _read_list(path: Path) -> set[str]:
    if not path.is_file():
        return set()
    lines = path.read_text(encoding="utf-8").splitlines()
    return {line for line in lines if line and not line.startswith("#")}


def _is_temp_of(rel: str, known: set[str]) -> bool:
    """``dir/.name.tmp...``: a temporary file of a writer that was writing ``dir/name``."""
    parent, _, name = rel.rpartition("/")
    if not name.startswith(".") or ".tmp" not in name:
        return False
    target = name[1:].split(".tmp", 1)[0]
    return f"{parent}/{target}".lstrip("/") in known


def _legacy_sample(root: Path, present: list[str]) -> bool:
    """A folder an earlier rad3d sample-data wrote before it kept a list: every metadata row is
    ``SYNTHETIC`` and every file is one of its CSVs or volumes (or a writer's temporary file)."""
    for prefix in ("dataset/", ""):
        csvs = {
            f"{prefix}{folder}/{name}"
            for split in SPLIT_FILE
            for folder, name in (
                ("radiology_text_reports", f"{SPLIT_FILE[split]}_reports.csv"),
                ("multi_abnormality_labels", f"{LABEL_FILE[split]}_predicted_labels.csv"),
                ("metadata", f"{SPLIT_FILE[split]}_metadata.csv"),
            )
        }
        allowed = set(csvs)
        metadata = [f"{prefix}metadata/{SPLIT_FILE[split]}_metadata.csv" for split in SPLIT_FILE]
        if not any((root / rel).is_file() for rel in metadata):
            continue
        try:
            for rel in metadata:
                if not (root / rel).is_file():
                    continue
                with (root / rel).open(newline="", encoding="utf-8") as handle:
                    for row in csv.DictReader(handle):
                        if row.get("Manufacturer") != "SYNTHETIC":
                            return False
                        name = row.get("VolumeName") or ""
                        split, _, rest = name.partition("_")
                        number, _, scan_rest = rest.partition("_")
                        letter = scan_rest.partition("_")[0]
                        allowed.add(f"{prefix}{split}/{split}_{number}/{split}_{number}_{letter}/{name}")
        except (OSError, UnicodeDecodeError, csv.Error):
            return False
        return all(rel in allowed or _is_temp_of(rel, allowed) for rel in present)
    return False


def _known_files(root: Path) -> set[str]:
    """The files an earlier call wrote here; :class:`SampleDataError` when the folder holds any other."""
    if not root.exists():
        return set()
    if not root.is_dir():
        raise SampleDataError(f"{root}: exists and is not a folder")
    present = [rel for rel in _present_files(root) if rel not in (MARKER, JOURNAL, f".{MARKER}.tmp")]
    if not present:
        return set()
    if (root / MARKER).is_file() or (root / JOURNAL).is_file():
        known = _read_list(root / MARKER) | _read_list(root / JOURNAL)
    elif _legacy_sample(root, present):
        known = set(present)
    else:
        known = set()
    foreign = [rel for rel in present if rel not in known and not _is_temp_of(rel, known)]
    if foreign:
        raise SampleDataError(
            f"{root}: holds {len(foreign)} file(s) that rad3d sample-data did not write (first: {foreign[0]}); "
            "choose an empty or new folder (a sample folder is rewritten in place, so it must only hold a sample)"
        )
    return known


def _write_list(path: Path, files: Iterable[str]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("\n".join([_MARKER_HEADER, *sorted(set(files))]) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def _remove_stale(root: Path, known: set[str], written: set[str]) -> list[Path]:
    """Remove what an earlier call wrote and this one did not, writers' leftover temporary files, and
    the folders that leaves empty."""
    doomed = [rel for rel in sorted(known - written)]
    doomed += [rel for rel in _present_files(root) if rel not in known and _is_temp_of(rel, known | written)]
    removed: list[Path] = []
    for rel in doomed:
        path = root / rel
        if path.is_symlink() or path.is_file():
            path.unlink()
            removed.append(path)
    for path in sorted({p.parent for p in removed}, key=lambda p: len(p.parts), reverse=True):
        while path != root and root in path.parents:
            try:
                path.rmdir()
            except OSError:  # not empty (or not ours to remove)
                break
            path = path.parent
    return removed


class _Journal:
    """The files of this call, listed before each is written, so that a killed call leaves none unlisted."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.written: set[str] = set()
        self._handle: IO[str] = (root / JOURNAL).open("w", encoding="utf-8")
        self._handle.write(_MARKER_HEADER + "\n")
        self._handle.flush()

    def add(self, path: Path) -> Path:
        rel = path.relative_to(self.root).as_posix()
        if rel not in self.written:
            self.written.add(rel)
            self._handle.write(rel + "\n")
            self._handle.flush()
        return path

    def close(self) -> None:
        self._handle.close()


def _check_patients(patients: int) -> None:
    if isinstance(patients, bool) or not isinstance(patients, int) or patients < 1:
        raise SampleDataError(f"--patients must be a whole number of at least 1, got {patients!r}")


def write_sample_dataset(
    out: Path,
    patients: int = 40,
    seed: int = 0,
    *,
    dataset_folder: bool = True,
    volume_writer: Callable[[Path, SampleVolume], SampleVolume | None] | None = None,
) -> SampleSummary:
    """Write the sample under ``out`` (``out/dataset/...`` when ``dataset_folder``), remove what an earlier
    call wrote there and this one does not; see the module doc.

    Raises :class:`~rad3d_pipeline.common.errors.SampleDataError` for ``patients < 1`` and for a folder that
    holds files sample-data did not write (nothing is written then).
    """
    _check_patients(patients)
    root = Path(out)
    known = _known_files(root)
    try:
        root.mkdir(parents=True, exist_ok=True)
        _write_list(root / MARKER, known)  # the union survives a call killed before it ends
        journal = _Journal(root)
    except OSError as exc:
        raise SampleDataError(f"{root}: cannot write the sample there ({exc.strerror or exc})") from exc
    try:
        summary = _write_sample(root, patients, seed, dataset_folder, volume_writer, journal)
    finally:
        journal.close()
    removed = _remove_stale(root, known, journal.written)
    _write_list(root / MARKER, journal.written)
    (root / JOURNAL).unlink(missing_ok=True)
    summary.removed.extend(removed)
    return summary


def _write_sample(
    root: Path,
    patients: int,
    seed: int,
    dataset_folder: bool,
    volume_writer: Callable[[Path, SampleVolume], SampleVolume | None] | None,
    journal: _Journal,
) -> SampleSummary:
    base = root / "dataset" if dataset_folder else root
    rng = random.Random(f"rad3d-sample:{seed}")
    n_valid = max(1, round(patients * 0.25)) if patients >= 2 else 0
    counts = {"valid": n_valid, "train": patients - n_valid}
    rows: dict[str, dict[str, list[list[object]]]] = {s: {"reports": [], "labels": [], "metadata": []} for s in counts}
    volumes_per_split = dict.fromkeys(counts, 0)
    files: list[Path] = []
    for split, n in counts.items():
        numbers = sorted(rng.sample(range(1, max(10 * n, 20)), n))
        for i, number in enumerate(numbers):
            forced = _FORCED[i % len(_FORCED)] if i < len(_FORCED) else None
            for s, scan in enumerate(_patient_scans(rng, forced)):
                letter = chr(ord("a") + s)
                xy = rng.choice([0.6, 0.68, 0.75, 0.8, 0.9])
                z = rng.choice([1.0, 1.25, 1.5, 2.0])
                for recon in range(1, rng.choice([1, 2, 2]) + 1):
                    name = f"{split}_{number}_{letter}_{recon}.nii.gz"
                    volumes_per_split[split] += 1
                    rows[split]["reports"].append(
                        [name, "Not given.", "Non-contrast chest CT.", scan.findings_text, scan.impressions_text]
                    )
                    rows[split]["labels"].append([name, *(scan.labels[label] for label in CTRATE_LABELS)])
                    z_recon = z if recon == 1 else z / 2
                    volume = SampleVolume(
                        name,
                        split,
                        number,
                        letter,
                        recon,
                        dict(scan.labels),
                        tuple(scan.findings),
                        xy,
                        z_recon,
                        1.0,
                        -8192.0 if number % 7 == 0 else -1024.0,
                    )
                    if volume_writer is not None:
                        patient_dir = f"{split}_{number}"
                        path = base / split / patient_dir / f"{patient_dir}_{letter}" / name
                        volume = volume_writer(journal.add(path), volume) or volume
                    rows[split]["metadata"].append(
                        [
                            name,
                            f"[{volume.xy_spacing}, {volume.xy_spacing}]",
                            volume.z_spacing,
                            _number(volume.slope),
                            _number(volume.intercept),
                            "SYNTHETIC",
                            volume.rows,
                            volume.columns,
                        ]
                    )
    headers = {
        "reports": ["VolumeName", "ClinicalInformation_EN", "Technique_EN", "Findings_EN", "Impressions_EN"],
        "labels": ["VolumeName", *CTRATE_LABELS],
        "metadata": [
            "VolumeName",
            "XYSpacing",
            "ZSpacing",
            "RescaleSlope",
            "RescaleIntercept",
            "Manufacturer",
            "Rows",
            "Columns",
        ],
    }
    for split in counts:
        targets = {
            "reports": base / "radiology_text_reports" / f"{SPLIT_FILE[split]}_reports.csv",
            "labels": base / "multi_abnormality_labels" / f"{LABEL_FILE[split]}_predicted_labels.csv",
            "metadata": base / "metadata" / f"{SPLIT_FILE[split]}_metadata.csv",
        }
        for kind, path in targets.items():
            path.parent.mkdir(parents=True, exist_ok=True)
            with journal.add(path).open("w", newline="", encoding="utf-8") as handle:
                writer = csv.writer(handle)
                writer.writerow(headers[kind])
                writer.writerows(rows[split][kind])
            files.append(path)
    patient_counts = dict(counts)
    return SampleSummary(root, patient_counts, volumes_per_split, files)

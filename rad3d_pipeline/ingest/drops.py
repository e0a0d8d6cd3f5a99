"""Fingerprints of a CT-RATE drop per patient shard, so a new or changed drop rebuilds only its shards.

A shard's fingerprint hashes the label and report rows of its patients and the names, sizes
and modification times of its volumes. Files that are absent count as empty.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from rad3d_pipeline.ingest.ctrate import VOLUME_NAME_RE, CtrateLayout, Split
from rad3d_pipeline.ingest.ctrate_csv import CtrateInputError, read_csv_file
from rad3d_pipeline.ingest.patients import shard_keys, shard_of


def _patient_of(volume_name: str) -> str | None:
    match = VOLUME_NAME_RE.match(volume_name)
    return f"{match.group(1)}_{match.group(2)}" if match else None


def file_digest(path: Path) -> str:
    """sha256 of a file's bytes ("" when it is absent)."""
    if not path.is_file():
        return ""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


ALL_KINDS = ("labels", "reports", "volumes")
KINDS = ("labels", "reports", "metadata", "volumes")


def shard_fingerprints(
    layout: CtrateLayout, splits: tuple[Split, ...], n_shards: int, kinds: tuple[str, ...] = ALL_KINDS
) -> dict[str, str]:
    """One hash per shard key over the rows of its patients in the chosen files, and its volume tree.

    ``kinds``: any of ``labels``, ``reports``, ``metadata`` (the CSV rows) and ``volumes`` (names,
    sizes and modification times of the ``.nii.gz`` files).
    """
    unknown = set(kinds) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown fingerprint kind(s) {sorted(unknown)}; use {', '.join(KINDS)}")
    keys = shard_keys(n_shards)
    hashers = {key: hashlib.sha256() for key in keys}
    shard_of_patient: dict[str, str] = {}

    def feed(volume_name: str, payload: str) -> None:
        patient = _patient_of(volume_name)
        if patient is None:
            return
        shard = shard_of_patient.get(patient)
        if shard is None:
            shard = shard_of_patient[patient] = keys[shard_of(patient, n_shards)]
        hashers[shard].update(payload.encode("utf-8", "replace"))

    csv_of = {"labels": layout.labels_csv, "reports": layout.reports_csv, "metadata": layout.metadata_csv}
    for split in splits:
        for kind in kinds:
            if kind not in csv_of:
                continue
            path = csv_of[kind](split)
            if not path.is_file():
                continue
            try:  # damaged records are left out (the ingest quarantines them); an unreadable file counts as empty
                frame = read_csv_file(path, ("VolumeName",)).frame
            except CtrateInputError:
                continue
            rows = ["\x1f".join(values) for values in frame.astype(str).to_numpy(dtype=object).tolist()]
            for name, row in zip(frame["VolumeName"].astype(str), rows, strict=True):
                feed(name, f"{path.name}\x1e{row}\n")
        tree = layout.base / split
        if "volumes" in kinds and tree.is_dir():
            for folder, _, files in sorted(os.walk(tree)):
                for file in sorted(files):
                    if file.endswith(".nii.gz"):
                        try:
                            stat = (Path(folder) / file).stat()
                        except OSError:  # a dangling link or a file gone since the listing
                            feed(file, f"vol\x1e{file}\x1eunreadable\n")
                            continue
                        feed(file, f"vol\x1e{file}\x1e{stat.st_size}\x1e{int(stat.st_mtime)}\n")
    return {key: hasher.hexdigest() for key, hasher in hashers.items()}


def changed_shards(previous: dict[str, str], current: dict[str, str]) -> list[str]:
    return sorted(key for key, value in current.items() if previous.get(key) != value)

"""Patients and shards: a stable hash of the patient id into N static partitions."""

from __future__ import annotations

import hashlib

import pandas as pd

DEFAULT_SHARDS = 16
PATIENT_COLUMNS: tuple[str, ...] = ("patient_id", "split", "patient", "scans", "volumes_per_scan", "n_scans", "shard")


def shard_of(patient_id: str, n_shards: int) -> int:
    """Shard number of a patient: independent of Python's hash seed and of the run."""
    if n_shards < 1:
        raise ValueError(f"n_shards must be at least 1, got {n_shards}")
    digest = hashlib.blake2b(patient_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % n_shards


def shard_keys(n_shards: int) -> list[str]:
    """Partition keys of the shards, zero-padded so they sort: ``00`` ... ``15``."""
    width = max(2, len(str(n_shards - 1)))
    return [f"{i:0{width}d}" for i in range(n_shards)]


def shard_key(patient_id: str, n_shards: int) -> str:
    return shard_keys(n_shards)[shard_of(patient_id, n_shards)]


def shard_column(patient_ids: pd.Series, n_shards: int) -> pd.Series:
    """Shard key per row, computed once per distinct patient."""
    keys = shard_keys(n_shards)
    unique = patient_ids.unique()
    mapping = {pid: keys[shard_of(pid, n_shards)] for pid in unique}
    return patient_ids.map(mapping).astype(str)


def build_patients(volumes: pd.DataFrame, n_shards: int) -> pd.DataFrame:
    """One row per patient from a table of volume ids (VolumeName, split, patient_id, patient, scan, recon).

    ``scans`` lists the scan letters in time order; ``volumes_per_scan`` the number of
    reconstructions of each, in the same order.
    """
    if volumes.empty:
        return pd.DataFrame({c: pd.Series(dtype="object") for c in PATIENT_COLUMNS})
    per_scan = (
        volumes.groupby(["patient_id", "split", "patient", "scan"], sort=True)["VolumeName"].nunique().reset_index()
    )
    grouped = per_scan.groupby(["patient_id", "split", "patient"], sort=False)
    patients = grouped.agg(scans=("scan", list), volumes_per_scan=("VolumeName", list)).reset_index()
    patients["n_scans"] = patients["scans"].map(len).astype("int64")
    patients["shard"] = shard_column(patients["patient_id"], n_shards)
    patients = patients.sort_values(["split", "patient"], kind="stable").reset_index(drop=True)
    return patients[list(PATIENT_COLUMNS)]


def first_reconstructions(volumes: pd.DataFrame) -> pd.DataFrame:
    """The first reconstruction of every scan (lowest recon number), in time order per patient."""
    ordered = volumes.sort_values(["patient_id", "scan", "recon"], kind="stable")
    return ordered.drop_duplicates(["patient_id", "scan"], keep="first").reset_index(drop=True)

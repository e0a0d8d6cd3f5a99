"""Throughput of the core's Tasks 4-6 on a synthetic label table (default 50,000 volumes).

Reports seconds per stage and, as a same-process reference, a plain-Python per-row
implementation of the temporal rule over the same patients (ratio = reference / core).

    .venv/bin/python benchmarks/closed_tasks_throughput.py [--volumes 50000]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import pandas as pd

from rad3d_pipeline.closed_qa.existence import build_task4
from rad3d_pipeline.closed_qa.temporal import build_sequences, build_task5, build_task6, temporal_class
from rad3d_pipeline.ingest.labels import CTRATE_LABELS, TEMPORAL_LABELS


def synthetic_labels(n_volumes: int, seed: int = 0) -> pd.DataFrame:
    """About CT-RATE's shape: 1-4 scans per patient, 1-2 reconstructions per scan."""
    rng = np.random.default_rng(seed)
    names, patients, scans, recons = [], [], [], []
    patient = 0
    while len(names) < n_volumes:
        patient += 1
        for s in range(int(rng.choice([1, 1, 1, 2, 2, 3, 4]))):
            for r in range(int(rng.integers(1, 3))):
                names.append(f"train_{patient}_{chr(97 + s)}_{r + 1}.nii.gz")
                patients.append(patient)
                scans.append(chr(97 + s))
                recons.append(r + 1)
    names, patients, scans, recons = names[:n_volumes], patients[:n_volumes], scans[:n_volumes], recons[:n_volumes]
    frame = pd.DataFrame(
        {
            "VolumeName": names,
            "split": "train",
            "patient": patients,
            "patient_id": [f"train_{p}" for p in patients],
            "scan": scans,
            "recon": recons,
        }
    )
    values = (rng.random((n_volumes, len(CTRATE_LABELS))) < 0.2).astype(np.int8)
    return pd.concat([frame, pd.DataFrame(values, columns=list(CTRATE_LABELS))], axis=1)


def reference_temporal(labels: pd.DataFrame) -> int:
    """Row-at-a-time Python over dict records: what a straightforward script would do."""
    by_patient: dict[str, dict[str, dict[str, int]]] = {}
    for rec in labels.to_dict("records"):
        scans = by_patient.setdefault(rec["patient_id"], {})
        if rec["scan"] not in scans or rec["recon"] == 1:
            scans[rec["scan"]] = rec
    n = 0
    for scans in by_patient.values():
        if len(scans) < 2:
            continue
        order = sorted(scans)
        for label in TEMPORAL_LABELS:
            history = [scans[s][label] for s in order[:-1]]
            temporal_class(history, scans[order[-1]][label])
            n += 1
    return n


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--volumes", type=int, default=50_000)
    args = parser.parse_args()
    labels = synthetic_labels(args.volumes)
    timings: dict[str, float] = {}
    t0 = time.perf_counter()
    t4 = build_task4(labels)
    timings["task4"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    seq = build_sequences(labels)
    timings["sequences"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    t5 = build_task5(seq)
    timings["task5"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    t6 = build_task6(seq)
    timings["task6"] = time.perf_counter() - t0
    total = sum(timings.values())
    t0 = time.perf_counter()
    ref_rows = reference_temporal(labels)
    ref = time.perf_counter() - t0
    print(f"volumes: {len(labels)}, patients: {labels.patient_id.nunique()}")
    print(f"rows: task4 {len(t4)}, task5 {len(t5)}, task6 {len(t6)} (reference temporal rows {ref_rows})")
    for name, sec in timings.items():
        print(f"  {name:<10} {sec:6.2f} s")
    print(f"total Tasks 4-6: {total:.2f} s (target < 10 s on one core)")
    print(
        f"temporal rule: core {timings['sequences']:.2f} s vs row-by-row reference {ref:.2f} s "
        f"(ratio {ref / max(timings['sequences'], 1e-9):.2f}x)"
    )


if __name__ == "__main__":
    main()

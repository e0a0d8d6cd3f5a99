"""CT-RATE scale, measured: a closed-tasks build (Tasks 4-6, both splits) over about 50,000 label rows.

Builds a CT-RATE-shaped tree by replicating the public fixture ``ctrate_mini`` (labels and
reports) under new patient ids, about 6% of the copies in ``valid`` and the rest in ``train``
as in CT-RATE, into a temporary folder (never the repository). Then runs the build the way a
user does, ``rad3d build --ctrate-root TREE --out OUT --tasks 4,5,6 --split all``, as one child
process, and reports:

- the wall time of the command and the peak memory of its whole process tree (the sum of the
  resident sizes of the process and its descendants, sampled from /proc every 20 ms, and the
  kernel's largest single-process peak from ``getrusage(RUSAGE_CHILDREN)``);
- its CPU time (user + system, ``getrusage``), which a machine shared with other work inflates less
  than the wall time;
- per-stage times from the Dagster run's own step events (STEP_START to STEP_SUCCESS per asset);
- the same build on the fixture-size tree (one copy) as a reference run in this process, so the
  fixed cost (imports, Dagster runs) is apart from what grows with the data.

Target (issue 13, item 9): under 30 s and under 3 GB on 2 cores.

    .venv/bin/python benchmarks/closed_tasks_scale.py [--rows 50000] [--keep DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(os.environ.get("RAD3D_FIXTURES", REPO.parent / "shared" / "fixtures")) / "ctrate_mini"
VALID_SHARE = 3_039 / 50_188  # CT-RATE: validation volumes over all volumes
LABELS = ("multi_abnormality_labels", {"train": "train_predicted_labels.csv", "valid": "valid_predicted_labels.csv"})
REPORTS = ("radiology_text_reports", {"train": "train_reports.csv", "valid": "validation_reports.csv"})
TARGET_SECONDS = 30.0
TARGET_BYTES = 3 * 1024**3


def _renamed(frame: pd.DataFrame, split: str, number: dict[str, int]) -> pd.DataFrame:
    """The fixture rows with ``valid_<p>_`` replaced by ``<split>_<number[p]>_``."""
    parts = frame["VolumeName"].str.extract(r"^valid_(\d+)_(.*)$")
    out = frame.copy()
    out["VolumeName"] = split + "_" + parts[0].map(lambda p: str(number[p])) + "_" + parts[1]
    return out


def build_tree(root: Path, rows: int, fixture: Path = FIXTURE) -> dict[str, int]:
    """A CT-RATE tree of about ``rows`` label rows (and as many reports); returns rows per split."""
    labels = pd.read_csv(fixture / LABELS[0] / LABELS[1]["valid"], dtype=str, keep_default_na=False)
    reports = pd.read_csv(fixture / REPORTS[0] / REPORTS[1]["valid"], dtype=str, keep_default_na=False)
    patients = sorted(set(labels["VolumeName"].str.extract(r"^valid_(\d+)_")[0]), key=int)
    copies = max(2, round(rows / len(labels)))  # at least one copy per split
    n_valid = min(copies - 1, max(1, round(copies * VALID_SHARE)))
    out: dict[str, tuple[list[pd.DataFrame], list[pd.DataFrame]]] = {"train": ([], []), "valid": ([], [])}
    for copy in range(copies):
        split = "valid" if copy < n_valid else "train"
        number = {p: 100_000 + copy * len(patients) + i for i, p in enumerate(patients)}
        out[split][0].append(_renamed(labels, split, number))
        out[split][1].append(_renamed(reports[reports["VolumeName"].str.match(r"^valid_\d+_")], split, number))
    written = {}
    for split, (label_parts, report_parts) in out.items():
        if not label_parts:
            continue
        for (folder, names), parts in ((LABELS, label_parts), (REPORTS, report_parts)):
            path = root / "dataset" / folder / names[split]
            path.parent.mkdir(parents=True, exist_ok=True)
            pd.concat(parts, ignore_index=True).to_csv(path, index=False)
        written[split] = sum(len(p) for p in label_parts)
    return written


class TreeMemory:
    """Peak summed RSS of a process and its descendants, sampled from /proc."""

    def __init__(self, pid: int, interval: float = 0.02) -> None:
        self.pid, self.interval, self.peak = pid, interval, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @staticmethod
    def _children() -> dict[int, list[int]]:
        tree: dict[int, list[int]] = {}
        for entry in os.listdir("/proc"):
            if not entry.isdigit():
                continue
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            ppid = int(stat.rsplit(")", 1)[1].split()[1])
            tree.setdefault(ppid, []).append(int(entry))
        return tree

    def _rss(self) -> int:
        tree, todo, total = self._children(), [self.pid], 0
        page = os.sysconf("SC_PAGE_SIZE")
        while todo:
            pid = todo.pop()
            todo.extend(tree.get(pid, []))
            try:
                total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * page
            except (OSError, IndexError, ValueError):
                continue
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, self._rss())
            time.sleep(self.interval)

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        return self.peak


@dataclass
class BuildRun:
    seconds: float
    tree_peak: int
    largest_child_peak: int
    cpu_seconds: float
    stages: dict[str, float] = field(default_factory=dict)
    output: str = ""


def step_times(out: Path) -> dict[str, float]:
    """Seconds per step (asset) over the Dagster runs recorded under ``out/dagster_home``."""
    code = (
        "import json, sys\n"
        "from dagster import DagsterEventType, DagsterInstance\n"
        "inst = DagsterInstance.get()\n"
        "starts, times = {}, {}\n"
        "for run in inst.get_runs():\n"
        "    for rec in inst.all_logs(run.run_id):\n"
        "        ev = rec.dagster_event\n"
        "        if ev is None: continue\n"
        "        if ev.event_type == DagsterEventType.STEP_START: starts[ev.step_key] = rec.timestamp\n"
        "        elif ev.event_type == DagsterEventType.STEP_SUCCESS:\n"
        "            times[ev.step_key] = times.get(ev.step_key, 0) + rec.timestamp - starts[ev.step_key]\n"
        "json.dump(times, sys.stdout)\n"
    )
    env = {**os.environ, "DAGSTER_HOME": str((out / "dagster_home").resolve())}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    import json

    return {str(k): float(v) for k, v in json.loads(result.stdout).items()}


def run_build(tree: Path, out: Path) -> BuildRun:
    """``rad3d build --tasks 4,5,6 --split all`` as one child process, timed and memory-sampled."""
    rad3d = Path(sys.executable).with_name("rad3d")
    cmd = [str(rad3d), "build", "--ctrate-root", str(tree), "--out", str(out), "--tasks", "4,5,6", "--split", "all"]
    env = {k: v for k, v in os.environ.items() if k != "DAGSTER_HOME"}
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    before, cpu_before = usage.ru_maxrss, usage.ru_utime + usage.ru_stime
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    memory = TreeMemory(proc.pid)
    output, _ = proc.communicate()
    seconds = time.perf_counter() - started
    tree_peak = memory.stop()
    if proc.returncode != 0:
        raise SystemExit(f"build failed (exit {proc.returncode}):\n{output}")
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime - cpu_before
    largest = usage.ru_maxrss * 1024
    if largest <= before * 1024:
        largest = 0  # an earlier, bigger child holds the maximum: unknown for this run
    return BuildRun(seconds, tree_peak, largest, cpu, step_times(out), output)


def _gb(n: int) -> str:
    return f"{n / 1024**3:.2f} GB" if n else "n/a"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=50_000, help="label rows (and reports) in the tree")
    parser.add_argument("--keep", default=None, help="build in this folder and keep it (default: a temp folder)")
    parser.add_argument("--no-reference", action="store_true", help="skip the fixture-size reference run")
    args = parser.parse_args()
    if not FIXTURE.is_dir():
        raise SystemExit(f"{FIXTURE}: fixture not found (set RAD3D_FIXTURES)")
    work = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="rad3d-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        runs: dict[str, BuildRun] = {}
        sizes: dict[str, dict[str, int]] = {}
        plan = [("scale", args.rows)] + ([] if args.no_reference else [("reference", 0)])
        for name, rows in plan:
            tree, out = work / f"{name}_tree", work / f"{name}_out"
            for folder in (tree, out):
                shutil.rmtree(folder, ignore_errors=True)
            t0 = time.perf_counter()
            sizes[name] = build_tree(tree, rows)
            print(f"{name}: tree of {sizes[name]} label rows in {time.perf_counter() - t0:.1f} s", flush=True)
            runs[name] = run_build(tree, out)
            print(f"{name}: {runs[name].seconds:.1f} s, peak {_gb(runs[name].tree_peak)}", flush=True)
        print(f"\nrad3d build --tasks 4,5,6 --split all (cpus: {os.cpu_count()})")
        names = list(runs)
        stages = sorted({s for r in runs.values() for s in r.stages}, key=lambda s: -runs["scale"].stages.get(s, 0))
        print(f"  {'':<22}" + "".join(f"{n:>14}" for n in names))
        print(f"  {'label rows':<22}" + "".join(f"{sum(sizes[n].values()):>14,}" for n in names))
        print(f"  {'wall time (s)':<22}" + "".join(f"{runs[n].seconds:>14.1f}" for n in names))
        print(f"  {'CPU time (s)':<22}" + "".join(f"{runs[n].cpu_seconds:>14.1f}" for n in names))
        print(f"  {'peak RSS, tree':<22}" + "".join(f"{_gb(runs[n].tree_peak):>14}" for n in names))
        print(f"  {'peak RSS, one process':<22}" + "".join(f"{_gb(runs[n].largest_child_peak):>14}" for n in names))
        for stage in stages:
            print(f"  {'step ' + stage:<22}" + "".join(f"{runs[n].stages.get(stage, 0):>14.2f}" for n in names))
        scale = runs["scale"]
        steps = sum(scale.stages.values())
        print(f"  steps total {steps:.1f} s; outside steps (imports, planning, Dagster) {scale.seconds - steps:.1f} s")
        ok = scale.seconds < TARGET_SECONDS and scale.tree_peak < TARGET_BYTES
        print(
            f"target: < {TARGET_SECONDS:.0f} s and < {_gb(TARGET_BYTES)}: "
            f"{'met' if ok else 'NOT met'} ({scale.seconds:.1f} s, {_gb(scale.tree_peak)})"
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()

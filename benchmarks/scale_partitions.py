"""Scale, on paper and measured: rad3d's asset graph at full CT-RATE size under the production profile.

On paper: the partition count of every asset of the real asset graph (loaded with RAD3D_SHARDS=N
and the models named), the runs a whole-graph backfill launches (single-run backfill policies, as
the assets declare, vs one run per partition), the LLM requests of Tasks 1-3, scoring, judges and
the spatial judge, and the files written (Parquet tables, .npy per volume and profile, release CSVs).

Measured: a dagster-webserver loaded with the default 16 shards and with many shards (default
4096, the most RAD3D_SHARDS allows): start-up until the code location serves, and the latency of
the GraphQL queries behind the asset graph and the partition view; and the daemon's work per tick:
evaluating the weekly schedule and the CT-RATE drop sensor. Ratios are many-shards / 16-shards,
from the same machine in the same run.

    .venv/bin/python benchmarks/scale_partitions.py                 # full CT-RATE, 16 and 256 shards; measure 4096
    .venv/bin/python benchmarks/scale_partitions.py --no-measure    # on paper only (a few seconds)
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

# CT-RATE (reference facts): about 21k patients, 25k scans, 50k volumes; validation 1,304 patients.
CTRATE = {"patients": 21_304, "scans": 25_692, "volumes": 50_188, "valid_patients": 1_304}
DEFAULT_MODELS = "prior,random,M3D-LaMed-Llama-2-7B,M3D-LaMed-Phi-3-4B,RadFM,gpt-4o"
CLOSED_TEST_QUESTIONS = 29_218  # the public release's closed-ended test questions (Tasks 4-6)
TASK12_PAIRS_PER_REPORT = 6  # Figure 11: two observations (Task 1) and four anomaly pairs (Task 2)
RELEASE_FOLDERS = ("test", "train", "train_1pct", "train_10pct")
CLOSED_RELEASE_FILES = 41  # Tasks 4-6 CSV files per split folder in the public release


# ---------------------------------------------------------------- on paper (pure)


@dataclass(frozen=True)
class DataShape:
    patients: int
    scans: int
    volumes: int
    valid_patients: int
    measurement_sentences_per_report: float
    open_release_files: int
    models: int
    profiles: int
    judges: int
    consistency_sample: int = 600


def count_workload(graph: dict[str, Any], shape: DataShape) -> dict[str, Any]:
    """Runs, partitions, LLM requests and files of one whole-graph build (pure; ``graph`` from describe_graph)."""
    assets = graph["assets"]
    partitions = {name: info["partitions"] for name, info in assets.items() if not info["observable"]}
    table_files = sum(max(1, n) for name, n in partitions.items())
    # Runs: a single-run backfill policy runs a partition range in one run; without it, one run per partition.
    single_runs = len(graph["plan"])
    per_partition_runs = sum(max(1, run["partitions"]) for run in graph["plan"])
    reports = shape.scans  # reconstructions of a scan share the report: requests are per distinct report
    task3_sentences = round(reports * shape.measurement_sentences_per_report)
    candidates = reports * TASK12_PAIRS_PER_REPORT + task3_sentences
    requests = {
        "tasks_1_2_generation (one per distinct report)": reports,
        "task_3_generation (one per measurement sentence)": task3_sentences,
        "scoring (one per candidate)": candidates,
        "judges (sample x judges)": min(shape.consistency_sample, candidates) * shape.judges,
        "spatial_judge (one per curated pair, at most)": candidates,
    }
    test_questions = CLOSED_TEST_QUESTIONS + round(candidates * shape.valid_patients / shape.patients)
    files = {
        "parquet tables (one per partition)": table_files,
        "npy volumes (volumes x profiles)": shape.volumes * shape.profiles,
        "release CSVs": len(RELEASE_FOLDERS) * (CLOSED_RELEASE_FILES + shape.open_release_files),
    }
    return {
        "shards": graph["shards"],
        "asset_partitions": partitions,
        "total_partitions": sum(partitions.values()),
        "runs_single_run_policy": single_runs,
        "runs_one_per_partition": per_partition_runs,
        "llm_requests": requests,
        "llm_requests_total": sum(requests.values()),
        "model_predictions (models x test questions, at most)": shape.models * test_questions,
        "files": files,
        "files_total": sum(files.values()),
        "patients_per_shard": math.ceil(shape.patients / graph["shards"]),
        "volumes_per_shard": math.ceil(shape.volumes / graph["shards"]),
    }


# ---------------------------------------------------------------- the real graph, in a subprocess


def _describe_graph_here() -> dict[str, Any]:
    """Run inside a process started with RAD3D_SHARDS / RAD3D_MODELS: the asset graph's shape and its run plan."""
    import warnings

    warnings.filterwarnings("ignore")
    from rad3d.build import plan_runs
    from rad3d.definitions import defs
    from resources.settings import env_shards

    graph = defs.resolve_asset_graph()
    assets = {}
    for key in graph.get_all_asset_keys():
        node = graph.get(key)
        pdef = node.partitions_def
        assets[key.to_user_string()] = {
            "partitions": len(pdef.get_partition_keys()) if pdef else 0,
            "group": node.group_name,
            "observable": node.is_observable,
            "single_run": bool(node.backfill_policy and node.backfill_policy.max_partitions_per_run is None),
        }
    plan = plan_runs(defs, set(graph.materializable_asset_keys))
    return {
        "shards": env_shards(),
        "assets": assets,
        "plan": [
            {"assets": [k.to_user_string() for k in r.asset_keys], "partitions": len(r.partition_keys)} for r in plan
        ],
    }


def describe_graph(shards: int, models: str) -> dict[str, Any]:
    env = {**os.environ, "RAD3D_SHARDS": str(shards), "RAD3D_MODELS": models}
    done = subprocess.run(
        [sys.executable, __file__, "--describe-graph"], env=env, capture_output=True, text=True, check=True, cwd=REPO
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def measurement_sentence_rate() -> tuple[float, str]:
    """Distinct measurement sentences per distinct report, measured on CT-RATE's fixture reports (else the sample)."""
    import pandas as pd

    from rad3d_pipeline.sentences.segmentation import report_sentences

    fixtures = Path(os.environ.get("RAD3D_FIXTURES", REPO.parent / "shared" / "fixtures"))
    csv = fixtures / "ctrate_mini" / "radiology_text_reports" / "validation_reports.csv"
    source = f"{csv} (CT-RATE validation reports)"
    if csv.is_file():
        reports = pd.read_csv(csv)
    else:
        from rad3d_pipeline.synthetic.sample_data import write_sample_dataset

        tmp = Path(tempfile.mkdtemp(prefix="rad3d-scale-"))
        write_sample_dataset(tmp, patients=40, seed=0)
        reports = pd.concat([pd.read_csv(p) for p in tmp.rglob("*_reports.csv")], ignore_index=True)
        shutil.rmtree(tmp, ignore_errors=True)
        source = "the synthetic sample (fixtures absent)"
    reports = reports.drop_duplicates(subset=["Findings_EN", "Impressions_EN"])
    sentences = report_sentences(reports)
    measured = sentences[sentences["has_measurement"]].drop_duplicates(subset=["text"])
    return len(measured) / max(1, len(reports)), f"{source}: {len(measured)} sentences / {len(reports)} reports"


def open_release_files() -> tuple[int, str]:
    """Open-ended (Tasks 1-3) CSV files per split folder: counted in the public release fixture, else 3D-RAD's 8."""
    fixtures = Path(os.environ.get("RAD3D_FIXTURES", REPO.parent / "shared" / "fixtures"))
    test = fixtures / "3drad_release_mini" / "test"
    files = [p for p in test.glob("Task[123]_*/*.csv")] if test.is_dir() else []
    return (len(files), str(test)) if files else (8, "3D-RAD's layout (fixture absent)")


# ---------------------------------------------------------------- measured: webserver and daemon ticks


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _graphql(port: int, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
    body = json.dumps({"query": query, "variables": variables or {}}).encode()
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=body, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=300) as response:
        data = dict(json.loads(response.read()))
    if data.get("errors"):
        raise RuntimeError(f"GraphQL errors: {data['errors'][:2]}")
    return data


GRAPH_QUERY = """{ assetNodes { id assetKey { path } groupName description isPartitioned
  dependencyKeys { path } dependedByKeys { path } partitionDefinition { description
  dimensionTypes { name type } } } }"""
PARTITIONS_QUERY = """query($path: [String!]!) { assetNodeOrError(assetKey: {path: $path}) {
  ... on AssetNode { partitionKeysByDimension { name partitionKeys }
  partitionStats { numMaterialized numPartitions numFailed numMaterializing } } } }"""


def measure_webserver(shards: int, models: str, repeats: int) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="rad3d-scale-home-"))
    shutil.copyfile(REPO / "dagster.yaml", home / "dagster.yaml")
    port = _free_port()
    env = {**os.environ, "DAGSTER_HOME": str(home), "RAD3D_SHARDS": str(shards), "RAD3D_MODELS": models}
    env["RAD3D_OUT"] = str(home / "data")
    started = time.perf_counter()
    proc = subprocess.Popen(
        [str(BIN / "dagster-webserver"), "-w", "workspace.yaml", "-h", "127.0.0.1", "-p", str(port)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        while True:
            if proc.poll() is not None or time.perf_counter() - started > 600:
                raise RuntimeError(f"dagster-webserver with {shards} shards did not serve")
            try:
                if _graphql(port, "{ assetNodes { id } }")["data"]["assetNodes"]:
                    break
            except (OSError, RuntimeError):
                time.sleep(0.5)
        result = {"startup_s": time.perf_counter() - started}
        for name, query, variables in (
            ("asset_graph_query_s", GRAPH_QUERY, None),
            ("qa_candidates_partitions_query_s", PARTITIONS_QUERY, {"path": ["qa_candidates"]}),
            ("report_sentences_partitions_query_s", PARTITIONS_QUERY, {"path": ["report_sentences"]}),
        ):
            _graphql(port, query, variables)  # warm
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                _graphql(port, query, variables)
                times.append(time.perf_counter() - t0)
            result[name] = statistics.median(times)
        return result
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        shutil.rmtree(home, ignore_errors=True)


def _ticks_here(repeats: int) -> dict[str, float]:
    """Inside a process with RAD3D_SHARDS set: what the daemon evaluates per tick, timed (median)."""
    import warnings

    warnings.filterwarnings("ignore")
    from dagster import DagsterInstance, evaluate_automation_conditions

    from rad3d.definitions import build_definitions
    from rad3d_pipeline.synthetic.sample_data import write_sample_dataset

    tmp = Path(tempfile.mkdtemp(prefix="rad3d-scale-ticks-"))
    try:
        write_sample_dataset(tmp / "ct", patients=40, seed=0)
        defs = build_definitions(ctrate_root=str(tmp / "ct"), out_dir=str(tmp / "out"))
        instance = DagsterInstance.ephemeral()

        def timed(fn: Any) -> float:
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            return statistics.median(times)

        # What the daemon evaluates per tick of the rad3d_automation sensor, on an empty instance
        # (every partition missing: the most it has to request).
        return {"automation_tick_s": timed(lambda: evaluate_automation_conditions(defs=defs, instance=instance))}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def measure_ticks(shards: int, models: str, repeats: int) -> dict[str, float]:
    env = {**os.environ, "RAD3D_SHARDS": str(shards), "RAD3D_MODELS": models}
    done = subprocess.run(
        [sys.executable, __file__, "--ticks-here", str(repeats)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
    )
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# ---------------------------------------------------------------- report


def print_workload(work: dict[str, Any]) -> None:
    per_shard = f"{work['patients_per_shard']} patients, {work['volumes_per_shard']} volumes per shard"
    print(f"\n== {work['shards']} shards ({per_shard})")
    print(f"  asset partitions: {work['total_partitions']:,}")
    for name, n in sorted(work["asset_partitions"].items(), key=lambda item: -item[1]):
        if n:
            print(f"    {name:24s} {n:>8,}")
    print(
        f"  runs of a whole-graph backfill: {work['runs_single_run_policy']:,} with single-run backfill policies "
        f"(as declared), {work['runs_one_per_partition']:,} with one run per partition"
    )
    print(f"  LLM requests: {work['llm_requests_total']:,}")
    for name, n in work["llm_requests"].items():
        print(f"    {name:50s} {n:>10,}")
    key = "model_predictions (models x test questions, at most)"
    print(f"  {key}: {work[key]:,}")
    print(f"  files written: {work['files_total']:,}")
    for name, n in work["files"].items():
        print(f"    {name:50s} {n:>10,}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shards", default="16,256", help="shard counts to count on paper (default 16,256)")
    parser.add_argument("--models", default=DEFAULT_MODELS, help="models evaluated (RAD3D_MODELS)")
    parser.add_argument("--profiles", type=int, default=2, help="volume preprocessing profiles (default 2)")
    parser.add_argument("--judges", type=int, default=4, help="judges of the consistency study (default 4)")
    parser.add_argument("--measure-shards", type=int, default=4096, help="many-shards instance to measure (4096)")
    parser.add_argument("--repeats", type=int, default=5, help="timed repetitions per query (median)")
    parser.add_argument("--no-measure", action="store_true", help="on paper only")
    parser.add_argument("--json", default=None, help="also write every figure to this JSON file")
    parser.add_argument("--describe-graph", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--ticks-here", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.describe_graph:
        print(json.dumps(_describe_graph_here()))
        return 0
    if args.ticks_here:
        print(json.dumps(_ticks_here(args.ticks_here)))
        return 0

    t0 = time.perf_counter()
    rate, rate_source = measurement_sentence_rate()
    open_files, open_source = open_release_files()
    models = [m for m in args.models.split(",") if m.strip()]
    shape = DataShape(
        **CTRATE,
        measurement_sentences_per_report=rate,
        open_release_files=open_files,
        models=len(models),
        profiles=args.profiles,
        judges=args.judges,
    )
    print("Full CT-RATE:", ", ".join(f"{k} {v:,}" for k, v in CTRATE.items()))
    print(f"  measurement sentences per distinct report: {rate:.2f} ({rate_source})")
    print(f"  open-ended release files per split folder: {open_files} ({open_source})")
    print(f"  models {len(models)}, volume profiles {args.profiles}, judges {args.judges}")
    figures: dict[str, Any] = {"shape": shape.__dict__, "workload": [], "measured": {}}
    for shards in [int(s) for s in args.shards.split(",") if s.strip()]:
        work = count_workload(describe_graph(shards, args.models), shape)
        figures["workload"].append(work)
        print_workload(work)

    if not args.no_measure:
        print(f"\n== Responsiveness: 16 shards vs {args.measure_shards} shards (median of {args.repeats})")
        measured = {}
        for shards in (16, args.measure_shards):
            measured[shards] = {
                **measure_webserver(shards, args.models, args.repeats),
                **measure_ticks(shards, args.models, args.repeats),
            }
        base, big = measured[16], measured[args.measure_shards]
        print(f"  {'':38s} {'16':>10s} {args.measure_shards:>10d} {'ratio':>8s}")
        for name in base:
            ratio = big[name] / base[name] if base[name] > 0 else float("nan")
            print(f"  {name:38s} {base[name]:10.3f} {big[name]:10.3f} {ratio:8.2f}x")
        figures["measured"] = {str(k): v for k, v in measured.items()}
    print(f"\n(total {time.perf_counter() - t0:.0f} s)")
    if args.json:
        Path(args.json).write_text(json.dumps(figures, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

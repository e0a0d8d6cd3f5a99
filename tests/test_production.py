"""The production profile on real services: PostgreSQL holds the instance; a Celery worker runs a partition.

Both start here on loopback (tests/services.py): PostgreSQL from the machine image, Redis from
Debian's redis-server (``scripts/setup.sh --system`` installs it).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from tests.conftest import skip_or_fail
from tests.services import graphql, postgres_server, rad3d_ui, redis_server, wait_for_daemons

pytestmark = [pytest.mark.service, pytest.mark.slow]
warnings.filterwarnings("ignore", module="dagster")
REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent


def production_home(tmp_path: Path) -> Path:
    home = tmp_path / "dagster_home"
    home.mkdir()
    shutil.copyfile(REPO / "deploy" / "dagster.production.yaml", home / "dagster.yaml")
    return home


def cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rad3d.cli", *args], env=env, capture_output=True, text=True, timeout=900
    )


@dataclass
class ProductionInstance:
    """A real PostgreSQL server holding a production-profile DAGSTER_HOME, after a sample build."""

    tmp: Path
    home: Path
    settings: dict[str, str]

    def env(self, **extra: str) -> dict[str, str]:
        # The worker starts `celery` by name: the virtual environment's bin/ goes first on PATH.
        path = f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"
        return {**os.environ, **self.settings, **extra, "PATH": path}

    @contextmanager
    def instance(self) -> Iterator[Any]:
        from dagster import DagsterInstance

        with pytest.MonkeyPatch.context() as mp:
            for key, value in self.settings.items():
                mp.setenv(key, value)
            instance = DagsterInstance.from_config(str(self.home))
            try:
                yield instance
            finally:
                instance.dispose()


@pytest.fixture(scope="module")
def production(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ProductionInstance]:
    """PostgreSQL up, the production dagster.yaml in DAGSTER_HOME, and `rad3d build --tasks 4,5,6` recorded in it."""
    tmp = tmp_path_factory.mktemp("production")
    with postgres_server() as pg:
        home = production_home(tmp)
        out = tmp / "out"
        settings = {
            **pg,
            "DAGSTER_HOME": str(home),
            "RAD3D_OUT": str(out),
            "RAD3D_CTRATE_ROOT": str(tmp / "ct"),
        }
        prod = ProductionInstance(tmp, home, settings)
        env = prod.env()
        sample = cli("sample-data", "--out", str(tmp / "ct"), "--patients", "12", env=env)
        assert sample.returncode == 0, sample.stderr[-2000:]
        built = cli("build", "--ctrate-root", str(tmp / "ct"), "--out", str(out), "--tasks", "4,5,6", env=env)
        assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
        yield prod


def test_sample_build_recorded_in_postgres(production: ProductionInstance) -> None:
    from dagster import AssetKey, DagsterRunStatus

    with production.instance() as instance:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert type(instance.event_log_storage).__name__ == "PostgresEventLogStorage"
        assert type(instance.schedule_storage).__name__ == "PostgresScheduleStorage"
        # The run queue and the pools come from the production profile.
        assert type(instance.run_coordinator).__name__ == "QueuedRunCoordinator"
        concurrency = instance.get_concurrency_config()
        assert concurrency.run_queue_config is not None
        assert concurrency.run_queue_config.max_concurrent_runs == 8
        assert concurrency.pool_config.default_pool_limit == 4
        runs = instance.get_runs()
        assert len(runs) >= 3 and all(r.status == DagsterRunStatus.SUCCESS for r in runs)
        assert instance.get_materialized_partitions(AssetKey("closed_qa")) == {"4", "5", "6"}
        release = instance.get_latest_materialization_event(AssetKey("release_export"))
        assert release is not None and release.run_id in {r.run_id for r in runs}
        # Materializations carry their metadata (row counts, previews) in PostgreSQL, for the UI.
        closed = instance.fetch_materializations(AssetKey("closed_qa"), limit=10).records
        assert {r.asset_materialization.partition for r in closed} == {"4", "5", "6"}
        assert all(r.asset_materialization.metadata["rows"].value > 0 for r in closed)
    # The same rows, straight from the server with psql: the instance really lives in PostgreSQL.
    psql = shutil.which("psql")
    if psql:
        pg = production.settings
        query = "select count(*) from runs where status = 'SUCCESS'"
        counted = subprocess.run(
            [
                psql,
                "-h",
                pg["DAGSTER_PG_HOST"],
                "-p",
                pg["DAGSTER_PG_PORT"],
                "-U",
                pg["DAGSTER_PG_USER"],
                "-d",
                pg["DAGSTER_PG_DB"],
                "-tAc",
                query,
            ],
            capture_output=True,
            text=True,
            check=True,
        )
        assert int(counted.stdout.strip()) == len(runs)


UI_QUERY = """{
  runsOrError { ... on Runs { results { runId status } } }
  assetNodes { assetKey { path } groupName }
  closed: assetNodeOrError(assetKey: {path: ["closed_qa"]}) { ... on AssetNode { partitionStats { numMaterialized } } }
  repositoriesOrError { ... on RepositoryConnection { nodes { schedules { name } sensors { name } jobs { name } } } }
}"""


def test_ui_and_daemon_on_postgres(production: ProductionInstance) -> None:
    """`rad3d ui` on the production DAGSTER_HOME: webserver and daemon read and heartbeat through PostgreSQL."""
    with production.instance() as instance:
        recorded = {r.run_id for r in instance.get_runs()}
    with rad3d_ui(production.tmp / "out", production.env(), production.tmp / "ui.log") as port:
        data = graphql(port, UI_QUERY)["data"]
        daemons = {"SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR", "BACKFILL"}
        assert wait_for_daemons(port, daemons) >= daemons
    shown = {r["runId"] for r in data["runsOrError"]["results"] if r["status"] == "SUCCESS"}
    assert recorded and recorded <= shown
    assert data["closed"]["partitionStats"]["numMaterialized"] == 3
    groups = {node["groupName"] for node in data["assetNodes"]}
    assert {"ctrate_files", "ctrate", "sentences", "open_qa", "closed_qa", "release", "quality", "evaluation"} <= groups
    [repo] = data["repositoriesOrError"]["nodes"]
    assert {s["name"] for s in repo["schedules"]} == {"weekly_benchmark_rebuild"}
    assert {s["name"] for s in repo["sensors"]} >= {"ctrate_drop_sensor", "run_failure_record"}
    assert {j["name"] for j in repo["jobs"]} >= {"predictions_on_gpu_workers"}


def test_pool_limits_live_in_postgres(production: ProductionInstance) -> None:
    """`dagster instance concurrency set` stores each pool's own limit in the instance, for every machine."""
    env = production.env()
    for pool, limit in (("llm", "16"), ("gpu", "2")):
        done = subprocess.run(
            [str(BIN / "dagster"), "instance", "concurrency", "set", pool, limit],
            env=env,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert done.returncode == 0, done.stderr[-2000:]
    with production.instance() as instance:
        assert instance.event_log_storage.get_concurrency_info("llm").slot_count == 16
        assert instance.event_log_storage.get_concurrency_info("gpu").slot_count == 2


def valid_shard(ctrate_root: Path) -> str:
    """The shard of a CT-RATE `valid` patient that has volumes (the volumes asset builds `valid` by default)."""
    from assets.partitions import N_SHARDS
    from rad3d_pipeline.patients import shard_key

    volume = next(iter(sorted(ctrate_root.rglob("valid_*.nii.gz"))))
    patient = "_".join(volume.name.split("_")[:2])
    return shard_key(patient, N_SHARDS)


def run_job_beside_worker(
    job: str, partition: str, env: dict[str, str], worker: subprocess.Popen[bytes], worker_log: Path
) -> None:
    """`dagster job execute` of one partition; fails early, with the worker's log, if the worker dies."""
    proc = subprocess.Popen(
        [
            str(BIN / "dagster"),
            "job",
            "execute",
            "-m",
            "rad3d.definitions",
            "-j",
            job,
            "--tags",
            json.dumps({"dagster/partition": partition}),
        ],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 240
    while proc.poll() is None:
        if worker.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            pytest.fail(f"{job}: worker exited or the run timed out; worker log:\n{worker_log.read_text()[-3000:]}")
        time.sleep(0.5)
    output = proc.stdout.read() if proc.stdout else ""
    assert proc.returncode == 0, output[-3000:] + worker_log.read_text()[-3000:]


def test_celery_worker_runs_partitions_through_redis(production: ProductionInstance) -> None:
    """`dagster job execute` submits the GPU jobs; their steps travel through Redis to a worker on queue `gpu`."""
    if importlib.util.find_spec("dagster_celery") is None:
        skip_or_fail("the production extra (dagster-celery) is not installed")
    tmp = production.tmp
    shard = valid_shard(tmp / "ct")
    with redis_server() as redis_url:
        env = production.env(RAD3D_CELERY_BROKER=redis_url, RAD3D_CELERY_BACKEND=redis_url)
        worker_log = tmp / "worker.log"
        with worker_log.open("w") as log:
            worker = subprocess.Popen(
                [
                    str(BIN / "dagster-celery"),
                    "worker",
                    "start",
                    "-A",
                    "dagster_celery.app",
                    "-y",
                    str(REPO / "deploy" / "celery_worker.yaml"),
                    "-q",
                    "gpu",
                    "-n",
                    "gpu-worker-test",
                    "--",
                    "-c",
                    "1",
                ],
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=REPO,
                start_new_session=True,
            )
        try:
            run_job_beside_worker("predictions_on_gpu_workers", "prior|4", env, worker, worker_log)
            run_job_beside_worker("volumes_on_gpu_workers", shard, env, worker, worker_log)
        finally:
            os.killpg(worker.pid, signal.SIGTERM)
            try:
                worker.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(worker.pid, signal.SIGKILL)
                worker.wait()
    out = tmp / "out"
    table = pd.read_parquet(out / "tables" / "predictions" / "prior|4.parquet")
    assert len(table) > 0 and (table["model"] == "prior").all()
    manifest = pd.read_parquet(out / "tables" / "volumes" / f"{shard}.parquet")
    assert len(manifest) > 0 and list((out / "volumes").rglob("*.npy"))
    log_text = worker_log.read_text()
    # The worker received each step as a Celery task and ran it.
    assert "gpu-worker-test" in log_text and log_text.count("execute_plan[") >= 2, log_text[-3000:]
    with production.instance() as instance:
        for job, partition, step in (
            ("predictions_on_gpu_workers", "prior|4", "predictions"),
            ("volumes_on_gpu_workers", shard, "volumes"),
        ):
            runs = [r for r in instance.get_runs() if r.job_name == job]
            assert len(runs) == 1 and runs[0].tags.get("dagster/partition") == partition
            assert runs[0].status.value == "SUCCESS"
            # The run's own event log (in PostgreSQL) names the Celery worker that executed the step.
            messages = [e.message or "" for e in instance.all_logs(runs[0].run_id)]
            assert any(f"Executing steps {step} in celery worker" in m for m in messages), messages[-20:]

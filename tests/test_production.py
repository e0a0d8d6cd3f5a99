"""The production profile on real services: PostgreSQL holds the instance; a Celery worker runs a partition.

Both start here on loopback (tests/services.py): PostgreSQL from the machine image, Redis from
Debian's redis-server (``scripts/setup.sh --system`` installs it).
"""

from __future__ import annotations

import contextlib
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
            "RAD3D_COMPUTE_LOGS": str(tmp / "compute_logs"),
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
        assert all(r.asset_materialization.metadata["dagster/row_count"].value > 0 for r in closed)
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
    assert {s["name"] for s in repo["schedules"]} == set()  # the weekly rebuild is an on_cron condition
    assert {s["name"] for s in repo["sensors"]} >= {"rad3d_automation", "run_failure_record"}
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
    from rad3d_pipeline.ingest.patients import shard_key

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


# ---------------------------------------------------------------------------------------------
# The documented launch commands against a daemon and webserver started from workspace.yaml, and
# GPU workers lost mid-step (issue 15).

PROD_SECTIONS = ("Production profile", "GPU-worker backfills")
# Commands of those sections the service test does not run, with the reason (anything else it runs).
NOT_RUN_HERE = {
    ".venv/bin/rad3d build": "in-process builds: tests/test_cli.py runs rad3d build --partitions",
    ".venv/bin/dagster asset materialize": "in-process materialization, no daemon or worker involved",
}


def readme_commands(sections: tuple[str, ...] = PROD_SECTIONS) -> list[str]:
    """The commands of docs/operations.md's ```bash blocks in these sections (comments and blank lines dropped)."""
    text = (REPO / "docs" / "operations.md").read_text()
    commands: list[str] = []
    for section in sections:
        start = text.index(f"## {section}\n")
        end = text.find("\n## ", start + 1)
        body = text[start : end if end > 0 else len(text)]
        for block in body.split("```bash\n")[1:]:
            lines = block.split("```", 1)[0].splitlines()
            for line in lines:
                line = line.split(" #", 1)[0].strip()
                if line and not line.startswith("#"):
                    commands.append(line)
    return commands


def test_readme_commands_are_the_ones_tested() -> None:
    """Every command in the production sections is run by the service test below (or says why not)."""
    commands = readme_commands()
    run_here = [c for c in commands if not any(c.startswith(p) for p in NOT_RUN_HERE)]
    assert set(run_here) == set(EXPECTED_README_COMMANDS), sorted(set(run_here) ^ set(EXPECTED_README_COMMANDS))
    # The CLI launch names the workspace's location, never a module (its location would be another one).
    assert not [c for c in commands if "job backfill" in c and ("-m " in c or "-l rad3d" not in c)]


EXPECTED_README_COMMANDS = (
    "createuser dagster && createdb -O dagster dagster",
    "dagster instance concurrency set llm 16",
    "dagster instance concurrency set gpu 2",
    "dagster-webserver -w workspace.yaml -h 0.0.0.0 -p 3000",
    "dagster-daemon run -w workspace.yaml",
    "dagster-celery worker start -A dagster_celery.app -y deploy/celery_worker.yaml -q gpu -- --concurrency 1",
    "rad3d ops slots",
    "rad3d ops slots --free",
    ".venv/bin/dagster job backfill -w workspace.yaml -l rad3d -j volumes_on_gpu_workers --partitions 00,01,02,03 "
    "--noprompt",
    ".venv/bin/dagster job backfill -w workspace.yaml -l rad3d -j predictions_on_gpu_workers --partitions "
    '"prior|4,prior|5" --noprompt',
)


def readme_command(prefix: str) -> list[str]:
    import shlex

    commands = readme_commands()
    matches = [c for c in commands if c == prefix] or [c for c in commands if c.startswith(prefix)]
    [line] = matches
    return shlex.split(line)


def as_run_here(argv: list[str], **replace: str) -> list[str]:
    """A README command for this machine: .venv/bin/ tools by absolute path, some arguments replaced."""
    tool = argv[0].removeprefix(".venv/bin/")
    exe = str(BIN / tool) if (BIN / tool).exists() else tool
    out = [exe]
    args = argv[1:]
    i = 0
    while i < len(args):
        if args[i] in replace:
            out += [args[i], replace[args[i]]]
            i += 2
        else:
            out.append(args[i])
            i += 1
    return out


def children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                stat = (entry / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry.name))
    return found


def descendants(pid: int) -> list[int]:
    out = []
    for child in children(pid):
        out += [child, *descendants(child)]
    return out


def pool_children(worker_pid: int) -> list[int]:
    """The Celery pool processes of a `dagster-celery worker start` (its grandchildren)."""
    return [p for c in children(worker_pid) for p in children(c)]


def kill_group(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("ab") as handle:
        return subprocess.Popen(
            argv, env=env, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True
        )


def valid_shards(ctrate_root: Path) -> list[str]:
    from assets.partitions import N_SHARDS
    from rad3d_pipeline.ingest.patients import shard_key

    shards = set()
    for volume in ctrate_root.rglob("valid_*.nii.gz"):
        shards.add(shard_key("_".join(volume.name.split("_")[:2]), N_SHARDS))
    return sorted(shards)


class Deployment:
    """The webserver and daemon from workspace.yaml (README commands), Celery workers, the instance."""

    def __init__(self, production: ProductionInstance, env: dict[str, str]) -> None:
        self.production, self.env, self.logs = production, env, production.tmp / "logs"
        self.logs.mkdir(exist_ok=True)
        self.workers: list[subprocess.Popen[bytes]] = []

    def run_cmd(self, argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, env=env or self.env, cwd=REPO, capture_output=True, text=True, timeout=600)

    def worker(self, name: str, **extra_env: str) -> subprocess.Popen[bytes]:
        argv = as_run_here(readme_command("dagster-celery worker start"))
        argv[argv.index("-y") + 1] = str(self.production.tmp / "celery_worker.yaml")
        split = argv.index("--")
        argv = [*argv[:split], "-n", name, *argv[split:]]
        proc = start(argv, {**self.env, **extra_env}, self.logs / f"{name}.log")
        self.workers.append(proc)
        return proc

    def backfill(self, job_prefix: str, partitions: str) -> subprocess.CompletedProcess[str]:
        prefix = f".venv/bin/dagster job backfill -w workspace.yaml -l rad3d -j {job_prefix}"
        argv = as_run_here(readme_command(prefix), **{"--partitions": partitions})
        done = self.run_cmd(argv)
        assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
        return done


def wait_runs(instance: Any, run_ids: set[str], timeout_s: float) -> dict[str, Any]:
    from dagster import DagsterRunStatus

    ended = {DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED}
    deadline = time.monotonic() + timeout_s
    while True:
        runs = {r.run_id: r for r in instance.get_runs() if r.run_id in run_ids}
        if len(runs) == len(run_ids) and all(r.status in ended for r in runs.values()):
            return runs
        if time.monotonic() > deadline:
            return runs
        time.sleep(0.5)


def new_runs(instance: Any, before: set[str], job: str, count: int, timeout_s: float = 120) -> set[str]:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        found = {r.run_id for r in instance.get_runs() if r.run_id not in before and r.job_name == job}
        if len(found) >= count:
            return found
        time.sleep(0.5)
    pytest.fail(f"{count} new run(s) of {job} did not appear")


def step_started(instance: Any, run_ids: set[str], step: str, attempts: int = 1) -> str | None:
    from dagster import DagsterEventType

    for run_id in run_ids:
        starts = [e for e in instance.all_logs(run_id, of_type=DagsterEventType.STEP_START) if e.step_key == step]
        if len(starts) >= attempts:
            return run_id
    return None


def held_gpu_slots(instance: Any) -> int:
    return len(instance.event_log_storage.get_concurrency_info("gpu").claimed_slots)


def run_messages(instance: Any, run_id: str) -> list[str]:
    """Every message of the run's event log, with the full text (causes included) of any error."""
    messages = []
    for entry in instance.all_logs(run_id):
        messages.append(entry.message or "")
        data = getattr(entry.dagster_event, "event_specific_data", None) if entry.dagster_event else None
        error = getattr(data, "error", None)
        if error is not None:
            messages.append(error.to_string())
    return messages


def test_gpu_runs_survive_lost_workers(production: ProductionInstance) -> None:
    """README commands against daemon + webserver from workspace.yaml; whole worker and pool child SIGKILLed."""
    if importlib.util.find_spec("dagster_celery") is None:
        skip_or_fail("the production extra (dagster-celery) is not installed")
    import yaml

    tmp, out = production.tmp, production.tmp / "out"
    shards = valid_shards(tmp / "ct")
    assert len(shards) >= 2, shards
    s1, s2 = shards[:2]
    visibility = 20
    worker_config = yaml.safe_load((REPO / "deploy" / "celery_worker.yaml").read_text())
    worker_config["execution"]["config"]["config_source"]["broker_transport_options"]["visibility_timeout"] = visibility
    (tmp / "celery_worker.yaml").write_text(yaml.safe_dump(worker_config))
    pg = production.settings
    measured: dict[str, float] = {}
    with redis_server() as redis_url:
        env = production.env(
            RAD3D_CELERY_BROKER=redis_url,
            RAD3D_CELERY_BACKEND=redis_url,
            RAD3D_CELERY_VISIBILITY_TIMEOUT_S=str(visibility),
            RAD3D_GPU_RETRY_DELAY_S="1",
            PGHOST=pg["DAGSTER_PG_HOST"],
            PGPORT=pg["DAGSTER_PG_PORT"],
            PGUSER="postgres",
        )
        deploy = Deployment(production, env)
        # The database commands, against the test server (a second database: the instance lives in `dagster`).
        made = subprocess.run(
            readme_commands()[0].replace("dagster dagster", "dagster dagster_doc"),
            shell=True,
            env=env,
            capture_output=True,
            text=True,
        )
        assert made.returncode == 0, made.stderr
        for pool in ("llm", "gpu"):
            done = deploy.run_cmd(as_run_here(readme_command(f"dagster instance concurrency set {pool}")))
            assert done.returncode == 0, done.stderr[-2000:]
        port = free_port_for_test()
        webserver = start(
            as_run_here(readme_command("dagster-webserver"), **{"-h": "127.0.0.1", "-p": str(port)}),
            env,
            deploy.logs / "webserver.log",
        )
        daemon = start(as_run_here(readme_command("dagster-daemon run")), env, deploy.logs / "daemon.log")
        try:
            wait_serving(port, deploy.logs / "webserver.log")
            daemons = {"SENSOR", "QUEUED_RUN_COORDINATOR", "MONITORING"}
            healthy = wait_for_daemons(port, daemons, timeout_s=180)
            assert healthy >= daemons, (deploy.logs / "daemon.log").read_text()[-3000:]
            with production.instance() as instance:
                _scenarios(deploy, instance, out, s1, s2, visibility, measured)
        finally:
            for proc in [*deploy.workers, daemon, webserver]:
                kill_group(proc, signal.SIGTERM)
    print(f"\nmeasured recovery times (s): {json.dumps({k: round(v, 1) for k, v in measured.items()})}")


def free_port_for_test() -> int:
    from tests.services import free_port

    return free_port()


def wait_serving(port: int, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if graphql(port, "{ assetNodes { id } }").get("data", {}).get("assetNodes"):
                return
        except OSError:
            pass
        time.sleep(1)
    pytest.fail(f"the webserver did not serve; its log:\n{log.read_text()[-3000:]}")


def _scenarios(
    deploy: Deployment, instance: Any, out: Path, s1: str, s2: str, visibility: int, measured: dict[str, float]
) -> None:
    from dagster import DagsterRunStatus

    job = "volumes_on_gpu_workers"
    # 1. Two shards with the README's command; the whole worker SIGKILLed while a step runs.
    worker1 = deploy.worker("gpu-1")
    before = {r.run_id for r in instance.get_runs()}
    deploy.backfill("volumes_on_gpu_workers", f"{s1},{s2}")
    runs = new_runs(instance, before, job, 2)
    deadline = time.monotonic() + 240
    while step_started(instance, runs, "volumes") is None:
        assert time.monotonic() < deadline, (deploy.logs / "gpu-1.log").read_text()[-3000:]
        assert worker1.poll() is None, (deploy.logs / "gpu-1.log").read_text()[-3000:]
        time.sleep(0.2)
    killed_at = time.monotonic()
    kill_group(worker1)
    deploy.worker("gpu-2")
    ended = wait_runs(instance, runs, timeout_s=visibility + 240)
    measured["whole_worker_killed_to_success"] = time.monotonic() - killed_at
    assert {r.status for r in ended.values()} == {DagsterRunStatus.SUCCESS}, {
        k: (r.status, run_messages(instance, k)[-15:]) for k, r in ended.items()
    }
    assert measured["whole_worker_killed_to_success"] < visibility + 240
    time.sleep(1)
    assert held_gpu_slots(instance) == 0
    slots = deploy.run_cmd(as_run_here(readme_command("rad3d ops slots")))
    assert slots.returncode == 0 and "pool gpu: 0 of 2 slots held" in slots.stdout, slots.stdout + slots.stderr
    assert not list((out / "volumes").rglob("*.tmp-*"))

    # 2. Only the pool child SIGKILLed (as the OOM killer would): the step runs again, the run succeeds.
    # The shard's outputs go (so the step has work to do) and a killed writer's old temporary file is planted.
    npys = sorted((out / "volumes").rglob("*.npy"))
    assert npys
    for npy in npys:
        npy.unlink()
    planted = npys[0].with_name(f".{npys[0].name}.tmp-deadbeef")
    planted.write_bytes(b"\x93NUMPY partial")
    os.utime(planted, (time.time() - 3600, time.time() - 3600))
    before = {r.run_id for r in instance.get_runs()}
    deploy.backfill("volumes_on_gpu_workers", f"{s1},{s2}")
    runs = new_runs(instance, before, job, 2)
    worker2 = deploy.workers[-1]
    deadline = time.monotonic() + 240
    while step_started(instance, runs, "volumes") is None:
        assert time.monotonic() < deadline, (deploy.logs / "gpu-2.log").read_text()[-3000:]
        time.sleep(0.1)
    [child] = pool_children(worker2.pid)
    killed_at = time.monotonic()
    os.kill(child, signal.SIGKILL)
    ended = wait_runs(instance, runs, timeout_s=240)
    measured["pool_child_killed_to_success"] = time.monotonic() - killed_at
    assert {r.status for r in ended.values()} == {DagsterRunStatus.SUCCESS}, {
        k: (r.status, run_messages(instance, k)[-15:]) for k, r in ended.items()
    }
    assert step_started(instance, runs, "volumes", attempts=2), "the killed step was not run again"
    assert worker2.poll() is None
    time.sleep(1)
    assert held_gpu_slots(instance) == 0
    assert not planted.exists() and not list((out / "volumes").rglob("*.tmp-*"))
    assert all(n.exists() for n in npys)
    freed = deploy.run_cmd(as_run_here(readme_command("rad3d ops slots --free")))
    assert freed.returncode == 0 and "freed the slots of 0 ended run(s)" in freed.stdout, freed.stdout + freed.stderr

    # 3. A worker started with other output settings refuses the step, with one line naming the difference.
    kill_group(worker2, signal.SIGTERM)
    deploy.worker("gpu-ctclip", RAD3D_VOLUME_PROFILES="ctclip")
    before = {r.run_id for r in instance.get_runs()}
    deploy.backfill("volumes_on_gpu_workers", s1)
    [refused] = new_runs(instance, before, job, 1)
    ended = wait_runs(instance, {refused}, timeout_s=240)
    assert ended[refused].status == DagsterRunStatus.FAILURE
    messages = run_messages(instance, refused)
    wanted = "RAD3D_VOLUME_PROFILES: worker has ctclip, run was launched with m3d"
    assert any(wanted in m for m in messages), messages[-20:]
    assert not list((out / "volumes" / "ctclip").rglob("*.npy"))

    # 4. A launch naming another code location (the old README form) fails and is recorded like any failure.
    before = {r.run_id for r in instance.get_runs()}
    old_form = ["job", "backfill", "-m", "rad3d.definitions", "-j", job, "--partitions", s1, "--noprompt"]
    wrong = deploy.run_cmd([str(BIN / "dagster"), *old_form])
    assert wrong.returncode == 0, wrong.stderr[-2000:]
    [lost] = new_runs(instance, before, job, 1)
    assert wait_runs(instance, {lost}, timeout_s=120)[lost].status == DagsterRunStatus.FAILURE
    deadline = time.monotonic() + 120
    records = out / "failures"
    while not ((records / f"{lost}.json").exists() and (records / f"{refused}.json").exists()):
        assert time.monotonic() < deadline, sorted(p.name for p in records.glob("*")) if records.exists() else "none"
        time.sleep(1)
    assert json.loads((records / f"{lost}.json").read_text())["run_id"] == lost


@pytest.mark.parametrize("form", ["postgres_url", "postgres_db_without_scheme"])
def test_dagsters_documented_postgres_forms(production: ProductionInstance, form: str) -> None:
    """`postgres_url: postgresql://user@host:port/db` and `postgres_db` without a scheme (psycopg2: SQLAlchemy 2.0)."""
    from dagster import DagsterInstance, DagsterRunStatus, job, op

    pg = production.settings
    db = f"dagster_{form}"
    createdb = shutil.which("createdb") or "/usr/lib/postgresql/15/bin/createdb"
    subprocess.run(
        [createdb, "-h", pg["DAGSTER_PG_HOST"], "-p", pg["DAGSTER_PG_PORT"], "-U", "postgres", db], check=True
    )
    home = production.tmp / f"home_{form}"
    home.mkdir()
    if form == "postgres_url":
        storage = {"postgres_url": f"postgresql://postgres@{pg['DAGSTER_PG_HOST']}:{pg['DAGSTER_PG_PORT']}/{db}"}
    else:  # no password either: the server trusts the connection
        storage = {
            "postgres_db": {
                "hostname": pg["DAGSTER_PG_HOST"],
                "port": int(pg["DAGSTER_PG_PORT"]),
                "db_name": db,
                "username": "postgres",
            }
        }
    import yaml

    (home / "dagster.yaml").write_text(
        yaml.safe_dump({"storage": {"postgres": storage}, "telemetry": {"enabled": False}})
    )

    @op
    def one() -> int:
        return 1

    @job
    def tiny() -> None:
        one()

    instance = DagsterInstance.from_config(str(home))
    try:
        assert type(instance.run_storage).__name__ == "PostgresRunStorage"
        assert tiny.execute_in_process(instance=instance).success
        [run] = instance.get_runs()
        assert run.status == DagsterRunStatus.SUCCESS and instance.all_logs(run.run_id)
    finally:
        instance.dispose()
    psql = shutil.which("psql") or "psql"
    counted = subprocess.run(
        [
            psql,
            "-h",
            pg["DAGSTER_PG_HOST"],
            "-p",
            pg["DAGSTER_PG_PORT"],
            "-U",
            "postgres",
            "-d",
            db,
            "-tAc",
            "select count(*) from runs",
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    assert counted.stdout.strip() == "1"

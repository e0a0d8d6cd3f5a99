"""`rad3d ops` and the run-settings check, without services (the service tests are in test_production.py)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from rad3d.ops_command import env_references, missing_settings
from rad3d_pipeline.common import run_settings

REPO = Path(__file__).resolve().parents[1]
LAUNCHED = {"RAD3D_VOLUME_PROFILES": "m3d", "RAD3D_SEED": "0", "code_version:volumes": "2"}


def test_fingerprint_is_order_free_and_changes_with_any_value() -> None:
    same = dict(reversed(list(LAUNCHED.items())))
    assert run_settings.fingerprint(LAUNCHED) == run_settings.fingerprint(same)
    for key in LAUNCHED:
        assert run_settings.fingerprint({**LAUNCHED, key: LAUNCHED[key] + "x"}) != run_settings.fingerprint(LAUNCHED)


def test_worker_with_other_settings_is_refused_with_one_line_naming_each_difference() -> None:
    tags = run_settings.run_tags(LAUNCHED)
    run_settings.check(tags, dict(LAUNCHED))  # the same settings pass
    worker = {**LAUNCHED, "RAD3D_VOLUME_PROFILES": "ctclip", "RAD3D_MODELS": "prior"}
    with pytest.raises(run_settings.RunSettingsMismatch) as caught:
        run_settings.check(tags, worker)
    message = str(caught.value)
    assert "\n" not in message
    assert "RAD3D_VOLUME_PROFILES: worker has ctclip, run was launched with m3d" in message
    assert "RAD3D_MODELS: worker has prior, run was launched with (unset)" in message
    assert "RAD3D_SEED" not in message


def test_code_version_difference_and_broken_tag_are_refused() -> None:
    tags = run_settings.run_tags(LAUNCHED)
    with pytest.raises(run_settings.RunSettingsMismatch, match="code_version:volumes: worker has 1, run was"):
        run_settings.check(tags, {**LAUNCHED, "code_version:volumes": "1"})
    with pytest.raises(run_settings.RunSettingsMismatch, match="not JSON"):
        run_settings.check({run_settings.SETTINGS_TAG: "{oops"}, LAUNCHED)
    with pytest.raises(run_settings.RunSettingsMismatch, match="not an object of strings"):
        run_settings.check({run_settings.SETTINGS_TAG: '{"RAD3D_SEED": 0}'}, LAUNCHED)
    run_settings.check({}, {"anything": "goes"})  # a run without the tag (an in-process build) passes


def test_settings_file_identity_follows_content(tmp_path: Path) -> None:
    profiles = tmp_path / "profiles.yaml"
    profiles.write_text("a: 1\n")
    first = run_settings.file_identity(str(profiles))
    profiles.write_text("a: 2\n")
    assert run_settings.file_identity(str(profiles)) != first
    assert "unreadable" in run_settings.file_identity(str(tmp_path / "absent.yaml"))
    assert run_settings.file_identity(None) == ""


def test_output_settings_follow_the_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from resources.settings import output_settings_from_env

    monkeypatch.setenv("RAD3D_OUT", str(tmp_path))
    monkeypatch.delenv("RAD3D_VOLUME_PROFILES", raising=False)
    default = output_settings_from_env({"volumes": "1"})
    assert default["RAD3D_VOLUME_PROFILES"] == "m3d" and default["RAD3D_OUT"] == str(tmp_path)
    assert default["code_version:volumes"] == "1"
    monkeypatch.setenv("RAD3D_VOLUME_PROFILES", "ctclip")
    diffs = run_settings.differences(default, output_settings_from_env({"volumes": "1"}))
    assert diffs == ["RAD3D_VOLUME_PROFILES: worker has ctclip, run was launched with m3d"]
    assert not [k for k in default if "PASSWORD" in k or "KEY" in k]  # secrets never travel as tags


def test_every_env_reference_of_the_production_files_is_named_when_unset() -> None:
    instance = REPO / "deploy" / "dagster.production.yaml"
    worker = REPO / "deploy" / "celery_worker.yaml"
    names = {name for name, _ in env_references(yaml.safe_load(instance.read_text()))}
    assert {"DAGSTER_PG_HOST", "DAGSTER_PG_PORT", "DAGSTER_PG_DB", "DAGSTER_PG_USER", "RAD3D_COMPUTE_LOGS"} == names
    # The password is not required: libpq takes it from PGPASSWORD or ~/.pgpass where the server asks.
    assert "DAGSTER_PG_PASSWORD" not in names
    lines = missing_settings([instance, worker], {"DAGSTER_PG_HOST": "db", "DAGSTER_PG_PORT": "5432"})
    assert lines == [
        f"DAGSTER_PG_DB is not set; {instance} wants it (at storage.postgres.postgres_db.db_name)",
        f"DAGSTER_PG_USER is not set; {instance} wants it (at storage.postgres.postgres_db.username)",
        f"RAD3D_COMPUTE_LOGS is not set; {instance} wants it (at compute_logs.config.base_dir)",
        f"RAD3D_CELERY_BROKER is not set; {worker} wants it (at execution.config.broker)",
        f"RAD3D_CELERY_BACKEND is not set; {worker} wants it (at execution.config.backend)",
    ]


def test_worker_file_makes_lost_tasks_come_back() -> None:
    from rad3d.celery_jobs import DEFAULT_VISIBILITY_TIMEOUT_S, celery_config_source

    worker = yaml.safe_load((REPO / "deploy" / "celery_worker.yaml").read_text())
    source = worker["execution"]["config"]["config_source"]
    assert source == celery_config_source(DEFAULT_VISIBILITY_TIMEOUT_S)  # the workers and the jobs agree
    assert source["task_acks_late"] and source["task_reject_on_worker_lost"]
    assert source["worker_prefetch_multiplier"] == 1


def ops(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "rad3d.cli", "ops", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_ops_commands_name_the_missing_setting_in_one_line(tmp_path: Path) -> None:
    home = tmp_path / "home"
    home.mkdir()
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = ops("slots", env=env)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "DAGSTER_HOME is not set" in done.stderr
    env["DAGSTER_HOME"] = str(home)
    done = ops("slots", env=env)
    assert done.returncode == 2 and f"{home / 'dagster.yaml'} not found" in done.stderr
    (home / "dagster.yaml").write_text((REPO / "deploy" / "dagster.production.yaml").read_text())
    done = ops("slots", env={**env, "DAGSTER_PG_PORT": "5432"})
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert "DAGSTER_PG_HOST is not set;" in done.stderr and str(home / "dagster.yaml") in done.stderr
    assert "Traceback" not in done.stderr
    done = ops("check", env=env)
    assert done.returncode == 2 and "DAGSTER_PG_USER is not set" in done.stderr


@pytest.mark.slow
def test_ops_slots_lists_and_frees_only_ended_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """On a real (SQLite) instance: slots of a finished run are listed as ended and freed; a running run's stay."""
    from dagster import DagsterInstance, DagsterRunStatus

    from rad3d.ops_command import free_ended, held_slots, pool_summary

    monkeypatch.setenv("DAGSTER_HOME", str(tmp_path))
    (tmp_path / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    with DagsterInstance.get() as instance:
        instance.event_log_storage.set_concurrency_slots("gpu", 2)
        from dagster import job, op

        @op
        def noop() -> None:
            return None

        @job
        def tiny() -> None:
            noop()

        ended = instance.create_run_for_job(tiny, status=DagsterRunStatus.FAILURE)
        running = instance.create_run_for_job(tiny, status=DagsterRunStatus.STARTED)
        storage = instance.event_log_storage
        assert storage.claim_concurrency_slot("gpu", ended.run_id, "volumes").is_claimed
        assert storage.claim_concurrency_slot("gpu", running.run_id, "volumes").is_claimed
        statuses = {(s.run_id, s.run_status) for s in held_slots(instance)}
        assert statuses == {(ended.run_id, "FAILURE"), (running.run_id, "STARTED")}
        assert pool_summary(instance) == [("gpu", 2, 2, 0)]
        assert free_ended(instance) == [ended.run_id]
        assert [s.run_id for s in held_slots(instance)] == [running.run_id]
        with pytest.raises(Exception, match="terminate it first"):
            free_ended(instance, running.run_id)

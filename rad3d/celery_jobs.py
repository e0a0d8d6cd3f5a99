"""Jobs for the distributed executor (dagster-celery): GPU steps run on workers listening on queue ``gpu``.

The broker and result backend come from RAD3D_CELERY_BROKER and RAD3D_CELERY_BACKEND (Redis or
RabbitMQ URLs). The GPU assets carry ``op_tags={"dagster-celery/queue": "gpu"}``, so their steps go
to queue ``gpu``; any other step of these jobs goes to Celery's default queue ``dagster``. Without
dagster-celery installed these jobs are absent. A worker on a GPU machine runs::

    dagster-celery worker start -A dagster_celery.app -y deploy/celery_worker.yaml -q gpu -- --concurrency 1

- ``volumes_on_gpu_workers``: the assets of group ``volumes`` (model-ready .npy), per patient shard.
- ``predictions_on_gpu_workers``: ``predictions``, per model x task.

Both carry the run tag ``rad3d/queue=gpu``, which the production profile's run queue limits, a
``dagster/max_runtime`` (RAD3D_GPU_MAX_RUNTIME_S, default 24 h) after which run monitoring fails the
run, and the output-shaping settings of the code location that launches them
(``rad3d/settings``, checked by every worker before a step runs). A step lost with its worker
comes back: the Celery settings (acks late, reject on worker lost, a visibility timeout longer than
the longest step, prefetch 1) are the same here and in ``deploy/celery_worker.yaml``, and a step
that raises is retried by Dagster (3 more attempts, exponential backoff from
RAD3D_GPU_RETRY_DELAY_S, default 30 s).
"""

from __future__ import annotations

import importlib.util
from collections.abc import Mapping
from typing import Any

from dagster import AssetSelection, Backoff, RetryPolicy, define_asset_job

from assets.volumes import GROUP as VOLUMES_GROUP
from rad3d_pipeline.common import run_settings
from resources import environment
from resources.settings import output_settings_from_env

CELERY_AVAILABLE = importlib.util.find_spec("dagster_celery") is not None
QUEUE_TAGS = {"rad3d/queue": "gpu"}
# The defaults live in the settings table (resources/environment.py); this name is what the worker file must match.
DEFAULT_VISIBILITY_TIMEOUT_S = environment.CELERY_VISIBILITY_TIMEOUT_S.default_value()


def celery_config_source(visibility_timeout_s: int) -> dict[str, Any]:
    """Celery settings under which a step lost with its worker is delivered again (also in celery_worker.yaml)."""
    return {
        "task_acks_late": True,  # acknowledged when the step ends, not on receipt
        "task_reject_on_worker_lost": True,  # a killed pool child puts its task back on the queue
        "worker_prefetch_multiplier": 1,  # a worker holds no task it is not running
        "broker_transport_options": {
            "visibility_timeout": visibility_timeout_s,  # an unacknowledged task comes back after this
            "unacked_restore_interval": 10,  # looked for every 10 s (kombu's default sweep: 100 s)
            "unacked_restore_throttle": 1,
            "max_retries": 3,
            "interval_start": 0,
            "interval_step": 0.2,
            "interval_max": 0.5,
        },
        "result_expires": 7 * 24 * 3600,
    }


def celery_executor_def(env: Mapping[str, str] | None = None) -> Any:
    from dagster_celery import celery_executor

    visibility = environment.read(environment.CELERY_VISIBILITY_TIMEOUT_S, env)
    return celery_executor.configured(
        {
            "broker": {"env": "RAD3D_CELERY_BROKER"},
            "backend": {"env": "RAD3D_CELERY_BACKEND"},
            "config_source": celery_config_source(visibility),
        },
        name="rad3d_celery",
    )


def gpu_code_versions() -> dict[str, str]:
    """The code versions of the assets the GPU jobs run (part of the settings a worker must share)."""
    from assets.evaluation import predictions
    from assets.volumes import volumes

    versions: dict[str, str] = {}
    for definition in (volumes, predictions):
        for key, version in definition.code_versions_by_key.items():
            versions[key.to_user_string()] = version or ""
    return versions


def gpu_run_tags(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """Queue tag, max runtime and this code location's output settings (registered as this process's own)."""
    settings = output_settings_from_env(gpu_code_versions(), env)
    run_settings.register_local(settings)
    max_runtime = environment.read(environment.GPU_MAX_RUNTIME_S, env)
    return {**QUEUE_TAGS, "dagster/max_runtime": str(max_runtime), **run_settings.run_tags(settings)}


def celery_jobs(env: Mapping[str, str] | None = None) -> list[Any]:
    """The GPU jobs on the Celery executor (none without dagster-celery); settings from the settings table."""
    if not CELERY_AVAILABLE:
        return []
    executor = celery_executor_def(env)
    tags = gpu_run_tags(env)
    delay = environment.read(environment.GPU_RETRY_DELAY_S, env)
    retry = RetryPolicy(max_retries=3, delay=delay, backoff=Backoff.EXPONENTIAL)
    return [
        define_asset_job(
            "volumes_on_gpu_workers",
            selection=AssetSelection.groups(VOLUMES_GROUP),
            executor_def=executor,
            tags=tags,
            op_retry_policy=retry,
            description="Model-ready volumes (group volumes) for a shard range, each step on a Celery GPU worker.",
        ),
        define_asset_job(
            "predictions_on_gpu_workers",
            selection=AssetSelection.assets("predictions"),
            executor_def=executor,
            tags=tags,
            op_retry_policy=retry,
            description="Model predictions for a model x task range, each step on a Celery GPU worker.",
        ),
    ]

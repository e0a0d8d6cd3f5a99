"""Jobs for the distributed executor (dagster-celery): GPU steps run on workers listening on queue ``gpu``.

The broker and result backend come from RAD3D_CELERY_BROKER and RAD3D_CELERY_BACKEND (Redis or
RabbitMQ URLs). The GPU assets carry ``op_tags={"dagster-celery/queue": "gpu"}``, so their steps go
to queue ``gpu``; any other step of these jobs goes to Celery's default queue ``dagster``. Without
dagster-celery installed these jobs are absent. A worker on a GPU machine runs::

    dagster-celery worker start -A dagster_celery.app -y deploy/celery_worker.yaml -q gpu

- ``volumes_on_gpu_workers``: the assets of group ``volumes`` (model-ready .npy), per patient shard.
- ``predictions_on_gpu_workers``: ``predictions``, per model x task.

Both carry the run tag ``rad3d/queue=gpu``, which the production profile's run queue limits.
"""

from __future__ import annotations

import importlib.util
from typing import Any

from dagster import AssetSelection, define_asset_job

from assets.volumes import GROUP as VOLUMES_GROUP

CELERY_AVAILABLE = importlib.util.find_spec("dagster_celery") is not None
RUN_TAGS = {"rad3d/queue": "gpu"}


def celery_executor_def() -> Any:
    from dagster_celery import celery_executor

    return celery_executor.configured(
        {"broker": {"env": "RAD3D_CELERY_BROKER"}, "backend": {"env": "RAD3D_CELERY_BACKEND"}},
        name="rad3d_celery",
    )


def celery_jobs() -> list[Any]:
    """The GPU jobs on the Celery executor (none without dagster-celery)."""
    if not CELERY_AVAILABLE:
        return []
    executor = celery_executor_def()
    return [
        define_asset_job(
            "volumes_on_gpu_workers",
            selection=AssetSelection.groups(VOLUMES_GROUP),
            executor_def=executor,
            tags=RUN_TAGS,
            description="Model-ready volumes (group volumes) for a shard range, each step on a Celery GPU worker.",
        ),
        define_asset_job(
            "predictions_on_gpu_workers",
            selection=AssetSelection.assets("predictions"),
            executor_def=executor,
            tags=RUN_TAGS,
            description="Model predictions for a model x task range, each step on a Celery GPU worker.",
        ),
    ]

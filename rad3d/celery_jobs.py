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

from dagster import AssetSelection, JobDefinition, define_asset_job

CELERY_AVAILABLE = importlib.util.find_spec("dagster_celery") is not None
GPU_GROUP = "volumes"
RUN_TAGS = {"rad3d/queue": "gpu"}


def celery_executor_def() -> Any:
    from dagster_celery import celery_executor

    return celery_executor.configured(
        {"broker": {"env": "RAD3D_CELERY_BROKER"}, "backend": {"env": "RAD3D_CELERY_BACKEND"}},
        name="rad3d_celery",
    )


def celery_jobs(asset_groups: set[str] | None = None) -> list[Any]:
    """The GPU jobs on the Celery executor; ``asset_groups`` (the code location's groups) gates the volumes job."""
    if not CELERY_AVAILABLE:
        return []
    executor = celery_executor_def()
    jobs = []
    if asset_groups is None or GPU_GROUP in asset_groups:
        jobs.append(
            define_asset_job(
                "volumes_on_gpu_workers",
                selection=AssetSelection.groups(GPU_GROUP),
                executor_def=executor,
                tags=RUN_TAGS,
                description="Model-ready volumes (group volumes) for a shard range, each step on a Celery GPU worker.",
            )
        )
    jobs.append(
        define_asset_job(
            "predictions_on_gpu_workers",
            selection=AssetSelection.assets("predictions"),
            executor_def=executor,
            tags=RUN_TAGS,
            description="Model predictions for a model x task range, each step on a Celery GPU worker.",
        )
    )
    return jobs


def predictions_on_gpu_workers() -> JobDefinition:
    """The job, rebuilt by name (for ``reconstructable``: a Python API caller that sends steps to workers)."""
    from rad3d.definitions import defs

    return defs.get_job_def("predictions_on_gpu_workers")


def volumes_on_gpu_workers() -> JobDefinition:
    from rad3d.definitions import defs

    return defs.get_job_def("volumes_on_gpu_workers")

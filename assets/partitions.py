"""Partition definitions: patient shards, the six tasks, and the closed-ended tasks."""

from __future__ import annotations

from dagster import BackfillPolicy, MultiPartitionsDefinition, StaticPartitionsDefinition

from rad3d_pipeline.patients import shard_keys
from resources.settings import env_shards

N_SHARDS = env_shards()
shard_partitions = StaticPartitionsDefinition(shard_keys(N_SHARDS))
task_partitions = StaticPartitionsDefinition([str(t) for t in range(1, 7)])
closed_task_partitions = StaticPartitionsDefinition(["4", "5", "6"])
open_task_partitions = StaticPartitionsDefinition(["1", "2", "3"])
# LLM generation and scoring: task (1-3) x shard. Keys read "<shard>|<task>".
open_qa_partitions = MultiPartitionsDefinition({"task": open_task_partitions, "shard": shard_partitions})


def split_open_key(key: str) -> tuple[str, str]:
    """(task, shard) of an ``open_qa_partitions`` key."""
    dims = open_qa_partitions.get_partition_key_from_str(key).keys_by_dimension
    return dims["task"], dims["shard"]


# Builds run whole partition ranges in one run (per-run overhead is about 0.6 s).
single_run = BackfillPolicy.single_run()

# GPU assets (volumes, predictions) take slots of pool `gpu`; on the distributed executor
# (dagster-celery) their steps go to the queue the GPU workers listen on.
GPU_POOL = "gpu"
GPU_OP_TAGS = {"dagster-celery/queue": "gpu"}

"""Partition definitions: patient shards, the six tasks, and the closed-ended tasks."""

from __future__ import annotations

from dagster import BackfillPolicy, MultiPartitionsDefinition, StaticPartitionsDefinition

from rad3d_pipeline.ingest.patients import shard_keys
from resources import environment

# Read while this module is imported, from the settings table (resources/environment.py), not by the
# composition root: the asset modules pass these partitions to their decorators when they are
# imported, before any Definitions exist, so the shard count must be known first. It is the only
# setting read at import; the composition root gives the same number to the settings resource.
N_SHARDS = environment.read(environment.SHARDS)
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

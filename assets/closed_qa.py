"""Tasks 4-6 from the labels alone: temporal sequences and the closed-ended QA per task."""

from collections.abc import Iterator

import pandas as pd
from dagster import (
    AllPartitionMapping,
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetIn,
    Output,
    asset,
)

from assets.metadata import table_metadata
from assets.partitions import closed_task_partitions, single_run
from rad3d_pipeline.closed_qa.existence import build_task4, select_task4_volumes
from rad3d_pipeline.closed_qa.temporal import build_sequences, build_task5, build_task6, check_temporal_rule
from rad3d_pipeline.ingest.labels import CTRATE_LABELS
from resources.settings import Rad3dSettings

GROUP = "closed_qa"


@asset(
    group_name=GROUP,
    code_version="1",
    description="Per multi-scan patient and temporal label: the history over earlier scans and the current class.",
)
def temporal_sequences(ctrate_labels: pd.DataFrame) -> Output[pd.DataFrame]:
    table = build_sequences(ctrate_labels)
    counts = table["temporal_class"].value_counts().to_dict() if len(table) else {}
    return Output(table, metadata={**table_metadata(table), **{f"class_{k}": int(v) for k, v in counts.items()}})


@asset(
    group_name=GROUP,
    code_version="1",
    partitions_def=closed_task_partitions,
    backfill_policy=single_run,
    # Every task partition reads the labels of every patient shard.
    ins={"ctrate_labels": AssetIn(partition_mapping=AllPartitionMapping())},
    check_specs=[
        AssetCheckSpec(
            "task4_18_rows_per_volume",
            asset="closed_qa",
            blocking=True,
            description="Blocking: Task 4 has one question per CT-RATE label (18) for every selected volume.",
        ),
        AssetCheckSpec(
            "temporal_rule_holds",
            asset="closed_qa",
            blocking=True,
            description="Blocking: every Task 5/6 answer follows the temporal rule from its history (A refractory, "
            "B resolved, C new, D none).",
        ),
    ],
    description="Closed-ended QA of Task 4 (existence), 5 (static temporal) and 6 (longitudinal), release columns.",
)
def closed_qa(
    context: AssetExecutionContext,
    ctrate_labels: pd.DataFrame,
    temporal_sequences: pd.DataFrame,
    settings: Rad3dSettings,
) -> Iterator[Output[dict[str, pd.DataFrame]] | AssetCheckResult]:
    builders = {
        "4": lambda: build_task4(ctrate_labels, settings.seed),
        "5": lambda: build_task5(temporal_sequences, settings.seed),
        "6": lambda: build_task6(temporal_sequences, settings.seed),
    }
    out = {key: builders[key]() for key in context.partition_keys}
    rows = {f"rows_task{k}": len(v) for k, v in out.items()}
    yield Output(out, metadata={**rows, **table_metadata(pd.concat(out.values()))})
    if "4" in out:
        per_volume = out["4"].groupby("VolumeName").size()
        expected = len(select_task4_volumes(ctrate_labels))
        ok = bool((per_volume == len(CTRATE_LABELS)).all()) and len(per_volume) == expected
        yield AssetCheckResult(
            check_name="task4_18_rows_per_volume",
            passed=ok,
            metadata={"volumes": len(per_volume), "expected_volumes": expected},
        )
    else:
        yield AssetCheckResult(
            check_name="task4_18_rows_per_volume", passed=True, metadata={"skipped": "task 4 not built"}
        )
    temporal = [v for k, v in out.items() if k in ("5", "6")]
    problems = check_temporal_rule(pd.concat(temporal), temporal_sequences) if temporal else []
    yield AssetCheckResult(
        check_name="temporal_rule_holds",
        passed=not problems,
        metadata={"violations": len(problems), "first": str(problems[:5])},
    )

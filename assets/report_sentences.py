"""Report sentences per patient shard: sections, measurements (mm), negation, side."""

import pandas as pd
from dagster import AssetExecutionContext, MetadataValue, Output, asset

from assets.metadata import table_metadata
from assets.partitions import shard_partitions, single_run
from rad3d_pipeline.ingest.patients import shard_column
from rad3d_pipeline.sentences.segmentation import SentenceSplitter
from rad3d_pipeline.sentences.segmentation import report_sentences as split_reports
from resources.settings import Rad3dSettings

GROUP = "sentences"


@asset(
    group_name=GROUP,
    code_version="2",
    partitions_def=shard_partitions,
    backfill_policy=single_run,
    description="One row per report sentence: VolumeName, section, sentence_index, text, has_measurement (any size, "
    "distance, area, volume or percentage loss), lengths in mm, other measurement spans, negation, side. "
    "Partitioned by patient shard.",
)
def report_sentences(
    context: AssetExecutionContext, ctrate_reports: pd.DataFrame, settings: Rad3dSettings
) -> Output[dict[str, pd.DataFrame]]:
    keys = list(context.partition_keys)
    shards = shard_column(ctrate_reports["patient_id"], settings.n_shards)
    wanted = ctrate_reports.loc[shards.isin(keys)]
    splitter = SentenceSplitter()
    table = split_reports(wanted, splitter)
    table["shard"] = table["VolumeName"].map(dict(zip(wanted["VolumeName"], shards.loc[wanted.index], strict=True)))
    out = {key: table.loc[table["shard"] == key].reset_index(drop=True) for key in keys}
    meta = table_metadata(table)
    meta["splitter"] = splitter.splitter_name
    flagged = int(table["has_measurement"].sum()) if len(table) else 0
    meta["run_with_measurement"] = flagged  # the run's figures (all its shards), labelled so
    # Precision stays visible: the share of sentences flagged as carrying a measurement.
    share = flagged / len(table) if len(table) else 0.0
    meta["run_with_measurement_share"] = MetadataValue.float(round(share, 4))
    # Sentences with a unit-less size whose unit could not be inferred (flagged, not in measurements_mm).
    meta["run_unit_less_sizes_unnormalised"] = (
        int(table["other_measurement_kinds"].map(lambda kinds: "size" in list(kinds)).sum()) if len(table) else 0
    )
    context.log.info(
        f"{len(wanted)} reports in {len(keys)} shard(s) -> {len(table)} sentences, "
        f"{flagged} with a measurement ({share:.1%})"
    )
    return Output(out, metadata=meta)

"""The Hub export: the release as a Hugging Face dataset under ``<out>/hub/3DRAD`` (docs/publishing.md).

Its own asset after ``release_export``: a full build writes it; a ``--tasks`` build, which rewrites part
of the release, does not (``--select hub_export`` writes it from the release on disk).
"""

import shutil
import time
from importlib.metadata import version as package_version
from pathlib import Path

import pandas as pd
from dagster import AssetExecutionContext, MetadataValue, Output, asset

from rad3d_pipeline.llm.prompts import load_template
from rad3d_pipeline.release.export import RELEASE_FOLDER
from rad3d_pipeline.release.hub_export import BuildSettings, HubExportError, verify_hub_export, write_hub_export
from resources.llm import LlmResource
from resources.settings import Rad3dSettings

GROUP = "release"
HUB_PROMPTS = ("task12", "task3_stage1", "task3_stage2", "scoring")


def move_aside(folder: Path) -> Path | None:
    """Move an export that no longer matches the release to ``<out>/hub.stale/<time>/``."""
    if not folder.exists():
        return None
    target = folder.parent.with_name("hub.stale") / time.strftime("%Y%m%dT%H%M%S") / folder.name
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(folder), target)
    return target


@asset(
    group_name=GROUP,
    code_version="1",
    kinds={"parquet", "huggingface"},
    description="The release as a Hugging Face dataset under `<out>/hub/3DRAD`: Parquet per task config "
    "(`task1`...`task6`) and split (`test`, `train`), and a dataset card with the build settings; loadable "
    'with `datasets.load_dataset("<out>/hub/3DRAD", "task4", split="test")`. Needs both splits.',
)
def hub_export(
    context: AssetExecutionContext, release_export: pd.DataFrame, settings: Rad3dSettings, llm: LlmResource
) -> Output[pd.DataFrame]:
    splits = set(release_export["release_split"].astype(str))
    if not {"test", "train"} <= splits:
        # No export of a one-split build; an earlier export no longer matches the release: moved aside.
        moved = move_aside(settings.out / "hub" / RELEASE_FOLDER)
        note = f"not written: the release has {', '.join(sorted(splits))} only; the export needs test and train"
        context.log.info(f"hub_export: {note}" + (f"; the earlier export moved to {moved}" if moved else ""))
        return Output(pd.DataFrame({"config": [], "split": [], "rows": []}), metadata={"hub_export": note})
    backend = llm.resolved_backend()
    models = {"generation": llm.generator_model, "scoring": llm.scorer_model} if backend != "rules" else {}
    build = BuildSettings(
        llm_models={stage: f"{backend}/{model}" for stage, model in models.items()} or {"all": "offline rules backend"},
        prompt_versions={name: load_template(name).version for name in HUB_PROMPTS},
        seed=settings.seed,
        thresholds={
            "min_dimension_score": settings.min_dimension_score,
            "min_mean_score": settings.min_mean_score,
            "repeat_cap": float(settings.cap),
        },
        rad3d_version=package_version("rad3d"),
    )
    hub = write_hub_export(settings.out / "3DRAD", settings.out, settings=build)
    problems = verify_hub_export(hub)
    if problems:
        raise HubExportError(f"{hub.root}: the Hub export does not read back: {'; '.join(problems[:3])}")
    counts = pd.DataFrame(
        [(config, split, n) for config, per in sorted(hub.counts.items()) for split, n in sorted(per.items())],
        columns=["config", "split", "rows"],
    )
    return Output(counts, metadata={"hub_root": MetadataValue.path(str(hub.root.resolve())), "rows": hub.rows})

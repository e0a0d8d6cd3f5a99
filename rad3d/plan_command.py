"""``rad3d build --plan``: the LLM plan of the build's own selection, printed and written.

Nothing is sent and nothing is built: the only files written are ``<out>/reports/plan.json`` (the
response cache is read, never created).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from dagster import AssetKey, Definitions

from rad3d.build import PlannedRun


def print_plan(defs: Definitions, runs: Sequence[PlannedRun], out: Path) -> int:
    """Plan the LLM stages among ``runs`` (the build's planned runs), print the table, write plan.json."""
    from assets.plan import plan_cache, plan_config, plan_inputs, runs_of
    from rad3d_pipeline.llm.plan import STAGES, PlanInputs, plan_llm, write_plan
    from resources.plan_settings import PlanSettings

    resources = defs.resources
    settings, llm, ctrate = resources["settings"], resources["llm"], resources["ctrate"]
    plan_settings = resources.get("plan_settings") or PlanSettings()
    rebuilt = {key.to_user_string() for run in runs for key in run.asset_keys}
    generation = [runs_of(run.partition_keys) for run in runs if AssetKey("qa_candidates") in run.asset_keys]
    scoring = [runs_of(run.partition_keys) for run in runs if AssetKey("qa_scores") in run.asset_keys]
    stages = [stage for stage in STAGES if stage in rebuilt]
    config = plan_config(llm, settings, plan_settings)
    if config.backend == "openai" and stages:
        inputs = plan_inputs(
            settings, ctrate, rebuilt, generation, scoring, "scoring_consistency" in rebuilt, "spatial_qa" in rebuilt
        )
    else:
        inputs = PlanInputs(reports=pd.DataFrame(), sentences=pd.DataFrame())
    with plan_cache(llm, out) as cache:
        plan = plan_llm(config, cache, inputs, stages)
    path = write_plan(plan, out / "reports" / "plan.json")
    print(f"rad3d build --plan: the LLM stages of {len(runs)} planned run(s); no request sent, nothing built")
    if not stages:
        print("No LLM stage in the selection (qa_candidates, qa_scores, scoring_consistency, spatial_qa).")
    else:
        print(plan.table())
    print(f"Plan written to {path}")
    return 0

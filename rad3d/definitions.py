"""The composition root: every asset, check and resource in one ``Definitions``.

``dagster dev`` / ``dagster-webserver`` load ``defs`` (workspace.yaml); ``rad3d build``
calls :func:`build_definitions` with its own settings.
"""

from __future__ import annotations

import os

from dagster import Definitions, EnvVar, load_asset_checks_from_modules, load_assets_from_modules

from assets import (
    automation,
    closed_qa,
    ctrate,
    evaluation,
    hub,
    open_qa,
    operations,
    plan,
    quality,
    release,
    report_sentences,
    volumes,
)
from assets.automation import with_automation
from assets.partitions import N_SHARDS
from assets.versions import with_versions_and_kinds
from rad3d.celery_jobs import celery_jobs
from resources.ctrate_source import CtrateSource
from resources.llm import LlmResource
from resources.models import ModelsResource
from resources.parquet_io import PartitionedParquetIOManager
from resources.plan_settings import PlanSettings
from resources.settings import Rad3dSettings, env_models, env_models_file, env_out_dir
from resources.volumes import volume_settings_from_env

ASSET_MODULES = (ctrate, report_sentences, open_qa, closed_qa, release, hub, quality, evaluation, volumes, plan)


def default_ctrate_root(out_dir: str) -> str:
    """RAD3D_CTRATE_ROOT, else the synthetic sample that ``rad3d sample-data`` writes."""
    return os.environ.get("RAD3D_CTRATE_ROOT", os.path.join(out_dir, "sample_ctrate"))


def llm_resource(backend: str | None) -> LlmResource:
    """The LLM resource from the environment; the key only ever as an EnvVar."""
    env = os.environ
    rate_text = env.get("RAD3D_LLM_MAX_FAILURE_RATE", "0.01").strip()
    try:
        max_failure_rate = float(rate_text.removesuffix("%")) / (100.0 if rate_text.endswith("%") else 1.0)
    except ValueError:
        raise ValueError(f"RAD3D_LLM_MAX_FAILURE_RATE={rate_text!r}: use a share such as 0.01 (or 1%)") from None
    return LlmResource(
        backend=backend or env.get("RAD3D_LLM", "auto"),
        api_key=EnvVar("OPENAI_API_KEY") if env.get("OPENAI_API_KEY") else None,
        generator_model=env.get("RAD3D_GENERATOR_MODEL", "gpt-4o-mini"),
        scorer_model=env.get("RAD3D_SCORER_MODEL", "gpt-4o-mini"),
        max_concurrency=int(env.get("RAD3D_LLM_CONCURRENCY", "8")),
        requests_per_minute=float(env.get("RAD3D_LLM_RPM", "0")),
        timeout_s=float(env.get("RAD3D_LLM_TIMEOUT", "120")),
        max_attempts=int(env.get("RAD3D_LLM_ATTEMPTS", "6")),
        max_parse_attempts=int(env.get("RAD3D_LLM_PARSE_ATTEMPTS", "3")),
        task3_stage1=env.get("RAD3D_TASK3_STAGE1", "sentences"),
        batch=env.get("RAD3D_LLM_BATCH", "0") == "1",
        judges=env.get("RAD3D_JUDGES", ""),
        judges_file=env.get("RAD3D_JUDGES_FILE") or None,
        spatial_model=env.get("RAD3D_SPATIAL_MODEL", "gpt-4o-mini"),
        batch_poll_s=float(env.get("RAD3D_LLM_BATCH_POLL_S", "30")),
        structured_outputs=env.get("RAD3D_LLM_STRUCTURED", "0").strip().lower() in {"1", "true", "yes", "on"},
        max_failure_rate=max_failure_rate,
        # USD per million tokens: the accounting's cost and the plan's (rad3d build --plan, docs/plan.md)
        price_prompt_per_1m=float(env.get("RAD3D_LLM_PRICE_PROMPT", "0.15")),
        price_completion_per_1m=float(env.get("RAD3D_LLM_PRICE_COMPLETION", "0.60")),
    )


def build_definitions(
    *,
    ctrate_root: str | None = None,
    out_dir: str | None = None,
    splits: str | None = None,
    seed: int | None = None,
    llm_backend: str | None = None,
) -> Definitions:
    out = out_dir or env_out_dir()
    settings = Rad3dSettings(
        out_dir=out,
        splits=splits or os.environ.get("RAD3D_SPLIT", "all"),
        seed=seed if seed is not None else int(os.environ.get("RAD3D_SEED", "0")),
        n_shards=N_SHARDS,
        bertscore=os.environ.get("RAD3D_BERTSCORE", "1").lower() not in {"0", "false", "no", "off"},
        bertscore_model=os.environ.get("RAD3D_BERTSCORE_MODEL") or None,
        jury_judges=os.environ.get("RAD3D_JURY", ""),
        alignscore_ckpt=os.environ.get("RAD3D_ALIGNSCORE_CKPT") or None,
        metric_workers=int(os.environ.get("RAD3D_METRIC_WORKERS", "1")),
        label_classifier=os.environ.get("RAD3D_LABEL_CLASSIFIER") or None,
        ratescore_ner=os.environ.get("RAD3D_RATESCORE_NER") or None,
        ratescore_encoder=os.environ.get("RAD3D_RATESCORE_ENCODER") or None,
        radgraph_dir=os.environ.get("RAD3D_RADGRAPH_DIR") or None,
        radgraph_model_type=os.environ.get("RAD3D_RADGRAPH_MODEL_TYPE", "radgraph-xl"),
        green_judge=os.environ.get("RAD3D_GREEN_JUDGE", "0").strip().lower() in {"1", "true", "yes", "on"},
    )
    volume_settings = volume_settings_from_env()
    table_assets = with_automation(
        with_versions_and_kinds(
            load_assets_from_modules(list(ASSET_MODULES)),  # type: ignore[arg-type]
            volume_settings.profile_list(),
        )
    )
    return Definitions(
        assets=[*table_assets, *automation.SOURCE_ASSETS],
        jobs=celery_jobs(),
        sensors=[automation.automation_sensor, operations.run_failure_record],
        asset_checks=load_asset_checks_from_modules(list(ASSET_MODULES)),
        resources={
            "settings": settings,
            "ctrate": CtrateSource(root=ctrate_root or default_ctrate_root(out)),
            "io_manager": PartitionedParquetIOManager(base_dir=out),
            "llm": llm_resource(llm_backend),
            "models": ModelsResource(names=env_models(), models_file=env_models_file(), registry_dir=str(out)),
            "volume_settings": volume_settings,
            # how `rad3d build --plan` and the llm_plan asset count prompt tokens (docs/plan.md)
            "plan_settings": PlanSettings(tokenizer=os.environ.get("RAD3D_TOKENIZER") or None),
        },
    )


defs = build_definitions()

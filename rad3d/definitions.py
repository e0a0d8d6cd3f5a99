"""The composition root: every asset, check and resource in one ``Definitions``.

``dagster dev`` / ``dagster-webserver`` load ``defs`` (workspace.yaml); ``rad3d build``
calls :func:`build_definitions` with its own settings. Every setting comes from the settings
table (``resources/environment.py``), read here and handed to the resources, the automation
conditions and the sensors; secrets only as ``EnvVar``. (The shard count alone is read while the
asset modules are imported: ``assets/partitions.py`` says why.)
"""

from __future__ import annotations

from collections.abc import Mapping

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
from rad3d.stage_jobs import stage_jobs
from rad3d_pipeline.quality.judges import parse_judges
from resources import environment as E
from resources.ctrate_source import CtrateSource
from resources.llm import LlmResource
from resources.models import ModelsResource
from resources.parquet_io import PartitionedParquetIOManager
from resources.plan_settings import PlanSettings
from resources.settings import Rad3dSettings
from resources.volumes import volume_settings_from_env

ASSET_MODULES = (ctrate, report_sentences, open_qa, closed_qa, release, hub, quality, evaluation, volumes, plan)


def default_ctrate_root(out_dir: str, env: Mapping[str, str] | None = None) -> str:
    """RAD3D_CTRATE_ROOT, else the synthetic sample that ``rad3d sample-data`` writes."""
    return E.ctrate_root(env, out_dir)


def judge_key_variables(judges: str, judges_file: str | None) -> list[str]:
    """The ``api_key_env`` variables the judges file names (none when it does not parse: the scoring
    stage reports that file's mistake with its own one line when it runs)."""
    try:
        specs = parse_judges(judges, judges_file)
    except Exception:  # any mistake in the file is the scoring stage's one line to say, not the code location's
        return []
    return sorted({spec.api_key_env for spec in specs if spec.api_key_env})


def llm_resource(backend: str | None, env: Mapping[str, str] | None = None) -> LlmResource:
    """The LLM resource from the settings table; keys only ever as EnvVar."""
    judges, judges_file = E.read(E.JUDGES, env), E.read(E.JUDGES_FILE, env)
    return LlmResource(
        backend=backend or E.read(E.LLM, env),
        base_url=E.read(E.OPENAI_BASE_URL, env),
        api_key=EnvVar(E.OPENAI_API_KEY.name) if E.is_set(E.OPENAI_API_KEY, env) else None,
        generator_model=E.read(E.GENERATOR_MODEL, env),
        scorer_model=E.read(E.SCORER_MODEL, env),
        max_concurrency=E.read(E.LLM_CONCURRENCY, env),
        requests_per_minute=E.read(E.LLM_RPM, env),
        timeout_s=E.read(E.LLM_TIMEOUT, env),
        max_attempts=E.read(E.LLM_ATTEMPTS, env),
        max_parse_attempts=E.read(E.LLM_PARSE_ATTEMPTS, env),
        task3_stage1=E.read(E.TASK3_STAGE1, env),
        batch=E.read(E.LLM_BATCH, env),
        judges=judges,
        judges_file=judges_file,
        judge_api_keys={name: EnvVar(name) for name in E.set_names(judge_key_variables(judges, judges_file), env)},
        spatial_model=E.read(E.SPATIAL_MODEL, env),
        batch_poll_s=E.read(E.LLM_BATCH_POLL_S, env),
        structured_outputs=E.read(E.LLM_STRUCTURED, env),
        max_failure_rate=E.read(E.LLM_MAX_FAILURE_RATE, env),
        # USD per million tokens: the accounting's cost and the plan's (rad3d build --plan, docs/plan.md)
        price_prompt_per_1m=E.read(E.LLM_PRICE_PROMPT, env),
        price_completion_per_1m=E.read(E.LLM_PRICE_COMPLETION, env),
    )


def build_definitions(
    *,
    ctrate_root: str | None = None,
    out_dir: str | None = None,
    splits: str | None = None,
    seed: int | None = None,
    llm_backend: str | None = None,
    env: Mapping[str, str] | None = None,
) -> Definitions:
    """Everything, with the settings of ``env`` (default: this process's environment) where no argument gives one."""
    out = out_dir or E.read(E.OUT, env)
    settings = Rad3dSettings(
        out_dir=out,
        splits=splits or E.read(E.SPLIT, env),
        seed=seed if seed is not None else E.read(E.SEED, env),
        n_shards=N_SHARDS,
        bertscore=E.read(E.BERTSCORE, env),
        bertscore_model=E.read(E.BERTSCORE_MODEL, env),
        jury_judges=E.read(E.JURY, env),
        alignscore_ckpt=E.read(E.ALIGNSCORE_CKPT, env),
        metric_workers=E.read(E.METRIC_WORKERS, env),
        label_classifier=E.read(E.LABEL_CLASSIFIER, env),
        ratescore_ner=E.read(E.RATESCORE_NER, env),
        ratescore_encoder=E.read(E.RATESCORE_ENCODER, env),
        radgraph_dir=E.read(E.RADGRAPH_DIR, env),
        radgraph_model_type=E.read(E.RADGRAPH_MODEL_TYPE, env),
        green_judge=E.read(E.GREEN_JUDGE, env),
    )
    volume_settings = volume_settings_from_env(env)
    rebuild_cron = E.read(E.REBUILD_CRON, env)
    table_assets = with_automation(
        with_versions_and_kinds(
            load_assets_from_modules(list(ASSET_MODULES)),  # type: ignore[arg-type]
            volume_settings.profile_list(),
        ),
        rebuild_cron,
    )
    sources = automation.source_assets(E.read(E.OBSERVE_CRON, env))
    return Definitions(
        assets=[*table_assets, *sources],
        jobs=[
            *celery_jobs(env),
            *stage_jobs([*table_assets, *sources]),
        ],
        sensors=[automation.automation_sensor(rebuild_cron), operations.run_failure_record],
        asset_checks=load_asset_checks_from_modules(list(ASSET_MODULES)),
        resources={
            "settings": settings,
            "ctrate": CtrateSource(root=ctrate_root or default_ctrate_root(out, env)),
            "io_manager": PartitionedParquetIOManager(base_dir=out),
            "llm": llm_resource(llm_backend, env),
            "models": ModelsResource(
                names=E.read(E.MODELS, env), models_file=E.read(E.MODELS_FILE, env), registry_dir=str(out)
            ),
            "volume_settings": volume_settings,
            # how `rad3d build --plan` and the llm_plan asset count prompt tokens (docs/plan.md)
            "plan_settings": PlanSettings(tokenizer=E.read(E.TOKENIZER, env)),
        },
    )


defs = build_definitions()

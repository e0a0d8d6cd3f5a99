"""Build settings shared by the assets (data root, splits, seed, shards)."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field

from rad3d_pipeline import run_settings
from rad3d_pipeline.ctrate import Split, parse_splits
from rad3d_pipeline.patients import DEFAULT_SHARDS

DEFAULT_OUT = "data"


def env_out_dir() -> str:
    return os.environ.get("RAD3D_OUT", DEFAULT_OUT)


def env_shards() -> int:
    """Number of patient shards (RAD3D_SHARDS, default 16). Read at import: it shapes the partitions."""
    raw = os.environ.get("RAD3D_SHARDS", str(DEFAULT_SHARDS))
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"RAD3D_SHARDS={raw!r} is not a whole number") from None
    if not 1 <= value <= 4096:
        raise ValueError(f"RAD3D_SHARDS={value} must be between 1 and 4096")
    return value


def env_models() -> str:
    """Models to evaluate (RAD3D_MODELS, default the two baselines). Read at import: it shapes the partitions."""
    return os.environ.get("RAD3D_MODELS", "prior,random")


def env_models_file() -> str | None:
    return os.environ.get("RAD3D_MODELS_FILE") or None


def output_settings_from_env(code_versions: Mapping[str, str]) -> dict[str, str]:
    """The output-shaping settings this process takes from its own environment, plus the given code versions.

    The same variables and defaults as the composition root (rad3d/definitions.py) and the volumes
    resource read; the launching code location puts them on the GPU jobs as tags, a worker compares
    them with its own before a step runs (``Rad3dSettings.setup_for_execution``). Secrets are not
    among them; machine-local knobs that do not change an output (device, worker counts) neither.
    """
    from resources.volumes import volume_settings_from_env  # the volumes resource's own reading of the env

    volume = volume_settings_from_env()
    out = env_out_dir()
    env = os.environ
    settings = {
        "RAD3D_OUT": os.path.abspath(out),
        "RAD3D_CTRATE_ROOT": os.path.abspath(env.get("RAD3D_CTRATE_ROOT", os.path.join(out, "sample_ctrate"))),
        "RAD3D_SPLIT": env.get("RAD3D_SPLIT", "all"),
        "RAD3D_SEED": env.get("RAD3D_SEED", "0"),
        "RAD3D_SHARDS": str(env_shards()),
        "RAD3D_VOLUME_PROFILES": volume.profiles,
        "RAD3D_VOLUME_PROFILES_FILE": run_settings.file_identity(volume.profiles_file),
        "RAD3D_VOLUME_SPLITS": volume.splits,
        "RAD3D_CTRATE_VERSION": volume.ctrate_version,
        "RAD3D_MODELS": env_models(),
        "RAD3D_MODELS_FILE": run_settings.file_identity(env_models_file()),
    }
    settings.update({f"code_version:{name}": version for name, version in code_versions.items()})
    return settings


class Rad3dSettings(ConfigurableResource):
    """Where outputs go and what a build covers.

    Before a step runs, a run launched with output settings (the GPU jobs' ``rad3d/settings`` tag)
    is checked against this process's own: a worker whose settings or code versions differ refuses
    the step with one line naming each difference.
    """

    out_dir: str = Field(default=DEFAULT_OUT, description="Data root: tables, release, quarantine, reports.")
    splits: str = Field(default="all", description="CT-RATE splits to build: valid, train or all.")
    seed: int = Field(default=0, description="Seed of every shuffle and sample (templates, fractions).")
    n_shards: int = Field(default=DEFAULT_SHARDS, description="Patient shards; must equal RAD3D_SHARDS.")
    rename_valid_to_test: bool = Field(default=True, description="Export CT-RATE valid_ volumes as test_.")
    train_fractions: list[float] = Field(
        default=[0.01, 0.10], description="Seeded per-task fractions of the training set to export."
    )

    min_dimension_score: float = Field(default=3.0, description="Curation: every score dimension at least this.")
    min_mean_score: float = Field(default=3.0, description="Curation: mean score at least this.")
    cap: int = Field(default=10, description="Curation: max repeats of a question or answer string per file.")

    consistency_sample: int = Field(default=600, description="Scoring consistency: QA pairs every judge scores.")

    # Evaluation (metric_tables, leaderboard); the composition root fills them from RAD3D_* variables.
    bertscore: bool = Field(default=True, description="BERTScore F1 on open tasks (RAD3D_BERTSCORE).")
    bertscore_model: str | None = Field(
        default=None, description="Local roberta-large folder (RAD3D_BERTSCORE_MODEL); unset: all-MiniLM-L6-v2."
    )
    jury_judges: str = Field(
        default="", description="LLM-jury judges, comma-separated (RAD3D_JURY); empty: the configured judges."
    )
    alignscore_ckpt: str | None = Field(default=None, description="AlignScore checkpoint (RAD3D_ALIGNSCORE_CKPT).")
    metric_workers: int = Field(default=1, description="Text-metric processes (RAD3D_METRIC_WORKERS).")
    # Clinical metrics (clinical_metrics asset; docs/clinical-metrics.md): unset = "not computed", never 0.
    label_classifier: str | None = Field(
        default=None, description="Abnormality-label classifier folder (RAD3D_LABEL_CLASSIFIER)."
    )
    ratescore_ner: str | None = Field(default=None, description="RaTEScore NER model folder (RAD3D_RATESCORE_NER).")
    ratescore_encoder: str | None = Field(
        default=None, description="RaTEScore synonym encoder folder (RAD3D_RATESCORE_ENCODER)."
    )
    radgraph_dir: str | None = Field(default=None, description="RadGraph model cache folder (RAD3D_RADGRAPH_DIR).")
    radgraph_model_type: str = Field(
        default="radgraph-xl", description="RadGraph model type (RAD3D_RADGRAPH_MODEL_TYPE)."
    )
    green_judge: bool = Field(default=False, description="GREEN-style LLM judge on (RAD3D_GREEN_JUDGE=1).")

    def setup_for_execution(self, context: InitResourceContext) -> None:
        run = context.dagster_run
        if run is None or run_settings.SETTINGS_TAG not in run.tags:
            return
        local = run_settings.local_settings()
        if local is None:  # the composition root did not register them: this process's env, no code versions
            local = output_settings_from_env({})
        run_settings.check(run.tags, local)

    def split_tuple(self) -> tuple[Split, ...]:
        return parse_splits(self.splits)

    @property
    def out(self) -> Path:
        return Path(self.out_dir)

    def quarantine_path(self, asset_name: str) -> Path:
        return self.out / "quarantine" / f"{asset_name}.csv"

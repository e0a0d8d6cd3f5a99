"""Build settings shared by the assets (data root, splits, seed, shards)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from dagster import ConfigurableResource, InitResourceContext
from pydantic import Field

from rad3d_pipeline.common import run_settings
from rad3d_pipeline.ingest.ctrate import Split, parse_splits
from resources import environment


def output_settings_from_env(code_versions: Mapping[str, str], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The output-shaping settings of this process's environment (or ``env``), plus the given code versions.

    Read through the settings table (``resources/environment.py``), with the same defaults as the
    composition root; the launching code location puts them on the GPU jobs as tags, a worker
    compares them with its own before a step runs (``Rad3dSettings.setup_for_execution``).
    """
    return environment.output_settings(code_versions, env)


def env_shards() -> int:
    """RAD3D_SHARDS from the settings table (what ``assets.partitions`` shapes the partitions with)."""
    return environment.read(environment.SHARDS)


class Rad3dSettings(ConfigurableResource):
    """Where outputs go and what a build covers.

    Before a step runs, a run launched with output settings (the GPU jobs' ``rad3d/settings`` tag)
    is checked against this process's own: a worker whose settings or code versions differ refuses
    the step with one line naming each difference.
    """

    out_dir: str = Field(
        default=environment.OUT.default_value(), description="Data root: tables, release, quarantine, reports."
    )
    splits: str = Field(
        default=environment.SPLIT.default_value(), description="CT-RATE splits to build: valid, train or all."
    )
    seed: int = Field(
        default=environment.SEED.default_value(), description="Seed of every shuffle and sample (templates, fractions)."
    )
    n_shards: int = Field(
        default=environment.SHARDS.default_value(), description="Patient shards; must equal RAD3D_SHARDS."
    )
    rename_valid_to_test: bool = Field(default=True, description="Export CT-RATE valid_ volumes as test_.")
    train_fractions: list[float] = Field(
        default=[0.01, 0.10], description="Seeded per-task fractions of the training set to export."
    )

    min_dimension_score: float = Field(default=3.0, description="Curation: every score dimension at least this.")
    min_mean_score: float = Field(default=3.0, description="Curation: mean score at least this.")
    cap: int = Field(default=10, description="Curation: max repeats of a question or answer string per file.")

    consistency_sample: int = Field(default=600, description="Scoring consistency: QA pairs every judge scores.")

    # Evaluation (metric_tables, leaderboard); the composition root fills them from RAD3D_* variables.
    bertscore: bool = Field(
        default=environment.BERTSCORE.default_value(), description="BERTScore F1 on open tasks (RAD3D_BERTSCORE)."
    )
    bertscore_model: str | None = Field(
        default=environment.BERTSCORE_MODEL.default_value(),
        description="Local roberta-large folder (RAD3D_BERTSCORE_MODEL); unset: all-MiniLM-L6-v2.",
    )
    jury_judges: str = Field(
        default=environment.JURY.default_value(),
        description="LLM-jury judges, comma-separated (RAD3D_JURY); empty: the configured judges.",
    )
    alignscore_ckpt: str | None = Field(
        default=environment.ALIGNSCORE_CKPT.default_value(),
        description="AlignScore checkpoint (RAD3D_ALIGNSCORE_CKPT).",
    )
    metric_workers: int = Field(
        default=environment.METRIC_WORKERS.default_value(), description="Text-metric processes (RAD3D_METRIC_WORKERS)."
    )
    # Clinical metrics (clinical_metrics asset; docs/clinical-metrics.md): unset = "not computed", never 0.
    label_classifier: str | None = Field(
        default=environment.LABEL_CLASSIFIER.default_value(),
        description="Abnormality-label classifier folder (RAD3D_LABEL_CLASSIFIER).",
    )
    ratescore_ner: str | None = Field(
        default=environment.RATESCORE_NER.default_value(),
        description="RaTEScore NER model folder (RAD3D_RATESCORE_NER).",
    )
    ratescore_encoder: str | None = Field(
        default=environment.RATESCORE_ENCODER.default_value(),
        description="RaTEScore synonym encoder folder (RAD3D_RATESCORE_ENCODER).",
    )
    radgraph_dir: str | None = Field(
        default=environment.RADGRAPH_DIR.default_value(),
        description="RadGraph model cache folder (RAD3D_RADGRAPH_DIR).",
    )
    radgraph_model_type: str = Field(
        default=environment.RADGRAPH_MODEL_TYPE.default_value(),
        description="RadGraph model type (RAD3D_RADGRAPH_MODEL_TYPE).",
    )
    green_judge: bool = Field(
        default=environment.GREEN_JUDGE.default_value(), description="GREEN-style LLM judge on (RAD3D_GREEN_JUDGE=1)."
    )

    def setup_for_execution(self, context: InitResourceContext) -> None:
        run = context.dagster_run
        if run is None or run_settings.SETTINGS_TAG not in run.tags:
            return
        local = run_settings.local_settings()
        if local is None:  # the composition root did not register them: this process's env, no code versions
            local = environment.output_settings({})
        run_settings.check(run.tags, local)

    def split_tuple(self) -> tuple[Split, ...]:
        return parse_splits(self.splits)

    @property
    def out(self) -> Path:
        return Path(self.out_dir)

    def quarantine_path(self, asset_name: str) -> Path:
        return self.out / "quarantine" / f"{asset_name}.csv"

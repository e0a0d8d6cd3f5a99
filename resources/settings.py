"""Build settings shared by the assets (data root, splits, seed, shards)."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import ConfigurableResource
from pydantic import Field

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


class Rad3dSettings(ConfigurableResource):
    """Where outputs go and what a build covers."""

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

    def split_tuple(self) -> tuple[Split, ...]:
        return parse_splits(self.splits)

    @property
    def out(self) -> Path:
        return Path(self.out_dir)

    def quarantine_path(self, asset_name: str) -> Path:
        return self.out / "quarantine" / f"{asset_name}.csv"

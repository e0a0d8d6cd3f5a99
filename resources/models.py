"""Models to evaluate, as a resource: names (RAD3D_MODELS), a YAML file of kinds and options, and the
models ``rad3d eval`` registered under the data root (``<out>/models/registry.json``).

The models are the keys of the dynamic partitions ``models`` (:data:`assets.evaluation.model_partitions`):
``rad3d build`` and ``rad3d eval`` add them to the instance, so the UI shows a new one without a restart.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from dagster import ConfigurableResource
from pydantic import Field

from rad3d_pipeline.evaluation.models.base import ModelAdapter
from rad3d_pipeline.evaluation.models.baselines import PriorAdapter, RandomAdapter
from rad3d_pipeline.evaluation.models.imported import ImportedAdapter
from rad3d_pipeline.evaluation.models.openai_vlm import OpenAIVLMAdapter
from rad3d_pipeline.evaluation.models.registry import ModelSpec, limit_of, parse_models, read_registry
from resources import environment
from resources.llm import LlmResource

# The dynamic partitions the models are (assets.evaluation.model_partitions).
MODELS_PARTITIONS = "models"


class ModelsResource(ConfigurableResource):
    """Which models the predictions asset runs, and how each is built."""

    names: str = Field(
        default=environment.MODELS.default_value(), description="Comma-separated model names (RAD3D_MODELS)."
    )
    models_file: str | None = Field(
        default=environment.MODELS_FILE.default_value(), description="YAML file of models with kinds and options."
    )
    registry_dir: str | None = Field(
        default=None, description="Data root whose models/registry.json (written by `rad3d eval`) is consulted too."
    )

    def configured(self) -> list[ModelSpec]:
        """The models of RAD3D_MODELS / RAD3D_MODELS_FILE."""
        return parse_models(self.names, self.models_file)

    def specs(self) -> list[ModelSpec]:
        """Configured models, then the ones registered under the data root (a configured name wins)."""
        specs = {s.name: s for s in self.configured()}
        for spec in read_registry(self.registry_dir):
            specs.setdefault(spec.name, spec)
        return list(specs.values())

    def partition_keys(self) -> list[str]:
        """The keys of the ``models`` dynamic partitions this configuration defines."""
        return [spec.name for spec in self.specs()]

    def dynamic_partitions(self) -> dict[str, list[str]]:
        """The dynamic partition keys this resource defines (read by rad3d.build's planner)."""
        return {MODELS_PARTITIONS: self.partition_keys()}

    def spec(self, name: str) -> ModelSpec:
        for spec in self.specs():
            if spec.name == name:
                return spec
        where = f" or {self.registry_dir}/models/registry.json" if self.registry_dir else ""
        raise ValueError(f"model {name!r} is not configured (RAD3D_MODELS / RAD3D_MODELS_FILE{where})")

    def limit(self, name: str) -> int | None:
        """``rad3d eval --limit N``: the first N questions per subtask; None: every question."""
        return limit_of(self.spec(name))

    def adapter(self, name: str, training: pd.DataFrame, llm: LlmResource, out: Path, seed: int) -> ModelAdapter:
        spec = self.spec(name)
        options = dict(spec.options)
        if spec.kind == "prior":
            return PriorAdapter(training, name=name)
        if spec.kind == "random":
            return RandomAdapter(training, seed=seed, name=name)
        if spec.kind in {"openai_vlm", "text_only"}:
            endpoint = llm.endpoint(str(options.pop("model", name)))
            if "base_url" in options:
                from dataclasses import replace

                endpoint = replace(endpoint, base_url=str(options.pop("base_url")))
            from rad3d_pipeline.llm.client import LlmClient

            client = LlmClient(endpoint, llm.cache(out))
            return OpenAIVLMAdapter(
                client,
                name=name,
                text_only=spec.kind == "text_only" or bool(options.get("text_only", False)),
                n_slices=int(options.get("n_slices", 16)),
                planes=tuple(options.get("planes", ["axial"])),
                input_profile=None if spec.kind == "text_only" else str(options.get("profile", "m3d")),
            )
        if spec.kind == "hf_3d_vlm":
            from rad3d_pipeline.evaluation.models.hf_3d_vlm import (
                HF3DVLMAdapter,  # torch, imported when a model needs it
            )

            return HF3DVLMAdapter(
                path=str(options["path"]),
                name=name,
                device=str(options.get("device", "cpu")),
                dtype=str(options.get("dtype", "float32")),
                batch_size=int(options.get("batch_size", 4)),
                proj_out_num=int(options.get("proj_out_num", 256)),
                max_new_tokens=int(options.get("max_new_tokens", 64)),
                input_profile=str(options.get("profile", "m3d")),
            )
        if spec.kind == "import":
            return ImportedAdapter(Path(str(options["path"])), name=name)
        raise ValueError(f"model {name}: unknown kind {spec.kind!r}")

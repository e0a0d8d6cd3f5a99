"""Models to evaluate, as a resource: names (RAD3D_MODELS) and a YAML file of kinds and options."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
from dagster import ConfigurableResource
from pydantic import Field

from rad3d_pipeline.models.base import ModelAdapter
from rad3d_pipeline.models.baselines import PriorAdapter, RandomAdapter
from rad3d_pipeline.models.hf_3d_vlm import HF3DVLMAdapter
from rad3d_pipeline.models.imported import ImportedAdapter
from rad3d_pipeline.models.openai_vlm import OpenAIVLMAdapter
from rad3d_pipeline.models.registry import ModelSpec, parse_models
from resources.llm import LlmResource


class ModelsResource(ConfigurableResource):
    """Which models the predictions asset runs, and how each is built."""

    names: str = Field(default="prior,random", description="Comma-separated model names (RAD3D_MODELS).")
    models_file: str | None = Field(default=None, description="YAML file of models with kinds and options.")

    def specs(self) -> list[ModelSpec]:
        return parse_models(self.names, self.models_file)

    def spec(self, name: str) -> ModelSpec:
        for spec in self.specs():
            if spec.name == name:
                return spec
        raise ValueError(f"model {name!r} is not configured (RAD3D_MODELS / RAD3D_MODELS_FILE)")

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

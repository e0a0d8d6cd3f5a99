"""Settings of the LLM plan (``rad3d build --plan``, the ``llm_plan`` asset): the tokenizer to count with."""

from __future__ import annotations

from dagster import ConfigurableResource
from pydantic import Field

from resources import environment


class PlanSettings(ConfigurableResource):
    """How the plan counts prompt tokens (see docs/plan.md)."""

    tokenizer: str | None = Field(
        default=environment.TOKENIZER.default_value(),
        description="A tokenizer.json of the generator/scorer model (RAD3D_TOKENIZER), counted with the "
        "'tokenizers' package; unset: 4 letters per token plus one per run of digits and symbols, "
        "scaled by the cache's usage figures.",
    )

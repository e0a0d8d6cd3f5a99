"""Strict JSON schemas (OpenAI structured outputs, vLLM guided decoding) for each prompt template.

``response_format_for(name)`` is the ``response_format`` request parameter that makes the endpoint
answer a template's prompt with exactly the JSON its parser in :mod:`rad3d_pipeline.llm.parsers`
reads first; the paper's text formats stay the fallback when an endpoint has no structured outputs.

The schemas keep to the strict-mode subset every provider accepts: an object at the root, every
object with ``additionalProperties: false`` and all its properties required, no numeric or length
constraints (the parsers check counts and ranges), ``enum`` for closed value sets.

========================  ==========================================================================
template                  JSON reply
========================  ==========================================================================
``task12``                ``{"pairs": [{"index": 1, "question": "...", "answer": "..."}, ... 6]}``
``task3_stage1``          ``{"sentences": ["...", ...]}`` (an empty list when there is none)
``task3_stage2``          ``{"aspect": "Size" | "Diameter" | "Thickness", "question": ..., "answer": ...}``
``scoring``               ``{"Visual Verifiability": 1-5, ..., "Linguistic Quality": 1-5}``
``spatial_judge``         ``{"spatial": true | false, "category": "<one of six>" | ""}``
========================  ==========================================================================
"""

from __future__ import annotations

import copy
from typing import Any

from rad3d_pipeline.llm.parsers import SCORE_DIMENSIONS, SPATIAL_CATEGORIES, TASK3_ASPECTS, TASK12_ASPECTS

_STRING: dict[str, Any] = {"type": "string"}


def _object(properties: dict[str, dict[str, Any]], description: str = "") -> dict[str, Any]:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }
    if description:
        schema["description"] = description
    return schema


_PAIR = _object(
    {
        "index": {
            "type": "integer",
            "enum": list(range(1, 7)),
            "description": "1-6: " + "; ".join(f"{i}) {a}" for i, a in enumerate(TASK12_ASPECTS, 1)),
        },
        "question": _STRING,
        "answer": _STRING,
    }
)

SCHEMAS: dict[str, dict[str, Any]] = {
    "task12": _object(
        {
            "pairs": {
                "type": "array",
                "items": _PAIR,
                "description": "exactly six question-answer pairs, index 1 to 6 in order",
            }
        }
    ),
    "task3_stage1": _object(
        {
            "sentences": {
                "type": "array",
                "items": _STRING,
                "description": "the report's complete sentences with specific numerical values, verbatim; "
                "an empty list when there is none",
            }
        }
    ),
    "task3_stage2": _object(
        {"aspect": {"type": "string", "enum": list(TASK3_ASPECTS)}, "question": _STRING, "answer": _STRING}
    ),
    "scoring": _object({name: {"type": "integer", "enum": [1, 2, 3, 4, 5]} for name in SCORE_DIMENSIONS}),
    "spatial_judge": _object(
        {
            "spatial": {"type": "boolean"},
            "category": {
                "type": "string",
                "enum": [*SPATIAL_CATEGORIES, ""],
                "description": "one of the six categories when spatial is true, else the empty string",
            },
        }
    ),
}


def response_format_for(template_name: str) -> dict[str, Any] | None:
    """The strict ``json_schema`` response format for a prompt template (None: no schema for it)."""
    schema = SCHEMAS.get(template_name)
    if schema is None:
        return None
    return {
        "type": "json_schema",
        "json_schema": {"name": f"rad3d_{template_name}", "schema": copy.deepcopy(schema), "strict": True},
    }

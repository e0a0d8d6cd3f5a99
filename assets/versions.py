"""Code versions that mean something, and the kinds the asset graph shows.

Each asset's ``code_version`` is its own logic version (set on the decorator, bumped with its
code) plus a short digest of the versions that define its output: prompt templates, the rules
backend, question template pools, volume profile definitions, the metric protocols. Changing
one of them changes the code version of exactly the assets it defines, and Dagster marks those
and everything downstream stale.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence

from dagster import AssetsDefinition, AssetSpec, map_asset_specs

from rad3d_pipeline.closed_qa.question_templates import TEMPLATE_VERSION
from rad3d_pipeline.evaluation.metrics import PROTOCOL_VERSIONS
from rad3d_pipeline.llm.prompts import load_template
from rad3d_pipeline.open_qa import rules_backend
from rad3d_pipeline.volumes.profiles import Profile


def _prompts(*names: str) -> str:
    return ",".join(load_template(name).template_version for name in names)


def defining_versions(volume_profiles: Iterable[Profile]) -> dict[str, dict[str, str]]:
    """Per asset, the named versions its output depends on (beyond its own code)."""
    generation = _prompts("task12", "task3_stage1", "task3_stage2")
    profiles = ",".join(f"{p.name}:{p.version}" for p in volume_profiles)
    protocols = ",".join(f"{k}:{v}" for k, v in sorted(PROTOCOL_VERSIONS.items()))
    return {
        "qa_candidates": {"prompts": generation, "rules": rules_backend.MODEL},
        "qa_scores": {"prompts": _prompts("scoring"), "rules": rules_backend.MODEL},
        "scoring_consistency": {"prompts": _prompts("scoring"), "rules": rules_backend.MODEL},
        "spatial_qa": {"prompts": _prompts("spatial_judge")},
        "closed_qa": {"question_templates": TEMPLATE_VERSION},
        "volumes": {"profiles": profiles},
        "metric_tables": {"protocols": protocols},
        "leaderboard": {"protocols": protocols},
    }


def versioned_code(own: str | None, defining: dict[str, str] | None) -> str | None:
    """``<own>+<digest of the defining versions>``; the own version alone when nothing else defines it."""
    if not defining:
        return own
    digest = hashlib.sha256(json.dumps(defining, sort_keys=True).encode()).hexdigest()[:10]
    return f"{own or '1'}+{digest}"


# What each asset touches, shown as kind tags on the asset graph.
KINDS: dict[str, set[str]] = {
    "ctrate_labels": {"csv", "pandas"},
    "ctrate_reports": {"csv", "pandas"},
    "ctrate_metadata": {"csv", "pandas"},
    "patients": {"pandas"},
    "report_sentences": {"spacy", "parquet"},
    "qa_candidates": {"openai", "parquet"},
    "qa_scores": {"openai", "parquet"},
    "curated_qa": {"parquet"},
    "temporal_sequences": {"parquet"},
    "closed_qa": {"parquet"},
    "release_export": {"csv", "parquet"},
    "scoring_consistency": {"openai", "matplotlib"},
    "spatial_qa": {"openai", "json"},
    "benchmark_statistics": {"matplotlib", "parquet"},
    "volumes": {"nifti", "numpy", "parquet"},
    "predictions": {"pytorch", "openai", "parquet"},
    "metric_tables": {"nltk", "parquet"},
    "leaderboard": {"matplotlib", "csv"},
}


def with_versions_and_kinds(
    assets: Sequence[AssetsDefinition], volume_profiles: Iterable[Profile]
) -> list[AssetsDefinition]:
    versions = defining_versions(volume_profiles)

    def replace(spec: AssetSpec) -> AssetSpec:
        name = spec.key.to_user_string()
        return spec.replace_attributes(
            code_version=versioned_code(spec.code_version, versions.get(name)),
            kinds=set(spec.kinds) | KINDS.get(name, set()),
        )

    return list(map_asset_specs(replace, assets))

"""Code versions come from the versions that define each output; kinds show what each asset touches."""

from __future__ import annotations

import warnings
from dataclasses import replace

import pytest

from assets import versions
from rad3d.definitions import build_definitions
from rad3d_pipeline.llm import prompts
from rad3d_pipeline.volumes.profiles import resolve_profiles

warnings.filterwarnings("ignore", module="dagster")


def code_versions() -> dict[str, str | None]:
    graph = build_definitions(out_dir="unused").resolve_asset_graph()
    return {k.to_user_string(): graph.get(k).code_version for k in graph.materializable_asset_keys}


def changed(before: dict[str, str | None], after: dict[str, str | None]) -> set[str]:
    return {name for name in before if before[name] != after[name]}


def test_a_prompt_version_changes_exactly_the_assets_it_defines(monkeypatch: pytest.MonkeyPatch) -> None:
    before = code_versions()
    real = prompts.load_template

    def bumped(name: str) -> prompts.PromptTemplate:
        template = real(name)
        return replace(template, version=template.version + "-bumped") if name == "scoring" else template

    monkeypatch.setattr(versions, "load_template", bumped)
    assert changed(before, code_versions()) == {"qa_scores", "scoring_consistency"}


def test_a_volume_profile_changes_only_the_volumes(monkeypatch: pytest.MonkeyPatch) -> None:
    before = code_versions()
    monkeypatch.setenv("RAD3D_VOLUME_PROFILES", "ctclip")
    assert changed(before, code_versions()) == {"volumes"}
    monkeypatch.setenv("RAD3D_VOLUME_PROFILES", "m3d")
    assert changed(before, code_versions()) == set()


def test_metric_protocol_and_question_templates(monkeypatch: pytest.MonkeyPatch) -> None:
    before = code_versions()
    monkeypatch.setattr(versions, "PROTOCOL_VERSIONS", {"3drad": "3drad-99", "spatial": "spatial-2"})
    assert changed(before, code_versions()) == {"metric_tables", "leaderboard"}
    monkeypatch.undo()
    monkeypatch.setattr(versions, "TEMPLATE_VERSION", "99")
    assert changed(before, code_versions()) == {"closed_qa"}


def test_the_asset_s_own_version_stays_in_front() -> None:
    profiles = resolve_profiles("m3d", None)
    assert versions.versioned_code("3", None) == "3"
    composed = versions.versioned_code("3", versions.defining_versions(profiles)["volumes"])
    assert composed is not None and composed.startswith("3+")


def test_every_asset_shows_at_most_three_kinds() -> None:
    graph = build_definitions(out_dir="unused").resolve_asset_graph()
    for key in graph.materializable_asset_keys:
        kinds = graph.get(key).kinds
        assert 1 <= len(kinds) <= 3, (key, kinds)

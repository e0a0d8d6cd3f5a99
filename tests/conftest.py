"""Shared test helpers: where the public fixtures are (read-only, never copied)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def skip_or_fail(reason: str) -> None:
    """Skip outside CI; in CI (``CI`` set) a missing fixture, package or service is a failure."""
    if os.environ.get("CI"):
        pytest.fail(f"{reason} (CI is set: a missing prerequisite fails instead of skipping)", pytrace=False)
    pytest.skip(reason)


def fixtures_root() -> Path:
    return Path(os.environ.get("RAD3D_FIXTURES", REPO.parent / "shared" / "fixtures"))


@pytest.fixture
def fixtures() -> Path:
    root = fixtures_root()
    if not (root / "ctrate_mini").is_dir():
        skip_or_fail(f"public fixtures not found at {root} (set RAD3D_FIXTURES to ../shared/fixtures)")
    return root

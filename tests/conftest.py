"""Shared test helpers: where the public fixtures are (read-only, never copied)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def fixtures_root() -> Path:
    return Path(os.environ.get("RAD3D_FIXTURES", REPO.parent / "shared" / "fixtures"))


@pytest.fixture
def fixtures() -> Path:
    root = fixtures_root()
    if not (root / "ctrate_mini").is_dir():
        pytest.skip(f"public fixtures not found at {root} (set RAD3D_FIXTURES to ../shared/fixtures)")
    return root

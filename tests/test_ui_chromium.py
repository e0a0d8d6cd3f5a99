"""End to end: `rad3d ui` serves the Dagster UI and headless Chromium renders the asset graph with its groups.

Chromium is Debian's ``chromium`` package (``scripts/setup.sh --system``); the test is skipped, with
the reason, where it is absent. The screenshot goes to pytest's temp folder; its path is printed.
"""

from __future__ import annotations

import html
import os
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from rad3d.celery_jobs import CELERY_AVAILABLE
from tests.conftest import skip_or_fail
from tests.services import graphql, rad3d_ui, wait_for_daemons

pytestmark = pytest.mark.slow

# The pipeline's stages, as asset groups (assets/*.py GROUP); `volumes` and others may join them.
STAGE_GROUPS = {"ctrate_files", "ctrate", "sentences", "open_qa", "closed_qa", "release", "quality", "evaluation"}
GRAPH_PAGE = "/asset-groups"  # "Lineage" in the navigation: the global asset graph, one box per group
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--window-size=1600,1000",
    "--virtual-time-budget=20000",
]


def chromium_binary() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        found = shutil.which(name)
        if found:
            return found
    return None


ASSET_GROUPS_QUERY = "{ assetNodes { assetKey { path } groupName description } }"


@pytest.fixture
def ui(tmp_path: Path) -> Iterator[tuple[int, Path, list[dict[str, Any]]]]:
    """`rad3d ui --out <tmp>/data` on a free loopback port, with no DAGSTER_HOME set: the project's own."""
    out = tmp_path / "data"
    env = {k: v for k, v in os.environ.items() if k not in {"DAGSTER_HOME", "RAD3D_OUT"}}
    with rad3d_ui(out, env, tmp_path / "ui.log") as port:
        yield port, out, graphql(port, ASSET_GROUPS_QUERY)["data"]["assetNodes"]


def rendered_text(dom: str) -> list[str]:
    """The visible text nodes of a dumped DOM, in order."""
    body = re.sub(r"<script.*?</script>|<style.*?</style>", "", dom, flags=re.S)
    return [line.strip() for line in html.unescape(re.sub(r"<[^>]+>", "\n", body)).split("\n") if line.strip()]


LOCATIONS_QUERY = "{ workspaceOrError { ... on Workspace { locationEntries { name } } } }"
REPOSITORY_QUERY = """{ repositoriesOrError { ... on RepositoryConnection { nodes {
  schedules { name } sensors { name } jobs { name } } } } }"""


def test_rad3d_ui_asset_graph_in_chromium(ui: tuple[int, Path, list[dict[str, Any]]], tmp_path: Path) -> None:
    port, out, nodes = ui

    # The UI runs on the project's instance: <out>/dagster_home, with its dagster.yaml.
    assert (out / "dagster_home" / "dagster.yaml").is_file()
    groups = {node["groupName"] for node in nodes}
    assert groups >= STAGE_GROUPS, groups
    undescribed = [node["assetKey"]["path"] for node in nodes if not (node.get("description") or "").strip()]
    assert not undescribed, f"assets without a description: {undescribed}"

    # `rad3d ui` starts the daemon too (schedules, sensors, the run queue, backfills).
    daemons = {"SCHEDULER", "SENSOR", "QUEUED_RUN_COORDINATOR", "BACKFILL"}
    assert wait_for_daemons(port, daemons) >= daemons
    # One name for the code location everywhere (workspace.yaml, `rad3d ui`, the README's CLI commands).
    entries = graphql(port, LOCATIONS_QUERY)["data"]["workspaceOrError"]["locationEntries"]
    assert [entry["name"] for entry in entries] == ["rad3d"]
    [repo] = graphql(port, REPOSITORY_QUERY)["data"]["repositoriesOrError"]["nodes"]
    # Declarative automation: one sensor evaluates every asset's condition (the weekly rebuild is an
    # on_cron condition), so no schedule is left.
    assert {s["name"] for s in repo["schedules"]} == set()
    assert {s["name"] for s in repo["sensors"]} >= {"rad3d_automation", "run_failure_record"}
    if CELERY_AVAILABLE:
        assert {j["name"] for j in repo["jobs"]} >= {"volumes_on_gpu_workers", "predictions_on_gpu_workers"}

    chromium = chromium_binary()
    if chromium is None:
        skip_or_fail("Chromium not found (Debian: apt-get install chromium; scripts/setup.sh --system)")

    url = f"http://127.0.0.1:{port}{GRAPH_PAGE}"
    dom = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-dom'}", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    text = rendered_text(dom.stdout)
    assert "Global asset lineage" in text, text[:80]
    missing = sorted(g for g in groups if g not in text)
    assert not missing, f"groups not rendered on {GRAPH_PAGE}: {missing}; page text: {text[:80]}"
    # Each group is named in the sidebar's tree (label and title) and as a box of the graph itself.
    not_in_graph = sorted(g for g in groups if text.count(g) < 3)
    assert not not_in_graph, f"groups without a box in the graph: {not_in_graph}; page text: {text[:80]}"
    assert "Join the Dagster community" not in text  # nux disabled in dagster.yaml: nothing covers the graph

    shot = tmp_path / "ui_asset_graph.png"
    taken = subprocess.run(
        [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'chromium-shot'}", f"--screenshot={shot}", url],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert taken.returncode == 0 and shot.is_file(), taken.stderr[-2000:]
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 20_000  # a rendered page, not a blank one
    print(f"\nscreenshot of the asset graph: {shot}")

"""The Dagster instance the CLI uses: DAGSTER_HOME, defaulting to ``<out>/dagster_home``."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from dagster import DagsterInstance

# Same content as the repository's top-level dagster.yaml (a test keeps them equal);
# copied into a DAGSTER_HOME that has none.
PACKAGED_INSTANCE_YAML = Path(__file__).with_name("dagster.yaml")


def resolve_dagster_home(out_dir: str | Path) -> Path:
    """DAGSTER_HOME when set, else ``<out>/dagster_home``; created, with a dagster.yaml, and exported."""
    home = Path(os.environ.get("DAGSTER_HOME") or Path(out_dir) / "dagster_home").expanduser().resolve()
    home.mkdir(parents=True, exist_ok=True)
    target = home / "dagster.yaml"
    if not target.exists():
        shutil.copyfile(PACKAGED_INSTANCE_YAML, target)
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def get_instance(out_dir: str | Path) -> DagsterInstance:
    resolve_dagster_home(out_dir)
    return DagsterInstance.get()

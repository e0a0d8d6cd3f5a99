"""Loading the definitions stays cheap: no heavy library is imported until a step uses it.

Every run the UI launches (and, with the multiprocess executor, every step) is a fresh process that
imports ``rad3d.definitions``; torch alone costs 2 s there. A subprocess imports the definitions as
a run worker does, resolves the jobs, and lists the top-level packages it loaded beyond Dagster's
own; none may be a heavy library, and each must be on the allowed list below (a new import at the
top of a module the definitions reach shows up here, to be made lazy or added on purpose).
The same probe then runs a volume step, to show it sees a lazily imported library load.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any

import pytest

from tests.conftest import REPO

# Heavy libraries (seconds to import, or hundreds of MB): imported only inside the functions that use them.
HEAVY = {
    "torch",
    "torchvision",
    "transformers",
    "sentence_transformers",
    "tokenizers",
    "safetensors",
    "huggingface_hub",
    "accelerate",
    "monai",
    "datasets",
    "evaluate",
    "bert_score",
    "matplotlib",
    "seaborn",
    "wordcloud",
    "scipy",
    "sklearn",
    "SimpleITK",
    "nibabel",
    "spacy",
    "nltk",
    "PIL",
    "celery",
    "kombu",
}

# What the definitions may load beyond Dagster and its dependencies: the table stack, and the LLM
# client's (openai with its HTTP stack, tenacity: rad3d_pipeline/llm/client.py imports them at the top).
ALLOWED = {
    "numpy",
    "pandas",
    "pyarrow",
    "dateutil",
    "pytz",
    "tzdata",
    "yaml",
    "pydantic",
    "pydantic_core",
    "annotated_types",
    "typing_extensions",
    "typing_inspection",
    "openai",
    "httpx",
    "httpcore",
    "h11",
    "anyio",
    "sniffio",
    "idna",
    "certifi",
    "distro",
    "jiter",
    "tqdm",
    "tenacity",
    "httpx2",
    "rich",
    "pygments",
    "cloudpickle",  # Dagster's, loaded when it resolves the jobs
    "dagster_celery",  # the Celery jobs' executor; celery itself stays out (HEAVY)
}

PROJECT = {"rad3d", "rad3d_pipeline", "assets", "resources"}

PROBE = textwrap.dedent(
    """
    import json, sys, warnings
    warnings.simplefilter("ignore")
    import dagster
    baseline = {name.split(".")[0] for name in sys.modules}
    stdlib = set(sys.stdlib_module_names)

    def loaded():
        added = {name.split(".")[0] for name in sys.modules} - baseline
        return sorted(m for m in added if m not in stdlib and not m.startswith("_"))

    import rad3d.definitions
    defs = rad3d.definitions.defs
    defs.resolve_asset_graph()
    defs.resolve_all_job_defs()  # what a run worker resolves before its first step
    print(json.dumps(loaded()))

    # A volume step, as a run of the volumes asset calls it: it imports torch itself.
    import numpy as np
    from rad3d_pipeline.volumes.steps import volume_from_array
    vol = volume_from_array(np.arange(8, dtype=np.int16).reshape(2, 2, 2), (1.0, 1.0, 1.0))
    assert vol.materialize().data.sum().item() == 28.0
    print(json.dumps(loaded()))
    """
)


@pytest.fixture(scope="module")
def probe() -> tuple[set[str], set[str]]:
    """Top-level non-stdlib packages a fresh interpreter loads beyond Dagster's: for the definitions, then
    after a volume step ran."""
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HOME": str(REPO)}
    done = subprocess.run([sys.executable, "-c", PROBE], capture_output=True, text=True, cwd=REPO, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    lines: list[Any] = [json.loads(line) for line in done.stdout.strip().splitlines()[-2:]]
    return set(lines[0]), set(lines[1])


def test_the_definitions_import_no_heavy_library(probe: tuple[set[str], set[str]]) -> None:
    definitions, _ = probe
    assert definitions >= PROJECT  # the probe did load the project
    assert not definitions & HEAVY, sorted(definitions & HEAVY)


def test_everything_the_definitions_import_is_on_the_allowed_list(probe: tuple[set[str], set[str]]) -> None:
    unexpected = probe[0] - PROJECT - ALLOWED
    assert not unexpected, f"new top-level imports when loading the definitions: {sorted(unexpected)}"


def test_a_volume_step_imports_torch_when_it_runs(probe: tuple[set[str], set[str]]) -> None:
    """The probe sees a lazily imported library load (so the guard above can fail), and the step works."""
    definitions, after_step = probe
    assert "torch" in after_step - definitions

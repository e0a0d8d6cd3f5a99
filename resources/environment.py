"""The one table of settings: every RAD3D_* variable with its default, its parser and a one-line doc.

Who reads what:

- The composition root (``rad3d/definitions.py``) builds every resource from this table with
  :func:`read`; resources never look at the environment themselves, and their field defaults are
  the table's (``default_of``). Secrets (``OPENAI_API_KEY``, a judge's ``api_key_env``) reach a
  resource only as ``dagster.EnvVar``, so they never appear in run config, logs or metadata.
- One value is read while the asset modules are imported: ``RAD3D_SHARDS`` (``assets/partitions.py``).
  Dagster's asset decorators take their ``partitions_def`` when the module is imported, so the shard
  count must be known before the composition root runs; it is read from this table all the same
  (:func:`read`), never from ``os.environ`` directly.
- Output-shaping settings (``shapes_outputs``) travel with the GPU jobs as run tags
  (:func:`output_settings`, ``rad3d_pipeline.common.run_settings``); a worker whose own differ refuses the step.
- A few variables are read by something other than the code location (``reader``): the Dagster
  instance file (``{env: NAME}``), the Celery worker file, the command line, the tests. They are
  listed here so that this table, the README's configuration table and the code agree.

An empty value counts as unset (``RAD3D_SPLIT=`` means the default, as in a Docker env file). A
value that does not parse is one line naming the variable, the value and what to write instead
(:class:`SettingError`, a ``ValueError``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from rad3d_pipeline.common import run_settings
from rad3d_pipeline.common.errors import UserFacingError
from rad3d_pipeline.ingest.patients import DEFAULT_SHARDS

T = TypeVar("T")

# Who reads a variable.
CODE_LOCATION = "code location"  # the composition root, when Dagster loads the definitions
INSTANCE_FILE = "instance file"  # {env: NAME} in $DAGSTER_HOME/dagster.yaml (deploy/dagster.production.yaml)
CELERY_CONFIG = "celery config"  # {env: NAME} in the Celery executor's config and deploy/celery_worker.yaml
COMMAND_LINE = "command line"  # rad3d build / rad3d eval
TESTS = "tests"  # tests/conftest.py
SCRIPTS = "scripts"  # scripts/*.sh


class SettingError(UserFacingError, ValueError):
    """A variable whose value does not parse: one line, naming it (the CLI prints it without a traceback)."""


# --- parsers: text -> value; ValueError with the reason (the caller adds NAME=value) ---------------


def text(value: str) -> str:
    return value


def optional_text(value: str) -> str | None:
    return value or None


def whole(low: int, high: int | None = None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        try:
            number = int(value)
        except ValueError:
            raise ValueError("not a whole number") from None
        if number < low or (high is not None and number > high):
            raise ValueError(f"must be between {low} and {high}" if high is not None else f"must be at least {low}")
        return number

    return parse


def seconds(value: str) -> int:
    """A positive whole number of seconds."""
    try:
        number = int(value)
    except ValueError:
        raise ValueError("not a whole number of seconds") from None
    if number <= 0:
        raise ValueError("must be a positive number of seconds")
    return number


def number(low: float, *, above: bool = False) -> Callable[[str], float]:
    def parse(value: str) -> float:
        try:
            result = float(value)
        except ValueError:
            raise ValueError("not a number") from None
        if result != result or result < low or (above and result == low):  # NaN, or out of range
            raise ValueError(f"must be {'above' if above else 'at least'} {low:g}")
        return result

    return parse


FLAG_ON = ("1", "true", "yes", "on")
FLAG_OFF = ("0", "false", "no", "off")


def flag(value: str) -> bool:
    lowered = value.lower()
    if lowered in FLAG_ON:
        return True
    if lowered in FLAG_OFF:
        return False
    raise ValueError("use 1 or 0 (also true/false, yes/no, on/off)")


def share(value: str) -> float:
    """A share between 0 and 1, written 0.01 or 1%."""
    try:
        result = float(value.removesuffix("%")) / (100.0 if value.endswith("%") else 1.0)
    except ValueError:
        raise ValueError("use a share such as 0.01 (or 1%)") from None
    if not 0.0 <= result <= 1.0:
        raise ValueError("use a share between 0 and 1 (or 0% and 100%)")
    return result


CRON_FIELD = re.compile(r"^[0-9A-Za-z*/,?-]+$")


def cron(value: str) -> str:
    """A five-field cron schedule (minute hour day-of-month month day-of-week)."""
    fields = value.split()
    if len(fields) != 5 or not all(CRON_FIELD.match(field) for field in fields):
        raise ValueError("not a cron schedule of five fields, e.g. '30 2 * * 1' (Mondays 02:30)")
    return " ".join(fields)


# --- the table -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Setting(Generic[T]):
    """One variable: its name, its default as a user would write it ('' = unset), its parser, its doc."""

    name: str
    default: str
    parse: Callable[[str], T]
    doc: str
    reader: str = CODE_LOCATION
    secret: bool = False  # only ever handed to a resource as dagster.EnvVar
    shapes_outputs: bool = False  # part of the settings every machine of a deployment must share

    def default_value(self) -> T:
        """The parsed default: what a resource field defaults to."""
        return self.parse(self.default)


TABLE: list[Setting[object]] = []


def _add(setting: Setting[T]) -> Setting[T]:
    if any(s.name == setting.name for s in TABLE):
        raise RuntimeError(f"{setting.name} is in the settings table twice")
    TABLE.append(setting)  # type: ignore[arg-type]  # the table holds settings of every value type
    return setting


# The model every LLM role uses unless told otherwise (the paper's generator, scorer and judges).
DEFAULT_LLM_MODEL = "gpt-4o-mini"

# Where and what
OUT = _add(Setting("RAD3D_OUT", "data", text, "data root: tables, release, reports, failures", shapes_outputs=True))
CTRATE_ROOT = _add(
    Setting(
        "RAD3D_CTRATE_ROOT",
        "",
        optional_text,
        "CT-RATE root; unset: <out>/sample_ctrate (what `rad3d sample-data` writes)",
        shapes_outputs=True,
    )
)
SPLIT = _add(Setting("RAD3D_SPLIT", "all", text, "CT-RATE splits to build: valid, train or all", shapes_outputs=True))
SEED = _add(Setting("RAD3D_SEED", "0", whole(0), "seed of every shuffle and sample", shapes_outputs=True))
SHARDS = _add(
    Setting(
        "RAD3D_SHARDS",
        str(DEFAULT_SHARDS),
        whole(1, 4096),
        "patient shards; read when the asset modules are imported (it shapes the partitions)",
        shapes_outputs=True,
    )
)

# LLM endpoints (Tasks 1-3, judges)
OPENAI_BASE_URL = _add(
    Setting("OPENAI_BASE_URL", "", optional_text, "the OpenAI-compatible endpoint (the OpenAI client's own variable)")
)
OPENAI_API_KEY = _add(
    Setting("OPENAI_API_KEY", "", optional_text, "the endpoint's key (handed over as EnvVar only)", secret=True)
)
LLM = _add(Setting("RAD3D_LLM", "auto", text, "LLM backend: rules, openai, or auto (openai when an endpoint is set)"))
GENERATOR_MODEL = _add(Setting("RAD3D_GENERATOR_MODEL", DEFAULT_LLM_MODEL, text, "model that writes QA"))
SCORER_MODEL = _add(Setting("RAD3D_SCORER_MODEL", DEFAULT_LLM_MODEL, text, "model that scores QA (Figure 17)"))
SPATIAL_MODEL = _add(Setting("RAD3D_SPATIAL_MODEL", DEFAULT_LLM_MODEL, text, "the LLM judge of spatial questions"))
LLM_CONCURRENCY = _add(Setting("RAD3D_LLM_CONCURRENCY", "8", whole(1), "requests in flight per endpoint"))
LLM_RPM = _add(Setting("RAD3D_LLM_RPM", "0", number(0.0), "request-rate limit per endpoint; 0 = none"))
LLM_TIMEOUT = _add(Setting("RAD3D_LLM_TIMEOUT", "120", number(0.0, above=True), "seconds per request"))
LLM_ATTEMPTS = _add(Setting("RAD3D_LLM_ATTEMPTS", "6", whole(1), "transport attempts per request (429, 5xx, timeouts)"))
LLM_PARSE_ATTEMPTS = _add(
    Setting("RAD3D_LLM_PARSE_ATTEMPTS", "3", whole(1), "fresh requests after an unparsable reply")
)
LLM_BATCH = _add(Setting("RAD3D_LLM_BATCH", "0", flag, "1: first attempts through the OpenAI Batch API"))
LLM_BATCH_POLL_S = _add(
    Setting("RAD3D_LLM_BATCH_POLL_S", "30", number(0.0, above=True), "seconds between Batch API polls")
)
LLM_STRUCTURED = _add(Setting("RAD3D_LLM_STRUCTURED", "0", flag, "1: ask with a strict JSON schema per prompt"))
LLM_MAX_FAILURE_RATE = _add(
    Setting("RAD3D_LLM_MAX_FAILURE_RATE", "0.01", share, "share of an LLM stage's requests that may end unanswered")
)
LLM_PRICE_PROMPT = _add(Setting("RAD3D_LLM_PRICE_PROMPT", "0.15", number(0.0), "USD per million prompt tokens"))
LLM_PRICE_COMPLETION = _add(
    Setting("RAD3D_LLM_PRICE_COMPLETION", "0.60", number(0.0), "USD per million completion tokens")
)
TASK3_STAGE1 = _add(
    Setting("RAD3D_TASK3_STAGE1", "sentences", text, "Task 3 stage 1: sentences (the sentence asset) or llm")
)
JUDGES = _add(Setting("RAD3D_JUDGES", "", text, "judge models of scoring_consistency, comma-separated"))
JUDGES_FILE = _add(Setting("RAD3D_JUDGES_FILE", "", optional_text, "YAML file giving judges their own endpoints"))
TOKENIZER = _add(Setting("RAD3D_TOKENIZER", "", optional_text, "tokenizer.json the LLM plan counts prompt tokens with"))

# Volumes
VOLUME_PROFILES = _add(
    Setting("RAD3D_VOLUME_PROFILES", "m3d", text, "preprocessing profiles, comma-separated", shapes_outputs=True)
)
VOLUME_PROFILES_FILE = _add(
    Setting("RAD3D_VOLUME_PROFILES_FILE", "", optional_text, "YAML file of custom profiles", shapes_outputs=True)
)
VOLUME_SPLITS = _add(
    Setting("RAD3D_VOLUME_SPLITS", "valid", text, "CT-RATE splits whose volumes are built", shapes_outputs=True)
)
VOLUME_WORKERS = _add(Setting("RAD3D_VOLUME_WORKERS", "1", whole(1), "worker processes, one volume in flight each"))
VOLUME_DEVICE = _add(Setting("RAD3D_VOLUME_DEVICE", "auto", text, "auto (CUDA when torch sees one), cpu or cuda"))
CTRATE_VERSION = _add(
    Setting("RAD3D_CTRATE_VERSION", "auto", text, "auto (per volume), v1 (rescale) or v2 (HU)", shapes_outputs=True)
)

# Evaluation
MODELS = _add(Setting("RAD3D_MODELS", "prior,random", text, "models to evaluate, comma-separated", shapes_outputs=True))
MODELS_FILE = _add(
    Setting("RAD3D_MODELS_FILE", "", optional_text, "YAML file of models with kinds and options", shapes_outputs=True)
)
BERTSCORE = _add(Setting("RAD3D_BERTSCORE", "1", flag, "0: no BERTScore in metric_tables"))
BERTSCORE_MODEL = _add(
    Setting("RAD3D_BERTSCORE_MODEL", "", optional_text, "local roberta-large folder; unset: all-MiniLM-L6-v2")
)
JURY = _add(Setting("RAD3D_JURY", "", text, "LLM-jury judges, comma-separated; empty: the configured judges"))
ALIGNSCORE_CKPT = _add(Setting("RAD3D_ALIGNSCORE_CKPT", "", optional_text, "AlignScore checkpoint"))
METRIC_WORKERS = _add(Setting("RAD3D_METRIC_WORKERS", "1", whole(1), "text-metric processes"))
LABEL_CLASSIFIER = _add(Setting("RAD3D_LABEL_CLASSIFIER", "", optional_text, "abnormality-label classifier folder"))
RATESCORE_NER = _add(Setting("RAD3D_RATESCORE_NER", "", optional_text, "RaTEScore NER model folder"))
RATESCORE_ENCODER = _add(Setting("RAD3D_RATESCORE_ENCODER", "", optional_text, "RaTEScore synonym encoder folder"))
RADGRAPH_DIR = _add(Setting("RAD3D_RADGRAPH_DIR", "", optional_text, "RadGraph model cache folder"))
RADGRAPH_MODEL_TYPE = _add(Setting("RAD3D_RADGRAPH_MODEL_TYPE", "radgraph-xl", text, "RadGraph model type"))
GREEN_JUDGE = _add(Setting("RAD3D_GREEN_JUDGE", "0", flag, "1: the GREEN-style LLM judge"))

# Automation and the GPU jobs
REBUILD_CRON = _add(Setting("RAD3D_REBUILD_CRON", "0 3 * * 0", cron, "cron of the weekly rebuild (Sundays 03:00)"))
OBSERVE_CRON = _add(Setting("RAD3D_OBSERVE_CRON", "0 * * * *", cron, "cron of observing the CT-RATE sources"))
GPU_MAX_RUNTIME_S = _add(Setting("RAD3D_GPU_MAX_RUNTIME_S", str(24 * 3600), seconds, "a GPU job's dagster/max_runtime"))
GPU_RETRY_DELAY_S = _add(
    Setting("RAD3D_GPU_RETRY_DELAY_S", "30", seconds, "first delay of a GPU step's retries (exponential)")
)
# Longer than the longest GPU step: an unacknowledged task is handed to another worker only after it.
CELERY_VISIBILITY_TIMEOUT_S = _add(
    Setting("RAD3D_CELERY_VISIBILITY_TIMEOUT_S", str(12 * 3600), seconds, "Celery redelivers a lost step after this")
)
CELERY_BROKER = _add(
    Setting("RAD3D_CELERY_BROKER", "", text, "Celery broker URL (Redis/RabbitMQ)", reader=CELERY_CONFIG)
)
CELERY_BACKEND = _add(
    Setting("RAD3D_CELERY_BACKEND", "", text, "Celery result backend URL (Redis/RabbitMQ)", reader=CELERY_CONFIG)
)
COMPUTE_LOGS = _add(
    Setting("RAD3D_COMPUTE_LOGS", "", text, "step stdout/stderr folder every machine mounts", reader=INSTANCE_FILE)
)
S3_ENDPOINT = _add(
    Setting("RAD3D_S3_ENDPOINT", "", text, "S3-compatible endpoint of S3 compute logs", reader=INSTANCE_FILE)
)

# Outside the code location
DEBUG = _add(Setting("RAD3D_DEBUG", "0", flag, "1: print the run log and tracebacks (as --debug)", reader=COMMAND_LINE))
SAMPLE_PATIENTS = _add(
    Setting("RAD3D_SAMPLE_PATIENTS", "40", whole(1), "patients of scripts/demo.sh's synthetic sample", reader=SCRIPTS)
)
FIXTURES = _add(Setting("RAD3D_FIXTURES", "../shared/fixtures", text, "the tests' public fixtures", reader=TESTS))


def by_name() -> dict[str, Setting[object]]:
    return {setting.name: setting for setting in TABLE}


def read(setting: Setting[T], env: Mapping[str, str] | None = None) -> T:
    """The setting's value in ``env`` (default: this process's environment); unset or empty: the default.

    The one place a RAD3D_* variable is read. A value that does not parse raises
    :class:`SettingError` with one line: ``RAD3D_SHARDS='x': not a whole number``.
    """
    if setting.secret:  # its value must not pass through Python code: hand over dagster.EnvVar(name)
        raise RuntimeError(f"{setting.name} is a secret: pass EnvVar({setting.name!r}) instead of its value")
    source = os.environ if env is None else env
    given = (source.get(setting.name) or "").strip()
    try:
        return setting.parse(given or setting.default)
    except ValueError as exc:
        raise SettingError(f"{setting.name}={given or setting.default!r}: {exc}") from None


def ctrate_root(env: Mapping[str, str] | None = None, out_dir: str | None = None) -> str:
    """RAD3D_CTRATE_ROOT, else the synthetic sample under the data root."""
    out = out_dir if out_dir is not None else read(OUT, env)
    return read(CTRATE_ROOT, env) or os.path.join(out, "sample_ctrate")


def is_set(setting: Setting[T], env: Mapping[str, str] | None = None) -> bool:
    """Whether the variable has a non-empty value (secrets: whether to hand over an EnvVar at all)."""
    source = os.environ if env is None else env
    return bool((source.get(setting.name) or "").strip())


def set_names(names: Iterable[str], env: Mapping[str, str] | None = None) -> list[str]:
    """The names among ``names`` that have a non-empty value (a judges file's key variables, say)."""
    source = os.environ if env is None else env
    return [name for name in names if (source.get(name) or "").strip()]


def output_settings(code_versions: Mapping[str, str], env: Mapping[str, str] | None = None) -> dict[str, str]:
    """The output-shaping settings (``shapes_outputs``) of ``env``, plus the given code versions.

    Paths are made absolute and files are named with the digest of their content, so that two
    machines agree exactly when their outputs would. Secrets are never among them; machine-local
    knobs that do not change an output (device, worker counts) neither.
    """
    out = read(OUT, env)
    settings = {
        OUT.name: os.path.abspath(out),
        CTRATE_ROOT.name: os.path.abspath(ctrate_root(env, out)),
        SPLIT.name: read(SPLIT, env),
        SEED.name: str(read(SEED, env)),
        SHARDS.name: str(read(SHARDS, env)),
        VOLUME_PROFILES.name: read(VOLUME_PROFILES, env),
        VOLUME_PROFILES_FILE.name: run_settings.file_identity(read(VOLUME_PROFILES_FILE, env)),
        VOLUME_SPLITS.name: read(VOLUME_SPLITS, env),
        CTRATE_VERSION.name: read(CTRATE_VERSION, env),
        MODELS.name: read(MODELS, env),
        MODELS_FILE.name: run_settings.file_identity(read(MODELS_FILE, env)),
    }
    settings.update({f"code_version:{name}": version for name, version in code_versions.items()})
    return settings

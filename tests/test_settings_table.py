"""One source of settings: the table in resources/environment.py, read by the composition root only.

- no module of assets/, resources/, rad3d/ reads a RAD3D_* variable from the environment itself
  (the table module, the commands that set variables for their child processes and the instance
  helper excepted), and no resource reads the environment at all;
- the table, the README/docs and the code name the same variables;
- every default is written once: resource field defaults are the table's, and the root hands each
  setting to the field a hand-written map below says it feeds;
- a value that does not parse is one line naming the variable.
"""

from __future__ import annotations

import ast
import json
import os
import re
from pathlib import Path

import pytest
from dagster import (
    DagsterEventType,
    DagsterInstance,
    EnvVar,
    asset,
    build_run_status_sensor_context,
    materialize,
)

from resources import environment as E
from tests.conftest import REPO

# Files allowed to touch RAD3D_* variables in os.environ: the table itself, the commands that set
# variables for the build they run in-process or in child processes, and the instance helper.
ALLOWED = {
    "resources/environment.py",
    "rad3d/cli.py",
    "rad3d/eval_command.py",
    "rad3d/instance.py",
}
SCANNED = ("assets", "resources", "rad3d")
NAME = re.compile(r"\bRAD3D_[A-Z0-9][A-Z0-9_]*[A-Z0-9]\b")


def _is_environ(node: ast.AST, aliases: set[str]) -> bool:
    if isinstance(node, ast.Attribute) and node.attr == "environ":
        return True
    return isinstance(node, ast.Name) and (node.id == "environ" or node.id in aliases)


def _rad3d_text(node: ast.AST | None) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("RAD3D_"):
        return node.value
    if isinstance(node, ast.JoinedStr):  # f"RAD3D_{...}"
        first = node.values[0] if node.values else None
        if isinstance(first, ast.Constant) and str(first.value).startswith("RAD3D_"):
            return str(first.value) + "..."
    return None


DYNAMIC = "a variable named at run time"


def environment_reads(source: str) -> list[tuple[int, str]]:
    """(line, what) for every read of a RAD3D_* variable from os.environ / os.getenv, and every alias of os.environ."""
    tree = ast.parse(source)
    aliases: set[str] = set()
    found: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign | ast.AnnAssign) and _is_environ(node.value, set()):  # type: ignore[arg-type]
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            aliases.update(t.id for t in targets if isinstance(t, ast.Name))
            found.append((node.lineno, "an alias of os.environ"))
    for node in ast.walk(tree):
        name: str | None = None
        if isinstance(node, ast.Call):
            func = node.func
            is_getenv = (isinstance(func, ast.Attribute) and func.attr == "getenv") or (
                isinstance(func, ast.Name) and func.id == "getenv"
            )
            is_get = (
                isinstance(func, ast.Attribute) and func.attr in {"get", "pop"} and _is_environ(func.value, aliases)
            )
            if (is_getenv or is_get) and node.args:
                key = node.args[0]
                name = (
                    _rad3d_text(key)
                    if isinstance(key, ast.Constant | ast.JoinedStr)
                    else "a variable named at run time"
                )
        elif isinstance(node, ast.Subscript) and isinstance(node.ctx, ast.Load) and _is_environ(node.value, aliases):
            key = node.slice
            name = _rad3d_text(key) if isinstance(key, ast.Constant | ast.JoinedStr) else DYNAMIC
        elif isinstance(node, ast.Compare) and any(_is_environ(c, aliases) for c in node.comparators):
            name = _rad3d_text(node.left)
        if name:
            found.append((node.lineno, f"reads {name}"))
    return found


def environ_uses(source: str) -> list[int]:
    """Lines that touch os.environ or os.getenv at all."""
    tree = ast.parse(source)
    return sorted(
        {
            node.lineno
            for node in ast.walk(tree)
            if (isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv"})
            or (isinstance(node, ast.Name) and node.id in {"environ", "getenv"})
        }
    )


def python_files(*folders: str) -> list[Path]:
    return sorted(p for folder in folders for p in (REPO / folder).rglob("*.py") if "__pycache__" not in p.parts)


def test_the_scanner_finds_every_way_of_reading_a_variable() -> None:
    """The scan below must be able to fail: each of these is found, setting a variable is not."""
    bad = {
        'import os\nx = os.environ.get("RAD3D_OUT", "data")\n': "reads RAD3D_OUT",
        'import os\nx = os.getenv("RAD3D_SEED")\n': "reads RAD3D_SEED",
        'import os\nx = os.environ["RAD3D_SPLIT"]\n': "reads RAD3D_SPLIT",
        'from os import environ\nx = environ.get("RAD3D_LLM")\n': "reads RAD3D_LLM",
        'import os\nenv = os.environ\nx = env.get("RAD3D_SHARDS", "16")\n': "reads RAD3D_SHARDS",
        'import os\nx = "RAD3D_DEBUG" in os.environ\n': "reads RAD3D_DEBUG",
        'import os\nn = "X"\nx = os.environ.get(f"RAD3D_{n}")\n': "reads RAD3D_...",
        'import os\ndef f(name):\n    return os.environ.get(name, "30")\n': "reads a variable named at run time",
    }
    for source, what in bad.items():
        assert what in [w for _, w in environment_reads(source)], source
    assert environment_reads('import os\nos.environ["RAD3D_OUT"] = "x"\nos.environ.get("HOME")\n') == []


def test_no_module_reads_a_rad3d_variable_from_the_environment() -> None:
    offenders = []
    for path in python_files(*SCANNED):
        rel = path.relative_to(REPO).as_posix()
        if rel in ALLOWED:
            continue
        offenders += [f"{rel}:{line}: {what}" for line, what in environment_reads(path.read_text())]
    assert not offenders, "read RAD3D_* through resources/environment.py instead:\n" + "\n".join(offenders)


def test_resources_never_read_the_environment() -> None:
    """Values and EnvVars come from the composition root; a resource does not look for them itself."""
    offenders = []
    for path in python_files("resources"):
        rel = path.relative_to(REPO).as_posix()
        if rel != "resources/environment.py":
            offenders += [f"{rel}:{line}" for line in environ_uses(path.read_text())]
    assert not offenders, "os.environ / os.getenv in a resource:\n" + "\n".join(offenders)


def _names_in(paths: list[Path]) -> dict[str, set[str]]:
    found: dict[str, set[str]] = {}
    for path in paths:
        for name in NAME.findall(path.read_text()):
            found.setdefault(name, set()).add(path.relative_to(REPO).as_posix())
    return found


def test_docs_and_the_table_name_the_same_variables() -> None:
    docs = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    documented = _names_in(docs)
    table = {s.name for s in E.TABLE if s.name.startswith("RAD3D_")}
    undocumented = sorted(table - set(documented))
    unknown = sorted(f"{name} ({', '.join(sorted(documented[name]))})" for name in set(documented) - table)
    print("in the table, not in README.md/docs:", undocumented or "none")
    print("in README.md/docs, not in the table:", unknown or "none")
    assert not undocumented and not unknown, f"not documented: {undocumented}; documented but unknown: {unknown}"


def test_every_variable_the_code_and_deploy_files_name_is_in_the_table() -> None:
    files = python_files("assets", "resources", "rad3d", "rad3d_pipeline") + sorted((REPO / "deploy").glob("*.yaml"))
    files += [REPO / "tests" / "conftest.py", *sorted((REPO / "scripts").glob("*.sh"))]
    named = _names_in(files)
    unknown = sorted(f"{name} ({', '.join(sorted(named[name]))})" for name in set(named) - set(E.by_name()))
    assert not unknown, "add these to resources/environment.py: " + "; ".join(unknown)


def test_each_variable_is_in_the_table_once_with_a_doc_and_a_default_that_parses() -> None:
    names = [s.name for s in E.TABLE]
    assert len(names) == len(set(names))
    for setting in E.TABLE:
        assert setting.doc.strip() and "\n" not in setting.doc, setting.name
        setting.default_value()  # the default itself parses
        assert setting.reader in {E.CODE_LOCATION, E.INSTANCE_FILE, E.CELERY_CONFIG, E.COMMAND_LINE, E.TESTS, E.SCRIPTS}
    assert [s.name for s in E.TABLE if s.secret] == ["OPENAI_API_KEY"]


# Defaults that are ordinary words with other meanings in the code (a backend or device named
# "auto", the split "valid"): the field-level checks below cover them.
GENERIC_WORDS = {"auto", "all", "valid", "data", "m3d", "sentences"}


def _quoted(literal: str) -> re.Pattern[str]:
    return re.compile(r"[\"']" + re.escape(literal) + r"[\"']")


def test_each_default_is_written_once() -> None:
    """The distinctive defaults ("gpt-4o-mini", "prior,random", the crons, ...) appear in the table and nowhere else."""
    table_text = (REPO / "resources" / "environment.py").read_text()
    others = {
        p.relative_to(REPO).as_posix(): p.read_text()
        for p in python_files(*SCANNED)
        if p.relative_to(REPO).as_posix() != "resources/environment.py"
    }
    checked = 0
    for setting in E.TABLE:
        literal = setting.default
        if not literal or re.fullmatch(r"[0-9.]+", literal) or literal in GENERIC_WORDS:
            continue
        checked += 1
        pattern = _quoted(literal)
        assert len(pattern.findall(table_text)) == 1, f"{setting.name}: default {literal!r} written more than once"
        elsewhere = [rel for rel, text in others.items() if pattern.search(text)]
        assert not elsewhere, f"{setting.name}: default {literal!r} written again in {elsewhere}"
    assert checked >= 6  # gpt-4o-mini, prior,radom, radgraph-xl, two crons, ../shared/fixtures


RESOURCE_MODULES = ("settings", "llm", "volumes", "models", "plan_settings")


def test_resource_field_defaults_are_the_tables() -> None:
    """Every resource field that a setting feeds takes its default from that setting (never a literal)."""
    fed = {field for fields in FEEDS.values() for field in fields}
    seen = set()
    for module in RESOURCE_MODULES:
        tree = ast.parse((REPO / "resources" / f"{module}.py").read_text())
        for cls in (n for n in ast.walk(tree) if isinstance(n, ast.ClassDef)):
            for item in cls.body:
                if not (isinstance(item, ast.AnnAssign) and isinstance(item.target, ast.Name)):
                    continue
                key = (RESOURCE_KEYS.get(cls.name, cls.name), item.target.id)
                if key not in fed:
                    continue
                seen.add(key)
                default = next(
                    (kw.value for kw in getattr(item.value, "keywords", []) if kw.arg == "default"), item.value
                )
                text = ast.unparse(default) if default is not None else ""
                assert re.fullmatch(r"environment\.[A-Z0-9_]+\.default_value\(\)", text), (
                    f"{cls.name}.{item.target.id} defaults to {text!r}, not the table's default"
                )
    assert seen == fed, f"fields not found: {sorted(fed - seen)}"


# Which resource field each setting feeds, written by hand: an independent reference for the root.
RESOURCE_KEYS = {
    "Rad3dSettings": "settings",
    "LlmResource": "llm",
    "VolumeSettings": "volume_settings",
    "ModelsResource": "models",
    "PlanSettings": "plan_settings",
}
FEEDS: dict[str, list[tuple[str, str]]] = {
    "RAD3D_OUT": [("settings", "out_dir")],
    "RAD3D_SPLIT": [("settings", "splits")],
    "RAD3D_SEED": [("settings", "seed")],
    "RAD3D_BERTSCORE": [("settings", "bertscore")],
    "RAD3D_BERTSCORE_MODEL": [("settings", "bertscore_model")],
    "RAD3D_JURY": [("settings", "jury_judges")],
    "RAD3D_ALIGNSCORE_CKPT": [("settings", "alignscore_ckpt")],
    "RAD3D_METRIC_WORKERS": [("settings", "metric_workers")],
    "RAD3D_LABEL_CLASSIFIER": [("settings", "label_classifier")],
    "RAD3D_RATESCORE_NER": [("settings", "ratescore_ner")],
    "RAD3D_RATESCORE_ENCODER": [("settings", "ratescore_encoder")],
    "RAD3D_RADGRAPH_DIR": [("settings", "radgraph_dir")],
    "RAD3D_RADGRAPH_MODEL_TYPE": [("settings", "radgraph_model_type")],
    "RAD3D_GREEN_JUDGE": [("settings", "green_judge")],
    "OPENAI_BASE_URL": [("llm", "base_url")],
    "RAD3D_LLM": [("llm", "backend")],
    "RAD3D_GENERATOR_MODEL": [("llm", "generator_model")],
    "RAD3D_SCORER_MODEL": [("llm", "scorer_model")],
    "RAD3D_SPATIAL_MODEL": [("llm", "spatial_model")],
    "RAD3D_LLM_CONCURRENCY": [("llm", "max_concurrency")],
    "RAD3D_LLM_RPM": [("llm", "requests_per_minute")],
    "RAD3D_LLM_TIMEOUT": [("llm", "timeout_s")],
    "RAD3D_LLM_ATTEMPTS": [("llm", "max_attempts")],
    "RAD3D_LLM_PARSE_ATTEMPTS": [("llm", "max_parse_attempts")],
    "RAD3D_LLM_BATCH": [("llm", "batch")],
    "RAD3D_LLM_BATCH_POLL_S": [("llm", "batch_poll_s")],
    "RAD3D_LLM_STRUCTURED": [("llm", "structured_outputs")],
    "RAD3D_LLM_MAX_FAILURE_RATE": [("llm", "max_failure_rate")],
    "RAD3D_LLM_PRICE_PROMPT": [("llm", "price_prompt_per_1m")],
    "RAD3D_LLM_PRICE_COMPLETION": [("llm", "price_completion_per_1m")],
    "RAD3D_TASK3_STAGE1": [("llm", "task3_stage1")],
    "RAD3D_JUDGES": [("llm", "judges")],
    "RAD3D_JUDGES_FILE": [("llm", "judges_file")],
    "RAD3D_TOKENIZER": [("plan_settings", "tokenizer")],
    "RAD3D_VOLUME_PROFILES": [("volume_settings", "profiles")],
    "RAD3D_VOLUME_PROFILES_FILE": [("volume_settings", "profiles_file")],
    "RAD3D_VOLUME_SPLITS": [("volume_settings", "splits")],
    "RAD3D_VOLUME_WORKERS": [("volume_settings", "workers")],
    "RAD3D_VOLUME_DEVICE": [("volume_settings", "device")],
    "RAD3D_CTRATE_VERSION": [("volume_settings", "ctrate_version")],
    "RAD3D_MODELS": [("models", "names")],
    "RAD3D_MODELS_FILE": [("models", "models_file")],
}
# Settings the root uses otherwise (checked in the test below), or that shape partitions at import,
# or that the Celery jobs read.
ELSEWHERE = {
    "RAD3D_CTRATE_ROOT",
    "RAD3D_SHARDS",
    "OPENAI_API_KEY",
    "RAD3D_REBUILD_CRON",
    "RAD3D_OBSERVE_CRON",
    "RAD3D_GPU_MAX_RUNTIME_S",
    "RAD3D_GPU_RETRY_DELAY_S",
    "RAD3D_CELERY_VISIBILITY_TIMEOUT_S",
}


def _sentinel(setting: E.Setting[object], tmp_path: Path) -> str:
    """A valid value different from the default."""
    special = {
        "RAD3D_OUT": str(tmp_path / "out"),
        "RAD3D_SPLIT": "valid",
        "RAD3D_LLM": "rules",
        "RAD3D_VOLUME_PROFILES": "ctclip",
        "RAD3D_VOLUME_SPLITS": "all",
        "RAD3D_VOLUME_DEVICE": "cpu",
        "RAD3D_CTRATE_VERSION": "v2",
        "RAD3D_MODELS": "prior",
        "RAD3D_TASK3_STAGE1": "llm",
        "RAD3D_LLM_MAX_FAILURE_RATE": "5%",
        "RAD3D_REBUILD_CRON": "30 2 * * 1",
        "RAD3D_OBSERVE_CRON": "15 * * * *",
        "OPENAI_BASE_URL": "http://127.0.0.1:9/v1",
    }
    if setting.name in special:
        return special[setting.name]
    default = setting.default_value()
    if isinstance(default, bool):
        return "0" if default else "1"
    if isinstance(default, int | float):
        return str(int(default) + 7)
    return f"{setting.name.lower()}-value"


def test_the_root_builds_every_resource_from_the_table(tmp_path: Path) -> None:
    from rad3d.definitions import build_definitions
    from resources.llm import LlmResource
    from resources.models import ModelsResource
    from resources.plan_settings import PlanSettings
    from resources.settings import Rad3dSettings
    from resources.volumes import VolumeSettings

    code_location = {s.name for s in E.TABLE if s.reader == E.CODE_LOCATION}
    assert set(FEEDS) | ELSEWHERE == code_location, sorted(code_location ^ (set(FEEDS) | ELSEWHERE))
    assert not set(FEEDS) & ELSEWHERE

    # Nothing set: every resource equals its own field defaults (one default, written once).
    defs = build_definitions(env={})
    classes = {
        "settings": Rad3dSettings,
        "llm": LlmResource,
        "volume_settings": VolumeSettings,
        "models": ModelsResource,
        "plan_settings": PlanSettings,
    }
    for key, cls in classes.items():
        built, default = defs.resources[key], cls()
        for field in cls.model_fields:
            if (key, field) in {("settings", "n_shards"), ("models", "registry_dir")}:
                continue  # the import-time shard count; the data root the registry is read under
            assert getattr(built, field) == getattr(default, field), (key, field)
    assert defs.resources["ctrate"].root == os.path.join("data", "sample_ctrate")

    # Every setting set to another valid value: each reaches the field the map says.
    sentinels = {name: _sentinel(E.by_name()[name], tmp_path) for name in FEEDS}
    sentinels.update(
        RAD3D_CTRATE_ROOT=str(tmp_path / "ct"),
        RAD3D_REBUILD_CRON="30 2 * * 1",
        RAD3D_OBSERVE_CRON="15 * * * *",
        RAD3D_JUDGES_FILE=str(tmp_path / "judges.yaml"),
        RAD3D_VOLUME_PROFILES_FILE="",  # a profiles file is read at load; its own tests cover it
        JUDGE_KEY="sk-judge",
    )
    (tmp_path / "judges.yaml").write_text(
        "judges:\n  - name: j\n    base_url: http://127.0.0.1:9/v1\n    api_key_env: JUDGE_KEY\n"
    )
    defs = build_definitions(env=sentinels)
    for name, fields in FEEDS.items():
        if not sentinels[name]:
            continue
        expected = E.by_name()[name].parse(sentinels[name])
        for key, field in fields:
            assert getattr(defs.resources[key], field) == expected, (name, key, field)
    assert defs.resources["ctrate"].root == str(tmp_path / "ct")
    assert defs.resources["io_manager"].base_dir == str(tmp_path / "out")
    assert defs.resources["models"].registry_dir == str(tmp_path / "out")
    assert "30 2 * * 1" in (defs.get_sensor_def("rad3d_automation").description or "")
    graph = defs.resolve_asset_graph()
    from dagster import AssetKey

    assert "15 * * * *" in str(graph.get(AssetKey("ctrate_label_files")).automation_condition)
    assert "30 2 * * 1" in str(graph.get(AssetKey("patients")).automation_condition)
    # The judge's key travels as an EnvVar naming the variable, never as the key.
    keys = defs.resources["llm"].judge_api_keys
    assert keys == {"JUDGE_KEY": "JUDGE_KEY"} and isinstance(keys["JUDGE_KEY"], EnvVar)


def test_the_key_is_handed_over_as_an_envvar_only() -> None:
    from rad3d.definitions import llm_resource

    with_key = llm_resource(None, {"OPENAI_API_KEY": "sk-secret-123"})
    assert isinstance(with_key.api_key, EnvVar) and with_key.api_key == "OPENAI_API_KEY"
    assert "sk-secret-123" not in repr(with_key) and "sk-secret-123" not in json.dumps(with_key.model_dump())
    with pytest.raises(RuntimeError, match="is a secret"):
        E.read(E.OPENAI_API_KEY, {"OPENAI_API_KEY": "sk-secret-123"})
    assert llm_resource(None, {}).api_key is None
    assert llm_resource(None, {"OPENAI_API_KEY": "  "}).api_key is None  # empty counts as unset


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("RAD3D_SHARDS", "x", "RAD3D_SHARDS='x': not a whole number"),
        ("RAD3D_SHARDS", "0", "RAD3D_SHARDS='0': must be between 1 and 4096"),
        ("RAD3D_SHARDS", "5000", "RAD3D_SHARDS='5000': must be between 1 and 4096"),
        ("RAD3D_SEED", "1.5", "RAD3D_SEED='1.5': not a whole number"),
        ("RAD3D_LLM_TIMEOUT", "0", "RAD3D_LLM_TIMEOUT='0': must be above 0"),
        ("RAD3D_LLM_RPM", "nan", "RAD3D_LLM_RPM='nan': must be at least 0"),
        ("RAD3D_LLM_MAX_FAILURE_RATE", "lots", "RAD3D_LLM_MAX_FAILURE_RATE='lots': use a share such as 0.01 (or 1%)"),
        ("RAD3D_LLM_MAX_FAILURE_RATE", "150%", "RAD3D_LLM_MAX_FAILURE_RATE='150%': use a share between 0 and 1"),
        ("RAD3D_BERTSCORE", "maybe", "RAD3D_BERTSCORE='maybe': use 1 or 0 (also true/false, yes/no, on/off)"),
        ("RAD3D_GPU_RETRY_DELAY_S", "-1", "RAD3D_GPU_RETRY_DELAY_S='-1': must be a positive number of seconds"),
        ("RAD3D_REBUILD_CRON", "weekly", "RAD3D_REBUILD_CRON='weekly': not a cron schedule of five fields"),
    ],
)
def test_a_value_that_does_not_parse_is_one_line_naming_the_variable(name: str, value: str, message: str) -> None:
    with pytest.raises(E.SettingError) as caught:
        E.read(E.by_name()[name], {name: value})
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


def test_values_parse_as_documented() -> None:
    assert E.read(E.LLM_MAX_FAILURE_RATE, {"RAD3D_LLM_MAX_FAILURE_RATE": "1%"}) == pytest.approx(0.01)
    assert E.read(E.LLM_MAX_FAILURE_RATE, {"RAD3D_LLM_MAX_FAILURE_RATE": "0.2"}) == pytest.approx(0.2)
    assert E.read(E.BERTSCORE, {"RAD3D_BERTSCORE": "off"}) is False
    assert E.read(E.LLM_BATCH, {"RAD3D_LLM_BATCH": "1"}) is True
    assert E.read(E.SPLIT, {"RAD3D_SPLIT": ""}) == "all"  # empty counts as unset
    assert E.read(E.SHARDS, {"RAD3D_SHARDS": " 4 "}) == 4
    assert E.read(E.REBUILD_CRON, {"RAD3D_REBUILD_CRON": "0  4 * * 1"}) == "0 4 * * 1"
    assert E.read(E.MODELS_FILE, {}) is None
    assert E.ctrate_root({}, "/d") == os.path.join("/d", "sample_ctrate")


def test_a_bad_setting_stops_the_code_location_with_one_line() -> None:
    from rad3d.definitions import build_definitions

    with pytest.raises(E.SettingError, match=r"^RAD3D_SEED='abc': not a whole number$"):
        build_definitions(env={"RAD3D_SEED": "abc"})


def test_output_settings_are_the_tables_output_shaping_variables(tmp_path: Path) -> None:
    from resources.settings import output_settings_from_env

    settings = output_settings_from_env({"volumes": "3"}, env={})
    assert set(settings) - {"code_version:volumes"} == {s.name for s in E.TABLE if s.shapes_outputs}
    # The defaults as the README's configuration table states them (an independent reference).
    assert settings == {
        "RAD3D_OUT": os.path.abspath("data"),
        "RAD3D_CTRATE_ROOT": os.path.abspath(os.path.join("data", "sample_ctrate")),
        "RAD3D_SPLIT": "all",
        "RAD3D_SEED": "0",
        "RAD3D_SHARDS": "16",
        "RAD3D_VOLUME_PROFILES": "m3d",
        "RAD3D_VOLUME_PROFILES_FILE": "",
        "RAD3D_VOLUME_SPLITS": "valid",
        "RAD3D_CTRATE_VERSION": "auto",
        "RAD3D_MODELS": "prior,random",
        "RAD3D_MODELS_FILE": "",
        "code_version:volumes": "3",
    }
    models = tmp_path / "models.yaml"
    models.write_text("models: []\n")
    other = output_settings_from_env({}, env={"RAD3D_OUT": str(tmp_path), "RAD3D_MODELS_FILE": str(models)})
    assert other["RAD3D_CTRATE_ROOT"] == str(tmp_path / "sample_ctrate")
    assert other["RAD3D_MODELS_FILE"].startswith(f"{models} sha256:")


def test_the_failure_record_goes_under_the_settings_data_root(tmp_path: Path) -> None:
    from assets.operations import run_failure_record
    from resources.settings import Rad3dSettings

    @asset
    def broken() -> None:
        raise RuntimeError("disk full")

    instance = DagsterInstance.ephemeral()
    result = materialize([broken], instance=instance, raise_on_error=False)
    [entry] = instance.all_logs(result.run_id, of_type=DagsterEventType.RUN_FAILURE)
    context = build_run_status_sensor_context(
        sensor_name="run_failure_record",
        dagster_event=entry.dagster_event,
        dagster_instance=instance,
        dagster_run=instance.get_run_by_id(result.run_id),
        resources={"settings": Rad3dSettings(out_dir=str(tmp_path / "out"))},
    ).for_run_failure()
    run_failure_record(context)
    record = json.loads((tmp_path / "out" / "failures" / f"{result.run_id}.json").read_text())
    assert record["run_id"] == result.run_id and "broken" in record["message"]


def test_rad3d_build_says_a_bad_setting_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from rad3d.cli import main

    (tmp_path / "ct").mkdir()
    monkeypatch.setenv("RAD3D_OUT", str(tmp_path / "unused"))  # restored afterwards (the command sets it)
    monkeypatch.setenv("RAD3D_LLM_TIMEOUT", "-4")
    status = main(["build", "--ctrate-root", str(tmp_path / "ct"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip()
    assert status == 2 and err == "rad3d build: RAD3D_LLM_TIMEOUT='-4': must be above 0"
    assert not (tmp_path / "out").exists()


def test_a_judge_gets_its_own_key_from_the_resource_not_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rad3d_pipeline.quality.judges import JudgeSpec
    from resources.llm import LlmResource

    monkeypatch.setenv("JUDGE_KEY", "from-the-environment")  # must not be consulted by the resource
    spec = JudgeSpec("j", "m", "http://127.0.0.1:9/v1", "JUDGE_KEY")
    given = LlmResource(judge_api_keys={"JUDGE_KEY": "handed-over"}).judge_client(spec, tmp_path)
    assert (given.endpoint.api_key, given.endpoint.base_url) == ("handed-over", "http://127.0.0.1:9/v1")
    assert LlmResource().judge_client(spec, tmp_path).endpoint.api_key == "not-needed"
    assert LlmResource(backend="auto").resolved_backend() == "rules"  # OPENAI_* in the environment do not count
    monkeypatch.setenv("OPENAI_BASE_URL", "http://127.0.0.1:9/v1")
    assert LlmResource(backend="auto").resolved_backend() == "rules"
    assert LlmResource(backend="auto", base_url="http://127.0.0.1:9/v1").resolved_backend() == "openai"

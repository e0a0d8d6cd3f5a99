"""Model settings to adapters: ``RAD3D_MODELS`` names models; a YAML file gives kinds and options.

models:
  - name: prior                    # kind defaults to the name for built-in kinds
  - name: qwen25vl-7b
    kind: openai_vlm
    model: Qwen/Qwen2.5-VL-7B-Instruct
    base_url: http://gpu-1:8000/v1
  - name: m3d-lamed-phi3-4b
    kind: hf_3d_vlm
    path: /models/M3D-LaMed-Phi-3-4B
    device: cuda
  - name: radfm-imported
    kind: import
    path: /results/radfm_predictions.jsonl
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from rad3d_pipeline.common.errors import UserFacingError
from rad3d_pipeline.common.settings_files import SettingsModel, read_yaml, validate

BUILTIN_KINDS = ("prior", "random", "openai_vlm", "text_only", "hf_3d_vlm", "import")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)


def _text(value: Any) -> Any:
    """A YAML scalar as text (``name: 7`` is the name ``"7"``); lists, mappings and nulls stay invalid."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _model_name(value: Any) -> Any:
    value = _text(value)
    if isinstance(value, str) and ("|" in value or "," in value or "/" in value):
        raise ValueError(f"{value!r} may not contain '|', ',' or '/' (it becomes a file name)")
    return value


def _kind(value: Any) -> Any:
    if value not in BUILTIN_KINDS:
        raise ValueError(f"unknown kind {value!r} (known: {', '.join(BUILTIN_KINDS)})")
    return value


class ModelEntry(BaseModel):
    """One model of the models file: ``name``, ``kind`` (default: the name) and the kind's options (any other key)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: Annotated[str, BeforeValidator(_model_name)]
    kind: Annotated[str | None, BeforeValidator(_kind)] = None

    @model_validator(mode="before")
    @classmethod
    def _default_kind(cls, data: Any) -> Any:
        if isinstance(data, dict) and "kind" not in data and "name" in data:
            return {**data, "kind": _text(data["name"])}
        return data

    @model_validator(mode="after")
    def _needs_path(self) -> ModelEntry:
        if self.kind in ("hf_3d_vlm", "import") and not (self.model_extra or {}).get("path"):
            raise ValueError(f"model {self.name!r}: kind {self.kind} needs 'path'")
        return self

    def spec(self) -> ModelSpec:
        return ModelSpec(self.name, str(self.kind), dict(self.model_extra or {}))


def _list(value: Any) -> Any:
    return [] if value is None else value


class ModelsFile(SettingsModel):
    models: Annotated[list[ModelEntry], BeforeValidator(_list)] = Field(default_factory=list)


def parse_models(names: str, file: str | Path | None = None) -> list[ModelSpec]:
    """Models from ``RAD3D_MODELS`` (comma-separated) and the YAML file (file entries win on name clashes).

    A file that cannot be used stops with one line naming it, the entry and the reason
    (:mod:`rad3d_pipeline.common.settings_files`); a missing file raises ``FileNotFoundError``.
    """
    specs: dict[str, ModelSpec] = {}
    for raw in names.split(","):
        name = raw.strip()
        if name:
            specs[name] = ModelSpec(name, name if name in BUILTIN_KINDS else "openai_vlm", {"model": name})
    if file:
        path = Path(file)
        data = read_yaml(path, "models file")
        for entry in validate(ModelsFile, {} if data is None else data, str(path)).models:
            specs[entry.name] = entry.spec()
    for spec in specs.values():
        if "|" in spec.name or "," in spec.name or "/" in spec.name:
            raise ModelSpecError(f"model name {spec.name!r} may not contain '|', ',' or '/' (it becomes a file name)")
    return list(specs.values())


# --------------------------------------------------------------------------- models added from the command line

REGISTRY_FILE = Path("models") / "registry.json"
SPEC_FORMS = (
    "a model name (prior, random, a name from RAD3D_MODELS_FILE), openai:<model>, text:<model>, "
    "hf:<local folder>, file:<predictions file>"
)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.-]+")
LIMIT_SUFFIX = re.compile(r"-limit(\d+)$")
MAX_NAME = 96


class ModelSpecError(UserFacingError, ValueError):
    """A model spec that cannot be used (one line: the spec and the reason)."""


def safe_partition_name(text: str) -> str:
    """``text`` as a partition key that is also a file name: ``[A-Za-z0-9_.-]``, never empty, never a dot name."""
    name = _UNSAFE.sub("-", text).strip("-.")
    name = re.sub(r"-{2,}", "-", name)[:MAX_NAME].strip("-.")
    return name or "model"


def check_name(name: str) -> None:
    """A partition key becomes a file name (``<out>/tables/predictions/<model>|<task>.parquet``)."""
    if not name or _UNSAFE.search(name) or name in {".", ".."}:
        raise ModelSpecError(f"model name {name!r}: use letters, digits, '_', '.' and '-' only")


def limit_of(spec: ModelSpec) -> int | None:
    """The ``--limit N`` of a spec (the first N questions per subtask), None for the whole benchmark."""
    value = spec.options.get("limit")
    return int(value) if value is not None else None


def _option_value(text: str) -> Any:
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, (str, int, float, bool, list)) else text


def parse_model_args(items: list[str]) -> dict[str, Any]:
    """``--model-arg KEY=VALUE`` (VALUE read as YAML: 16 is a number, true a boolean, [axial, coronal] a list)."""
    options: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ModelSpecError(f"--model-arg {item!r}: use KEY=VALUE, e.g. n_slices=16")
        if key in {"name", "kind", "path", "model", "limit"}:
            raise ModelSpecError(f"--model-arg {item!r}: {key} is set by the --model spec itself")
        options[key] = _option_value(value)
    return options


def spec_from_cli(
    text: str,
    known: list[ModelSpec],
    *,
    model_args: dict[str, Any] | None = None,
    limit: int | None = None,
    cwd: Path | None = None,
) -> ModelSpec:
    """A ``--model`` spec as a :class:`ModelSpec` with a safe partition name (see :data:`SPEC_FORMS`).

    ``known``: the configured and registered models a bare name may refer to. ``limit`` adds the
    ``-limitN`` suffix to the name and ``limit`` to the options, so the partition says what it holds.
    """
    raw = text.strip()
    args = dict(model_args or {})
    form, sep, value = raw.partition(":")
    base = Path(cwd) if cwd is not None else Path.cwd()
    if not sep:
        by_name = {s.name: s for s in known}
        if raw in by_name:
            spec = by_name[raw]
        elif raw in ("prior", "random"):
            spec = ModelSpec(raw, raw, {})
        else:
            names = ", ".join(sorted({*by_name, "prior", "random"}))
            raise ModelSpecError(f"--model {raw!r}: not a known model ({names}); other forms: {SPEC_FORMS}")
        if args:
            raise ModelSpecError(
                f"--model {raw!r}: --model-arg applies to openai:, text:, hf: and file: specs; "
                "give a named model its options in RAD3D_MODELS_FILE"
            )
        options = dict(spec.options)
        name = spec.name
    else:
        value = value.strip()
        if not value:
            raise ModelSpecError(f"--model {raw!r}: nothing after '{form}:'")
        if form in ("openai", "text"):
            kind = "openai_vlm" if form == "openai" else "text_only"
            options = {"model": value, **args}
            name = safe_partition_name(f"{form}-{value.rsplit('/', 1)[-1]}")
        elif form == "hf":
            folder = (base / value).expanduser().resolve()
            if not folder.is_dir():
                raise ModelSpecError(f"--model {raw!r}: folder {folder} not found")
            if not (folder / "config.json").is_file():
                raise ModelSpecError(f"--model {raw!r}: {folder} has no config.json (a transformers model folder)")
            kind, options = "hf_3d_vlm", {"path": str(folder), **args}
            name = safe_partition_name(f"hf-{folder.name}")
        elif form == "file":
            path = (base / value).expanduser().resolve()
            if not path.is_file():
                raise ModelSpecError(f"--model {raw!r}: file {path} not found")
            kind, options = "import", {"path": str(path), **args}
            name = safe_partition_name(f"file-{path.name.split('.')[0]}")
        else:
            raise ModelSpecError(f"--model {raw!r}: unknown spec form {form!r}; use {SPEC_FORMS}")
        spec = ModelSpec(name, kind, options)
    if limit is not None:
        if limit < 1:
            raise ModelSpecError(f"--limit {limit}: must be at least 1")
        name = f"{LIMIT_SUFFIX.sub('', name)[: MAX_NAME - 12]}-limit{limit}"
        options = {**options, "limit": limit}
    check_name(name)
    return ModelSpec(name, spec.kind, options)


def registry_path(out: str | Path) -> Path:
    return Path(out) / REGISTRY_FILE


def read_registry(out: str | Path | None) -> list[ModelSpec]:
    """The models registered under ``out`` (``<out>/models/registry.json``); none when there is no file."""
    if out is None:
        return []
    path = registry_path(out)
    if not path.is_file():
        return []
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise ModelSpecError(f"{path}: not valid JSON ({exc})") from None
    specs = []
    for i, entry in enumerate(data.get("models", []) if isinstance(data, dict) else [], 1):
        if not isinstance(entry, dict) or "name" not in entry or entry.get("kind") not in BUILTIN_KINDS:
            raise ModelSpecError(f"{path}: model {i} needs a 'name' and a known 'kind'")
        specs.append(ModelSpec(str(entry["name"]), str(entry["kind"]), dict(entry.get("options") or {})))
    return specs


def register(out: str | Path, specs: list[ModelSpec], configured: list[ModelSpec] | None = None) -> Path:
    """Add ``specs`` to ``<out>/models/registry.json`` (written atomically).

    A name registered (or configured) before with another kind or other options is refused: the
    partition would hold two models' answers under one name.
    """
    path = registry_path(out)
    existing = {s.name: s for s in read_registry(out)}
    fixed = {s.name: s for s in configured or []}
    for spec in specs:
        check_name(spec.name)
        for where, table in (
            ("configured (RAD3D_MODELS / RAD3D_MODELS_FILE)", fixed),
            (f"registered in {path}", existing),
        ):
            old = table.get(spec.name)
            if old is not None and (old.kind, old.options) != (spec.kind, spec.options):
                raise ModelSpecError(
                    f"model {spec.name!r} is already {where} as {old.kind} {old.options}; "
                    f"this spec means {spec.kind} {spec.options}: use another --out or rename the file/folder"
                )
        if spec.name not in fixed:
            existing[spec.name] = spec
    data = {"models": [{"name": s.name, "kind": s.kind, "options": s.options} for s in existing.values()]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path

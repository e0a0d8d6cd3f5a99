"""YAML settings files (volume profiles, models, judges) read through pydantic models.

A file that cannot be used stops with one line naming the file, the place in it and the reason,
e.g. ``judges.yaml: judges[1]: unknown key(s) base_ulr; known: name, model, base_url, api_key_env``.
The models of a file derive from :class:`SettingsModel` (unknown keys are an error at every level,
so a misspelt option is never silently ignored); :func:`validation_message` turns pydantic's
errors into that line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from rad3d_pipeline.common.errors import UserFacingError

M = TypeVar("M", bound=BaseModel)
MAX_SHOWN = 60  # characters of an offending value shown in a message


class SettingsFileError(UserFacingError, ValueError):
    """A settings file that cannot be used (one line: file, key path, reason)."""


class SettingsFileNotFoundError(UserFacingError, FileNotFoundError):
    """A settings file named in the settings that does not exist."""


class SettingsModel(BaseModel):
    """A mapping of a settings file: frozen; an unknown key is an error naming it and the known ones."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(str(k) for k in data if k not in cls.model_fields)
            if unknown:
                known = ", ".join(cls.model_fields)
                raise ValueError(f"unknown key(s) {', '.join(unknown)}; known: {known}")
        return data


def shown(value: Any) -> str:
    """``repr(value)``, shortened to :data:`MAX_SHOWN` characters."""
    text = repr(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 3] + "..."


def key_path(loc: tuple[int | str, ...]) -> str:
    """``("judges", 1, "model")`` as ``judges[1].model``."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        else:
            text += f".{part}" if text else str(part)
    return text


def _reason(error: Any) -> str:
    kind, message, value = error["type"], str(error["msg"]), error.get("input")
    if kind in ("value_error", "assertion_error"):
        return message.split(", ", 1)[1] if ", " in message else message
    if kind == "missing":
        return "required"
    if kind == "extra_forbidden":
        return "unknown key"
    if kind in ("model_type", "model_attributes_type", "dict_type"):
        return f"expected a mapping, got {shown(value)}"
    if kind in ("list_type", "tuple_type"):
        return f"expected a list, got {shown(value)}"
    return f"{message[:1].lower()}{message[1:]}, got {shown(value)}"


def validation_message(exc: ValidationError, where: str) -> str:
    """Every error of ``exc`` on one line, each as ``key.path: reason``, after ``where`` (the file, say)."""
    parts = []
    for error in exc.errors():
        path = key_path(tuple(error["loc"]))
        parts.append(f"{path}: {_reason(error)}" if path else _reason(error))
    return f"{where}: " + "; ".join(dict.fromkeys(parts))


def validate(model: type[M], data: Any, where: str, error: type[Exception] = SettingsFileError) -> M:
    """``data`` as ``model``, or ``error`` with :func:`validation_message`'s one line."""
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise error(validation_message(exc, where)) from None


def read_yaml(
    path: Path,
    what: str,
    error: type[Exception] = SettingsFileError,
    missing: type[Exception] = SettingsFileNotFoundError,
) -> Any:
    """The YAML document of ``path`` (None for an empty file).

    A missing file raises ``missing``; one that cannot be read, is not UTF-8 or not YAML raises
    ``error`` (naming the line of a YAML error).
    """
    import yaml

    if not path.is_file():
        raise missing(f"{path}: {what} not found")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read the {what} ({exc})") from None
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f" line {mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise error(f"{path}{line}: not valid YAML ({problem})") from None

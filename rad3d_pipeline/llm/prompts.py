"""Versioned prompt templates (``prompts/*.txt``) and their rendering.

A template file has comment lines (``#``), a ``version: N`` line, then ``=== system`` and
``=== user`` sections. Placeholders are ``<Name>`` tokens replaced verbatim. The version
is part of every cache key: editing a template and bumping its version re-asks.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

PROMPT_DIR = Path(__file__).with_name("prompts")
STARTERS: tuple[str, ...] = ("What", "Where", "Which")


@dataclass(frozen=True)
class PromptTemplate:
    name: str
    version: str
    system: str
    user: str

    @property
    def template_version(self) -> str:
        return f"{self.name}@{self.version}"

    def messages(self, **values: str) -> list[dict[str, Any]]:
        return [
            {"role": "system", "content": render(self.system, values)},
            {"role": "user", "content": render(self.user, values)},
        ]


def render(text: str, values: dict[str, str]) -> str:
    for name, value in values.items():
        text = text.replace(f"<{name}>", value)
    return text


@cache
def load_template(name: str) -> PromptTemplate:
    path = PROMPT_DIR / f"{name}.txt"
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no prompt template named {name!r}")
    version = ""
    sections: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in path.read_text(encoding="utf-8").splitlines():
        if current is None and line.startswith("#"):
            continue
        if current is None and line.startswith("version:"):
            version = line.split(":", 1)[1].strip()
            continue
        if line.startswith("=== "):
            current = sections.setdefault(line[4:].strip(), [])
            continue
        if current is not None:
            current.append(line)
    if not version or "system" not in sections or "user" not in sections:
        raise ValueError(f"{path}: needs a 'version:' line and '=== system' and '=== user' sections")
    return PromptTemplate(name, version, "\n".join(sections["system"]).strip(), "\n".join(sections["user"]).strip())


def starters_for(seed: int, key: str) -> list[str]:
    """The 6W starters for one report: what, where, which, each twice, shuffled (seeded by the report)."""
    starters = [s for s in STARTERS for _ in range(2)]
    random.Random(f"{seed}:starters:{key}").shuffle(starters)
    return starters

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

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

BUILTIN_KINDS = ("prior", "random", "openai_vlm", "text_only", "hf_3d_vlm", "import")


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str
    options: dict[str, Any] = field(default_factory=dict)


def parse_models(names: str, file: str | Path | None = None) -> list[ModelSpec]:
    specs: dict[str, ModelSpec] = {}
    for raw in names.split(","):
        name = raw.strip()
        if name:
            specs[name] = ModelSpec(name, name if name in BUILTIN_KINDS else "openai_vlm", {"model": name})
    if file:
        path = Path(file)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: models file not found")
        data = yaml.safe_load(path.read_text()) or {}
        for i, entry in enumerate(data.get("models", []), 1):
            if not isinstance(entry, dict) or "name" not in entry:
                raise ValueError(f"{path}: model {i} needs a 'name'")
            name = str(entry["name"])
            kind = str(entry.get("kind", name))
            if kind not in BUILTIN_KINDS:
                raise ValueError(f"{path}: model {name}: unknown kind {kind!r} (known: {', '.join(BUILTIN_KINDS)})")
            options = {k: v for k, v in entry.items() if k not in {"name", "kind"}}
            specs[name] = ModelSpec(name, kind, options)
    for spec in specs.values():
        if "|" in spec.name or "," in spec.name:
            raise ValueError(f"model name {spec.name!r} may not contain '|' or ','")
    return list(specs.values())

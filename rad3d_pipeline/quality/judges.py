"""Judges: several scorers of the same QA pairs with the Figure 17 rubric.

``RAD3D_JUDGES`` names models on the configured OpenAI-compatible endpoint; a YAML file
(``RAD3D_JUDGES_FILE``) may give each judge its own endpoint::

    judges:
      - name: gpt-4o-mini
      - name: llama3-70b
        model: meta-llama/Meta-Llama-3-70B-Instruct
        base_url: http://gpu-1:8000/v1
        api_key_env: VLLM_API_KEY

Offline, two judges stand in: ``heuristic`` (the rules backend's judge) and
``minilm-grounding`` (all-MiniLM-L6-v2: how well the answer and question are grounded in
the source sentence, and how the answer fits the question).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np
import pandas as pd
from pydantic import BeforeValidator, Field

from rad3d_pipeline.common.settings_files import SettingsModel, read_yaml, validate
from rad3d_pipeline.evaluation.embeddings import SentenceEmbedder
from rad3d_pipeline.llm.parsers import SCORE_DIMENSIONS
from rad3d_pipeline.open_qa.rules_backend import heuristic_scores

OFFLINE_JUDGES: tuple[str, ...] = ("heuristic", "minilm-grounding")


@dataclass(frozen=True)
class JudgeSpec:
    name: str
    model: str
    base_url: str | None = None
    api_key_env: str | None = None  # the name of the variable holding the key, never the key

    @property
    def offline(self) -> bool:
        return self.name in OFFLINE_JUDGES and self.base_url is None


ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _text(value: Any) -> Any:
    """A YAML scalar as text (``name: 7`` is ``"7"``); lists, mappings stay invalid."""
    return str(value) if isinstance(value, int | float) and not isinstance(value, bool) else value


def _url(value: Any) -> Any:
    if value is not None and not (isinstance(value, str) and value.startswith(("http://", "https://"))):
        raise ValueError(f"expected an http:// or https:// URL, got {value!r}")
    return value


def _env_name(value: Any) -> Any:
    # Never echo the value: a key pasted here by mistake must not reach a log.
    if value is not None and not (isinstance(value, str) and ENV_NAME.match(value)):
        raise ValueError("must be the name of an environment variable (letters, digits, '_'), not the key itself")
    return value


class JudgeEntry(SettingsModel):
    name: Annotated[str, BeforeValidator(_text)]
    model: Annotated[str | None, BeforeValidator(_text)] = None
    base_url: Annotated[str | None, BeforeValidator(_url)] = None
    api_key_env: Annotated[str | None, BeforeValidator(_env_name)] = None

    def spec(self) -> JudgeSpec:
        return JudgeSpec(self.name, self.model or self.name, self.base_url, self.api_key_env)


class JudgesFile(SettingsModel):
    judges: Annotated[list[JudgeEntry], BeforeValidator(lambda v: [] if v is None else v)] = Field(default_factory=list)


def parse_judges(names: str | None, file: str | Path | None = None) -> list[JudgeSpec]:
    """Judges from a comma-separated list and/or a YAML file (file entries win on name clashes).

    A file that cannot be used (an unknown key, a missing name, ...) stops with one line naming it,
    the entry and the reason; a missing file raises ``FileNotFoundError``.
    """
    specs: dict[str, JudgeSpec] = {}
    for raw in (names or "").split(","):
        name = raw.strip()
        if name:
            specs[name] = JudgeSpec(name, name)
    if file:
        path = Path(file)
        data = read_yaml(path, "judges file")
        for entry in validate(JudgesFile, {} if data is None else data, str(path)).judges:
            specs[entry.name] = entry.spec()
    return list(specs.values())


def _to_score(similarity: np.ndarray, low: float, high: float) -> np.ndarray:
    """Map a similarity onto 1-5 linearly between ``low`` (1) and ``high`` (5)."""
    scaled = 1 + 4 * (similarity - low) / (high - low)
    return np.clip(np.rint(scaled), 1, 5).astype(int)


def minilm_scores(frame: pd.DataFrame, embedder: SentenceEmbedder) -> pd.DataFrame:
    """Five dimensions from embedding similarities (question, answer, source_text per row).

    Visual verifiability and answer appropriateness: the answer's grounding in its source
    sentence; specificity: the question's grounding; Q-A alignment: answer vs question;
    linguistic quality: the question-plus-answer's grounding as a whole.
    """
    q, a, s = (frame[c].astype(str).tolist() for c in ("question", "answer", "source_text"))
    s = [text if text.strip() else question for text, question in zip(s, q, strict=True)]
    answer_source = embedder.cosine(a, s)
    question_source = embedder.cosine(q, s)
    answer_question = embedder.cosine(a, q)
    pair_source = embedder.cosine([f"{x} {y}" for x, y in zip(q, a, strict=True)], s)
    values = {
        "Visual Verifiability": _to_score(answer_source, 0.1, 0.6),
        "Specificity & Clarity": _to_score(question_source, 0.2, 0.7),
        "Answer Appropriateness": _to_score(answer_source, 0.15, 0.65),
        "Q-A Alignment": _to_score(answer_question, 0.05, 0.55),
        "Linguistic Quality": _to_score(pair_source, 0.2, 0.75),
    }
    out = pd.DataFrame({"qa_id": frame["qa_id"].astype(str).to_numpy(), **values})
    out["mean"] = out[list(SCORE_DIMENSIONS)].mean(axis=1)
    return out


def heuristic_judge_scores(frame: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for qa_id, q, a in zip(frame["qa_id"], frame["question"], frame["answer"], strict=True):
        scores = heuristic_scores(str(q), str(a))
        rows.append({"qa_id": str(qa_id), **scores, "mean": float(np.mean(list(scores.values())))})
    return pd.DataFrame(rows, columns=["qa_id", *SCORE_DIMENSIONS, "mean"])


def sample_for_consistency(candidates: pd.DataFrame, n: int = 600, seed: int = 0) -> pd.DataFrame:
    """A seeded sample proportional per task (all rows when there are fewer than ``n``)."""
    if len(candidates) <= n:
        return candidates.sort_values("qa_id").reset_index(drop=True)
    shares = candidates["task"].value_counts(normalize=True).sort_index()
    quotas = (shares * n).round().astype(int)
    quotas.iloc[-1] += n - int(quotas.sum())
    parts: list[pd.DataFrame] = []
    for task, quota in zip(quotas.index.tolist(), quotas.tolist(), strict=True):
        pool = candidates[candidates["task"] == task]
        parts.append(pool.sample(n=min(int(quota), len(pool)), random_state=seed + int(task)))
    return pd.concat(parts).sort_values("qa_id").reset_index(drop=True)

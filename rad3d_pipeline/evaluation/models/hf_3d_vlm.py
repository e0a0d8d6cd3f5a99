"""A Hugging Face causal LM with a 3D vision tower, loaded with ``trust_remote_code`` (M3D-LaMed's interface).

As the M3D and 3D-RAD evaluation scripts do: the prompt is ``"<im_patch>" * proj_out_num``
followed by the 3D-RAD prompt; the image is the ``m3d`` profile's 1 x 32 x 256 x 256 array;
``model.generate(image, input_ids, max_new_tokens=...)`` returns token ids that the tokenizer
decodes. Weights are read from a local path (no hub download here); on a GPU worker set
``device: cuda`` and ``dtype: bfloat16``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from rad3d_pipeline.evaluation.models.base import ALL_TASKS, PredictionItem, format_3drad_prompt

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


@dataclass
class HF3DVLMAdapter:
    path: str
    name: str = "hf_3d_vlm"
    tasks: frozenset[int] = ALL_TASKS
    input_profile: str | None = "m3d"
    batch_size: int = 4
    device: str = "cpu"
    dtype: str = "float32"
    proj_out_num: int = 256
    image_token: str = "<im_patch>"
    max_new_tokens: int = 64
    do_sample: bool = False
    _model: Any = field(default=None, init=False, repr=False)
    _tokenizer: Any = field(default=None, init=False, repr=False)

    def load(self) -> None:
        if self._model is not None:
            return
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if self.dtype not in DTYPES:
            raise ValueError(f"dtype {self.dtype!r}: use {', '.join(DTYPES)}")
        self._tokenizer = AutoTokenizer.from_pretrained(self.path, trust_remote_code=True, padding_side="left")
        if self._tokenizer.pad_token is None:
            self._tokenizer.pad_token = self._tokenizer.eos_token or self._tokenizer.unk_token
        model: Any = AutoModelForCausalLM.from_pretrained(self.path, trust_remote_code=True, dtype=DTYPES[self.dtype])
        self._model = model.to(self.device)
        self._model.eval()

    def _image(self, path: str) -> np.ndarray:
        if not path:
            raise ValueError("hf_3d_vlm needs the preprocessed volume (profile m3d); none found for this item")
        array: np.ndarray = np.load(path).astype(np.float32)
        return array if array.ndim == 4 else np.asarray(array[None])

    def predict(self, items: list[PredictionItem]) -> list[str]:
        self.load()
        prompts = [self.image_token * self.proj_out_num + format_3drad_prompt(i) for i in items]
        images = torch.from_numpy(np.stack([self._image(i.image_path) for i in items]))
        images = images.to(device=self.device, dtype=DTYPES[self.dtype])
        encoded = self._tokenizer(prompts, return_tensors="pt", padding=True)
        input_ids = encoded["input_ids"].to(self.device)
        with torch.inference_mode():
            generated = self._model.generate(
                images, input_ids, max_new_tokens=self.max_new_tokens, do_sample=self.do_sample
            )
        texts = self._tokenizer.batch_decode(generated, skip_special_tokens=True)
        return [str(t).strip() for t in texts]

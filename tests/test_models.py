"""Model adapters: prompt format, baselines, imports, the OpenAI-compatible VLM and a tiny local 3D VLM."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from rad3d_pipeline.evaluation.models.base import PredictionItem, format_3drad_prompt, items_from_release
from rad3d_pipeline.evaluation.models.baselines import PriorAdapter, RandomAdapter
from rad3d_pipeline.evaluation.models.imported import ImportedAdapter, ImportError_
from rad3d_pipeline.evaluation.models.openai_vlm import OpenAIVLMAdapter, montage
from rad3d_pipeline.evaluation.models.registry import parse_models
from rad3d_pipeline.llm.cache import ResponseCache
from rad3d_pipeline.llm.client import EndpointConfig, LlmClient
from tests.llm_server import LocalLlmServer

CLOSED = PredictionItem(
    "valid_1_a_1.nii.gz", 4, 2, "Atelectasis", "Is atelectasis present?", "No", "Close", ("Yes", "No"), "B"
)
OPEN = PredictionItem("valid_1_a_1.nii.gz", 3, 1, "Diameter", "What is the diameter of the nodule?", "5 mm", "Open")


def release_rows() -> pd.DataFrame:
    return pd.DataFrame(
        {
            "Task": [4, 4, 4, 3, 3],
            "Subtask": [2, 2, 2, 1, 1],
            "VolumeName": [
                "train_1_a_1.nii.gz",
                "train_2_a_1.nii.gz",
                "train_3_a_1.nii.gz",
                "train_1_a_1.nii.gz",
                "train_2_a_1.nii.gz",
            ],
            "Question": ["Is atelectasis present?"] * 3 + ["What is the diameter of the nodule?"] * 2,
            "Answer": ["No", "No", "Yes", "5 mm", "5 mm"],
            "QuestionType": ["Close"] * 3 + ["Open"] * 2,
            "AnswerChoice": ["B", "B", "A", "-", "-"],
            "Choice A": ["Yes"] * 3 + ["-"] * 2,
            "Choice B": ["No"] * 3 + ["-"] * 2,
            "Choice C": ["-"] * 5,
            "Choice D": ["-"] * 5,
            "subtask_name": ["Atelectasis"] * 3 + ["Diameter"] * 2,
        }
    )


def test_prompt_format_and_items() -> None:
    assert format_3drad_prompt(CLOSED) == "Is atelectasis present?\nChoices: A. Yes B. No\nAnswer:"
    assert format_3drad_prompt(OPEN) == "What is the diameter of the nodule?"
    items = items_from_release(release_rows(), {"train_1_a_1.nii.gz": "/x.npy"})
    assert items[0].choices == ("Yes", "No") and items[0].answer_choice == "B" and items[0].image_path == "/x.npy"
    assert items[3].choices == () and not items[3].closed


def test_baselines() -> None:
    training = release_rows()
    prior = PriorAdapter(training)
    assert prior.predict([CLOSED, OPEN]) == ["B. No", "5 mm"]
    random_a = RandomAdapter(training, seed=1).predict([CLOSED] * 1)
    assert random_a == RandomAdapter(training, seed=1).predict([CLOSED])
    assert random_a[0] in {"A. Yes", "B. No"}


def test_import_adapter(tmp_path: Path) -> None:
    path = tmp_path / "preds.jsonl"
    rows = [
        {
            "image_path": "/p/valid_1_a_1.npy",
            "question": "Is atelectasis present? ",
            "answer": "No",
            "prediction": "B.",
        },
        {"image_path": "/p/valid_9_a_1.npy", "question": "Other?", "answer": "x", "prediction": "y"},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows))
    adapter = ImportedAdapter(path)
    test_item = PredictionItem("test_1_a_1.nii.gz", 4, 2, "Atelectasis", "Is atelectasis present?", "No", "Close")
    assert adapter.predict([test_item, OPEN]) == ["B.", ""]
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"question": "q", "prediction": "p", "image_path": "a.npy"}\nnot json\n')
    with pytest.raises(ImportError_, match="line 2: not JSON"):
        ImportedAdapter(bad)


def test_registry_file(tmp_path: Path) -> None:
    file = tmp_path / "models.yaml"
    file.write_text("models:\n  - name: m3d-tiny\n    kind: hf_3d_vlm\n    path: /models/tiny\n")
    specs = parse_models("prior,random", file)
    assert [(s.name, s.kind) for s in specs] == [("prior", "prior"), ("random", "random"), ("m3d-tiny", "hf_3d_vlm")]
    file.write_text("models:\n  - name: x\n    kind: magic\n")
    with pytest.raises(ValueError, match="unknown kind"):
        parse_models("", file)


def test_openai_vlm_sends_montages(tmp_path: Path) -> None:
    volume = tmp_path / "valid_1_a_1.npy"
    np.save(volume, np.random.default_rng(0).random((1, 32, 64, 64), dtype=np.float32))
    png = montage(np.load(volume), axis=0, n_slices=16)
    assert png.startswith(b"\x89PNG")
    item = PredictionItem(**{**CLOSED.__dict__, "image_path": str(volume)})
    with LocalLlmServer() as server:
        config = EndpointConfig(model="qwen-vl", base_url=server.base_url, api_key="k")
        adapter = OpenAIVLMAdapter(LlmClient(config, ResponseCache(tmp_path / "c.sqlite")), planes=("axial", "coronal"))
        messages = adapter.messages(item)
        parts = messages[1]["content"]
        assert [p["type"] for p in parts] == ["image_url", "image_url", "text"]
        assert parts[-1]["text"].endswith("Answer:")
        answers = adapter.predict([item, OPEN])
        assert len(answers) == 2 and all(answers)
        text_only = OpenAIVLMAdapter(LlmClient(config, ResponseCache(tmp_path / "c.sqlite")), text_only=True)
        assert isinstance(text_only.messages(item)[1]["content"], str)
    stored = ResponseCache(tmp_path / "c.sqlite")
    assert len(stored) == 2  # cached; the stored request holds image digests, not the images
    raw = (tmp_path / "c.sqlite").read_bytes()
    assert b"data:image/png;base64" not in raw


@pytest.mark.slow
def test_hf_3d_vlm_with_a_tiny_local_model(tmp_path: Path) -> None:
    from rad3d_pipeline.evaluation.models.hf_3d_vlm import HF3DVLMAdapter
    from tests.tiny_m3d import write_tiny_m3d

    folder = write_tiny_m3d(tmp_path / "tiny_m3d_model")
    volume = tmp_path / "valid_1_a_1.npy"
    np.save(volume, np.random.default_rng(1).random((1, 32, 256, 256), dtype=np.float32))
    adapter = HF3DVLMAdapter(path=str(folder), proj_out_num=8, max_new_tokens=4, batch_size=2)
    item = PredictionItem(**{**CLOSED.__dict__, "image_path": str(volume)})
    first = adapter.predict([item, item])
    assert len(first) == 2 and first[0] == first[1] and len(first[0].split()) == 4
    assert adapter.predict([item]) == first[:1]  # deterministic (greedy)
    with pytest.raises(ValueError, match="needs the preprocessed volume"):
        adapter.predict([CLOSED])

"""A tiny, randomly initialised M3D-style 3D VLM written to a local trust_remote_code folder.

Same interface as M3D-LaMed: ``AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)``
and ``model.generate(image, input_ids, max_new_tokens=...)`` returning the new token ids.
"""

from __future__ import annotations

import json
from pathlib import Path

CONFIGURATION = """
from transformers import PretrainedConfig


class Tiny3DConfig(PretrainedConfig):
    model_type = "tiny3d"

    def __init__(self, vocab_size=64, hidden_size=32, **kwargs):
        self.vocab_size = vocab_size
        self.hidden_size = hidden_size
        super().__init__(**kwargs)
"""

MODELING = """
import torch
from torch import nn
from transformers import PreTrainedModel

from .configuration_tiny3d import Tiny3DConfig


class Tiny3DForCausalLM(PreTrainedModel):
    config_class = Tiny3DConfig

    def __init__(self, config):
        super().__init__(config)
        self.embed = nn.Embedding(config.vocab_size, config.hidden_size)
        self.vision = nn.Sequential(nn.Conv3d(1, 4, kernel_size=8, stride=8), nn.AdaptiveAvgPool3d(1), nn.Flatten(),
                                    nn.Linear(4, config.hidden_size))
        self.rnn = nn.GRU(config.hidden_size, config.hidden_size, batch_first=True)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size)
        self.post_init()

    def _init_weights(self, module):
        if isinstance(module, (nn.Linear, nn.Embedding, nn.Conv3d)):
            torch.nn.init.normal_(module.weight, std=0.5)

    def forward(self, input_ids, images):
        hidden = self.embed(input_ids) + self.vision(images)[:, None, :]
        output, _ = self.rnn(hidden)
        return self.lm_head(output)

    @torch.no_grad()
    def generate(self, images, inputs, max_new_tokens=8, do_sample=False, **kwargs):
        ids = inputs
        new = []
        for _ in range(max_new_tokens):
            logits = self.forward(ids, images)[:, -1, :]
            token = logits.argmax(dim=-1, keepdim=True)
            new.append(token)
            ids = torch.cat([ids, token], dim=1)
        return torch.cat(new, dim=1)
"""

WORDS = [
    "yes",
    "no",
    "a",
    "b",
    "c",
    "d",
    "nodule",
    "right",
    "left",
    "lobe",
    "upper",
    "lower",
    "mm",
    "present",
    "absent",
    "effusion",
    "normal",
    "the",
    "is",
    "what",
    "where",
    "which",
    "choices",
    "answer",
]


def write_tiny_m3d(folder: Path, seed: int = 0) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "configuration_tiny3d.py").write_text(CONFIGURATION)
    (folder / "modeling_tiny3d.py").write_text(MODELING)
    (folder / "__init__.py").write_text("")
    specials = ["[PAD]", "[UNK]", "</s>", "<im_patch>"]
    vocab = {token: i for i, token in enumerate(specials + WORDS)}
    raw = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    raw.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=raw, unk_token="[UNK]", pad_token="[PAD]", eos_token="</s>")
    tokenizer.add_special_tokens({"additional_special_tokens": ["<im_patch>"]})
    tokenizer.save_pretrained(folder)
    config = {
        "model_type": "tiny3d",
        "architectures": ["Tiny3DForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_tiny3d.Tiny3DConfig",
            "AutoModelForCausalLM": "modeling_tiny3d.Tiny3DForCausalLM",
        },
        "vocab_size": len(vocab) + 8,
        "hidden_size": 32,
    }
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    import importlib.util
    import sys

    sys.path.insert(0, str(folder.parent))
    try:
        spec = importlib.util.spec_from_file_location(f"{folder.name}.modeling_tiny3d", folder / "modeling_tiny3d.py")
        # Build the weights with the folder's own classes, then save them beside the code.
        package = importlib.util.spec_from_file_location(
            folder.name, folder / "__init__.py", submodule_search_locations=[str(folder)]
        )
        assert package and package.loader and spec and spec.loader
        pkg = importlib.util.module_from_spec(package)
        sys.modules[folder.name] = pkg
        package.loader.exec_module(pkg)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        cfg_module = sys.modules[f"{folder.name}.configuration_tiny3d"]
        torch.manual_seed(seed)
        model = module.Tiny3DForCausalLM(cfg_module.Tiny3DConfig(vocab_size=config["vocab_size"], hidden_size=32))
        model.save_pretrained(folder)
    finally:
        sys.path.remove(str(folder.parent))
    (folder / "config.json").write_text(
        json.dumps({**json.loads((folder / "config.json").read_text()), **config}, indent=2)
    )
    return folder

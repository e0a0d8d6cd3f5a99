"""A tiny randomly initialised BERT sequence classifier, saved as a local checkpoint folder.

Built from a config (no download): a WordPiece vocabulary written here, 1 layer, hidden size 32,
18 multi-label outputs. Its numbers mean nothing; tests use it only to check mechanics (shapes,
determinism, agreement with a direct forward pass).
"""

from __future__ import annotations

from pathlib import Path

WORDS = [
    "the",
    "there",
    "is",
    "are",
    "no",
    "a",
    "an",
    "of",
    "in",
    "with",
    "and",
    "or",
    "left",
    "right",
    "upper",
    "lower",
    "middle",
    "lobe",
    "lung",
    "lungs",
    "nodule",
    "nodules",
    "opacity",
    "opacities",
    "effusion",
    "pleural",
    "pericardial",
    "calcification",
    "arterial",
    "coronary",
    "wall",
    "cardiomegaly",
    "heart",
    "hernia",
    "hiatal",
    "lymph",
    "node",
    "nodes",
    "lymphadenopathy",
    "emphysema",
    "atelectasis",
    "fibrotic",
    "sequela",
    "mosaic",
    "attenuation",
    "pattern",
    "peribronchial",
    "thickening",
    "consolidation",
    "bronchiectasis",
    "interlobular",
    "septal",
    "medical",
    "material",
    "stent",
    "mm",
    "cm",
    "size",
    "diameter",
    "thickness",
    "located",
    "where",
    "what",
    "which",
    "observed",
    "seen",
    "present",
    "absent",
    "normal",
    "abnormal",
    "mild",
    "moderate",
    "severe",
    "small",
    "large",
    "ground",
    "glass",
    "bilateral",
    ".",
    ",",
    "?",
    "1",
    "2",
    "3",
    "4",
    "5",
    "6",
    "7",
    "8",
    "9",
    "0",
]
SPECIAL = ("[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]")
SUFFIXES = ("##s", "##es", "##ed", "##ing", "##al", "##ly", "##y")


def write_vocab(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "vocab.txt"
    vocab = [*SPECIAL, *dict.fromkeys(WORDS), *SUFFIXES]
    path.write_text("\n".join(vocab) + "\n", encoding="utf-8")
    return path


def make_tiny_bert(
    folder: Path,
    *,
    num_labels: int = 18,
    id2label: dict[int, str] | None = None,
    seed: int = 0,
    initializer_range: float = 0.5,
) -> Path:
    """Save a tiny ``BertForSequenceClassification`` and its tokenizer into ``folder``; return it."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    vocab = write_vocab(folder)
    tokenizer = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    tokenizer.save_pretrained(str(folder))
    labels = id2label or {i: f"LABEL_{i}" for i in range(num_labels)}
    config = BertConfig(
        vocab_size=len(vocab.read_text(encoding="utf-8").splitlines()),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=64,
        num_labels=num_labels,
        id2label=labels,
        label2id={v: k for k, v in labels.items()},
        problem_type="multi_label_classification",
        initializer_range=initializer_range,  # wide weights: probabilities spread on both sides of 0.5
    )
    torch.manual_seed(seed)
    model = BertForSequenceClassification(config)
    model.eval()
    model.save_pretrained(str(folder))
    return folder

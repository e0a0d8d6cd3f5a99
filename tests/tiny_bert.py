"""A tiny randomly initialised BERT sequence classifier, saved as a local checkpoint folder.

Built from a config (no download): a WordPiece vocabulary written here, 1 layer, hidden size 32,
18 multi-label outputs. Its numbers mean nothing; tests use it only to check mechanics (shapes,
determinism, agreement with a direct forward pass).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

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
    from transformers import BertConfig, BertForSequenceClassification

    save_tokenizer(folder)
    vocab = folder / "vocab.txt"
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


def save_tokenizer(folder: Path) -> Path:
    """Write the vocabulary and save a lower-casing WordPiece tokenizer of it in ``folder``.

    Loaded with ``from_pretrained`` from the folder holding vocab.txt: that reads the vocabulary
    under transformers 4 and 5 alike (transformers 5 ignores a ``vocab_file=`` argument, leaving a
    tokenizer of the five special tokens that maps every word to [UNK]).
    """
    from transformers import BertTokenizerFast

    write_vocab(folder)
    tokenizer = BertTokenizerFast.from_pretrained(str(folder), do_lower_case=True, local_files_only=True)
    if len(tokenizer) <= len(SPECIAL):
        raise RuntimeError(f"the tokenizer saved in {folder} did not read its vocabulary")
    tokenizer.save_pretrained(str(folder))
    return folder


# RaTEScore's NER label set: B-/I- of its five entity types (the types of its affinity matrices) and O.
RATE_NER_TYPES = ("ABNORMALITY", "NON-ABNORMALITY", "DISEASE", "NON-DISEASE", "ANATOMY")
RATE_NER_LABELS = (*(f"{p}-{t}" for t in RATE_NER_TYPES for p in ("B", "I")), "O")


def _tiny_config(vocab: Path, **extra: Any) -> Any:
    from transformers import BertConfig

    return BertConfig(
        vocab_size=len(vocab.read_text(encoding="utf-8").splitlines()),
        hidden_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=37,
        max_position_embeddings=512,
        **extra,
    )


def make_tiny_token_classifier(
    folder: Path, *, labels: tuple[str, ...] = RATE_NER_LABELS, seed: int = 0, initializer_range: float = 0.5
) -> Path:
    """Save a tiny ``BertForTokenClassification`` (default: RaTEScore's NER labels) and its tokenizer."""
    import torch
    from transformers import BertForTokenClassification

    vocab = write_vocab(folder)
    save_tokenizer(folder)
    id2label = dict(enumerate(labels))
    config = _tiny_config(
        vocab,
        num_labels=len(labels),
        id2label=id2label,
        label2id={v: k for k, v in id2label.items()},
        initializer_range=initializer_range,
    )
    torch.manual_seed(seed)
    model = BertForTokenClassification(config)
    model.eval()
    model.save_pretrained(str(folder))
    return folder


def make_tiny_encoder(folder: Path, *, seed: int = 0, initializer_range: float = 0.5) -> Path:
    """Save a tiny ``BertModel`` encoder (a stand-in for a sentence/synonym encoder) and its tokenizer."""
    import torch
    from transformers import BertModel

    vocab = write_vocab(folder)
    save_tokenizer(folder)
    torch.manual_seed(seed)
    model = BertModel(_tiny_config(vocab, initializer_range=initializer_range))  # wide: texts far apart
    model.eval()
    model.save_pretrained(str(folder))
    return folder


# RadGraph's entity and relation labels (the "radgraph" and "radgraph-xl" schema).
RADGRAPH_ENTITIES = ("ANAT-DP", "OBS-DP", "OBS-U", "OBS-DA")
RADGRAPH_RELATIONS = ("modify", "located_at", "suggestive_of")


def radgraph_config(bert: Path, *, max_span_width: int = 4) -> dict[str, Any]:
    """A DyGIE config in the layout of the radgraph archives' config.json, tiny sizes, ``bert`` as encoder."""
    transformer = {"type": "pretrained_transformer_mismatched", "model_name": str(bert), "max_length": 512}
    return {
        "dataset_reader": {"type": "dygie", "token_indexers": {"bert": transformer}, "max_span_width": max_span_width},
        "model": {
            "type": "dygie",
            "embedder": {"token_embedders": {"bert": transformer}},
            "initializer": {"regexes": [["_span_width_embedding.weight", {"type": "xavier_normal"}]]},
            "module_initializer": {"regexes": [[".*weight", {"type": "xavier_normal"}]]},
            "feature_size": 8,
            "max_span_width": max_span_width,
            "target_task": "relation",
            "feedforward_params": {"num_layers": 1, "hidden_dims": 16, "dropout": 0.0},
            "loss_weights": {"ner": 0.2, "relation": 1.0, "coref": 0.0, "events": 0.0},
            "modules": {
                "coref": {"spans_per_word": 0.3, "max_antecedents": 100, "coref_prop": 0},
                "ner": {},
                "relation": {"spans_per_word": 0.5},
                "events": {
                    "trigger_spans_per_word": 0.3,
                    "argument_spans_per_word": 0.8,
                    "loss_weights": {"trigger": 0.2, "arguments": 1.0},
                },
            },
        },
    }


@contextlib.contextmanager
def _encode_plus_shim() -> Iterator[None]:
    """radgraph's vendored allennlp calls ``tokenizer.encode_plus``, which transformers 5 removed; lend it briefly."""
    from transformers import PreTrainedTokenizerBase

    had = "encode_plus" in vars(PreTrainedTokenizerBase)
    if not had:
        PreTrainedTokenizerBase.encode_plus = lambda self, *a, **k: self(*a, **k)  # type: ignore[attr-defined]
    try:
        yield
    finally:
        if not had:
            del PreTrainedTokenizerBase.encode_plus  # type: ignore[attr-defined]


def make_tiny_radgraph(cache_dir: Path, *, model_type: str = "radgraph-xl", seed: int = 0) -> Path:
    """Write a randomly initialised RadGraph archive, extracted, as the radgraph package reads it.

    ``cache_dir/<model_type>/`` gets config.json (pointing at a tiny BERT saved beside it),
    vocabulary/ (the ``<model_type>__ner_labels`` and ``__relation_labels`` namespaces the package's
    reader asks for) and weights.th (the state dict of a DyGIE model built as the package builds it).
    Returns ``cache_dir`` (the package's ``model_cache_dir``). Needs the radgraph package.
    """
    import json

    import torch
    from radgraph.allennlp.data import Vocabulary
    from radgraph.allennlp.modules import text_field_embedders, token_embedders
    from radgraph.dygie.models import dygie

    model_dir = cache_dir / model_type
    bert = make_tiny_encoder(cache_dir / "tiny-bert", seed=seed)
    config = radgraph_config(bert)
    model_dir.mkdir(parents=True, exist_ok=True)
    (model_dir / "config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    vocab = Vocabulary(non_padded_namespaces=["*labels", "*tags"])
    for label in ("", *RADGRAPH_ENTITIES):
        vocab.add_token_to_namespace(label, f"{model_type}__ner_labels")
    for label in RADGRAPH_RELATIONS:
        vocab.add_token_to_namespace(label, f"{model_type}__relation_labels")
    vocab.save_to_files(str(model_dir / "vocabulary"))
    vocab = Vocabulary.from_files(str(model_dir / "vocabulary"))  # as the package reads it
    torch.manual_seed(seed)
    with _encode_plus_shim():  # only to build the weights; the package itself runs unshimmed
        embedder = text_field_embedders.BasicTextFieldEmbedder(
            {"bert": token_embedders.PretrainedTransformerMismatchedEmbedder(model_name=str(bert), max_length=512)}
        )
    params = {
        k: v for k, v in config["model"].items() if k not in ("type", "embedder", "initializer", "module_initializer")
    }
    model = dygie.DyGIE(vocab=vocab, embedder=embedder, **params)
    torch.save(model.state_dict(), model_dir / "weights.th")
    return cache_dir

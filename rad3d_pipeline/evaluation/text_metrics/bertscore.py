"""BERTScore F1 as 3D-RAD computes it (``lang="en"``: roberta-large, layer 17), the model a setting."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rad3d_pipeline.evaluation.embeddings import default_model_path

SBERT_MODEL_NAME = "all-MiniLM-L6-v2"
BERTSCORE_DEFAULT_MODEL = "roberta-large"
BERTSCORE_MODEL_ENV = "RAD3D_BERTSCORE_MODEL"
# BERTScore's tuned layer for roberta-large (bert_score.utils.model2layers, what lang="en" uses).
ROBERTA_LARGE_LAYER = 17


def _offline() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@functools.cache
def _bert_scorer(path: str, num_layers: int, batch_size: int) -> Any:
    _offline()
    from bert_score import BERTScorer

    return BERTScorer(model_type=path, num_layers=num_layers, batch_size=batch_size, idf=False, device="cpu")


def _model_layers(path: str) -> int:
    from bert_score.utils import model2layers

    name = Path(path).name
    if name in model2layers:
        return int(model2layers[name])
    config = json.loads((Path(path) / "config.json").read_text(encoding="utf-8"))
    if config.get("model_type") == "roberta" and config.get("num_hidden_layers") == 24:  # a roberta-large copy
        return ROBERTA_LARGE_LAYER
    return int(config["num_hidden_layers"])


class BertScoreF1:
    """BERTScore F1 (greedy cosine matching of token embeddings, no idf, no baseline rescaling).

    3D-RAD uses ``lang="en"``, i.e. roberta-large at layer 17. That model cannot be downloaded
    here, so it is a setting: ``model_path`` (the composition root and ``rad3d evaluate`` pass
    ``RAD3D_BERTSCORE_MODEL``) names a local copy of roberta-large (or any Hugging Face encoder;
    ``num_layers`` defaults to bert-score's tuned layer for known names, 17 for a 24-layer RoBERTa,
    else the last layer). Without one, the offline all-MiniLM-L6-v2 transformer (layer 6) stands in
    and :attr:`label` says so: its values are not comparable with published BERTScores.
    Scoring uses the ``bert-score`` package's embedding and matching functions; each distinct
    sentence is embedded once per call (see :meth:`f1`).
    """

    def __init__(self, model_path: str | Path | None = None, num_layers: int | None = None, batch_size: int = 64):
        configured = model_path
        if configured is not None:
            path = Path(configured).expanduser()
            if not (path / "config.json").is_file():
                raise FileNotFoundError(
                    f"BERTScore model folder {path} has no config.json (setting {BERTSCORE_MODEL_ENV})"
                )
            self.path = str(path)
            self.num_layers = num_layers or _model_layers(self.path)
            self.label = f"{path.name} (layer {self.num_layers})"
        else:
            self.path = default_model_path()
            self.num_layers = num_layers or _model_layers(self.path)
            self.label = f"{SBERT_MODEL_NAME} (layer {self.num_layers}; offline stand-in for {BERTSCORE_DEFAULT_MODEL})"
        self.batch_size = batch_size

    def f1(self, predictions: Sequence[str], references: Sequence[str]) -> list[float]:
        """Per-pair F1 in input order; identical pairs are scored once.

        A pair's score depends only on its two texts: each text is embedded in a batch of texts of its
        own token length, so no padding reaches the model, and each pair is matched on its own.
        (``bert_score``'s own batches mix lengths: padding moves token embeddings slightly, and in the
        greedy matching a padded position counts as similarity 0, which wins the max when a token's real
        similarities are all negative; a score then depends on the other rows of the file, by about 1e-3
        in F1 on dissimilar pairs.) The arithmetic is bert-score's own (``greedy_cos_idf``).
        """
        if not predictions:
            return []
        pairs = list(dict.fromkeys(zip(predictions, references, strict=True)))
        scorer = _bert_scorer(self.path, self.num_layers, self.batch_size)
        f1 = _padding_free_f1(scorer, [p for p, _ in pairs], [r for _, r in pairs], self.batch_size)
        by_pair = dict(zip(pairs, f1, strict=True))
        return [by_pair[pair] for pair in zip(predictions, references, strict=True)]


def _padding_free_f1(scorer: Any, cands: list[str], refs: list[str], batch_size: int) -> list[float]:
    """``BERTScorer.score`` (idf off, no baseline rescaling) with embedding batches of equal token length."""
    from collections import defaultdict

    import torch
    from bert_score.utils import get_bert_embedding, greedy_cos_idf, sent_encode

    tokenizer, model = scorer._tokenizer, scorer._model
    idf_dict: defaultdict[int, float] = defaultdict(lambda: 1.0)
    idf_dict[tokenizer.sep_token_id] = 0
    idf_dict[tokenizer.cls_token_id] = 0
    by_length: dict[int, list[str]] = defaultdict(list)
    for sentence in sorted(set(cands) | set(refs)):
        by_length[len(sent_encode(tokenizer, sentence))].append(sentence)
    stats: dict[str, tuple[Any, Any]] = {}
    for length in sorted(by_length):
        group = by_length[length]
        for start in range(0, len(group), batch_size):
            batch = group[start : start + batch_size]
            embs, masks, idf = get_bert_embedding(batch, model, tokenizer, idf_dict, device=scorer.device)
            for i, sentence in enumerate(batch):
                n = int(masks[i].sum().item())
                stats[sentence] = (embs[i, :n].cpu(), idf[i, :n].cpu())

    out: list[float] = []
    with torch.no_grad():
        for cand, ref in zip(cands, refs, strict=True):  # one pair at a time: no padding in the matching either
            (ref_emb, ref_idf), (cand_emb, cand_idf) = stats[ref], stats[cand]
            ones_ref = torch.ones(1, ref_emb.size(0), dtype=torch.bool)
            ones_cand = torch.ones(1, cand_emb.size(0), dtype=torch.bool)
            _, _, f1 = greedy_cos_idf(
                ref_emb.unsqueeze(0),
                ones_ref,
                ref_idf.unsqueeze(0),
                cand_emb.unsqueeze(0),
                ones_cand,
                cand_idf.unsqueeze(0),
            )
            out.append(float(f1.item()))
    return out

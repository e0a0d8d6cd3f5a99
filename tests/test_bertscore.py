"""BERTScore F1 with the offline MiniLM stand-in, against bert-score's own scorer.

A pair's score must depend on its two texts only: bert-score's batches mix text lengths, and padding
(in the embeddings and, as similarity 0, in the greedy matching) moves a dissimilar pair's F1 by about
1e-3 with the other rows of the call. The reference here is bert-score itself, one pair per call
(nothing to pad).
"""

from __future__ import annotations

import random

import pytest

from rad3d_pipeline.evaluation.text_metrics.bertscore import BertScoreF1, _bert_scorer

PAIRS = [
    ("atelectasis", "ground-glass"),
    ("normal", "normal"),
    ("left lower lobe", "right upper lobe"),
    ("a much longer prediction with many words in it here", "normal"),
    ("pleural effusion on the left side with adjacent atelectasis", "pleural effusion"),
    ("3 mm", "12 mm nodule in the right lung"),
]


@pytest.fixture(scope="module")
def scorer() -> BertScoreF1:
    return BertScoreF1()


def _alone(scorer: BertScoreF1, cand: str, ref: str) -> float:
    bert = _bert_scorer(scorer.path, scorer.num_layers, scorer.batch_size)
    return float(bert.score([cand], [ref], batch_size=1)[2][0])


def test_each_pair_equals_bert_score_on_that_pair_alone(scorer: BertScoreF1) -> None:
    ours = scorer.f1([c for c, _ in PAIRS], [r for _, r in PAIRS])
    for (cand, ref), value in zip(PAIRS, ours, strict=True):
        assert value == pytest.approx(_alone(scorer, cand, ref), abs=1e-6), (cand, ref)


def test_a_score_does_not_depend_on_the_other_rows_or_their_order(scorer: BertScoreF1) -> None:
    alone = scorer.f1(["atelectasis"], ["ground-glass"])[0]
    mixed = PAIRS * 3
    random.Random(0).shuffle(mixed)
    values = scorer.f1([c for c, _ in mixed], [r for _, r in mixed])
    for (cand, ref), value in zip(mixed, values, strict=True):
        if (cand, ref) == ("atelectasis", "ground-glass"):
            assert value == pytest.approx(alone, abs=1e-6)
    reordered = list(reversed(mixed))
    again = scorer.f1([c for c, _ in reordered], [r for _, r in reordered])
    assert list(reversed(again)) == values  # the same batches whatever the input order
    # bert-score's own batched call is what this guards against: there the other rows move the score.
    bert = _bert_scorer(scorer.path, scorer.num_layers, scorer.batch_size)
    theirs = float(bert.score([c for c, _ in PAIRS], [r for _, r in PAIRS], batch_size=64)[2][0])
    assert abs(theirs - alone) > 1e-5

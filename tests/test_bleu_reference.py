"""The HF-style BLEU (``text_metrics.compute_bleu``/``hf_bleu``) against an independent statement of the
reference formula: TensorFlow NMT's public ``compute_bleu`` (tensorflow/nmt, nmt/scripts/bleu.py), which
Hugging Face ``evaluate``'s ``bleu`` metric ships as ``nmt_bleu.py``: per n-gram order, matches clipped by
the largest count in any reference, over the corpus; precision = matches / possible n-grams; the
geometric mean of the four precisions (0 if any is 0); brevity penalty exp(1 - r/c) when the translation
is not longer than the shortest references; ``max_order=4``, ``smooth=False``.
"""

from __future__ import annotations

import math
import random
from collections.abc import Sequence

import pytest

from rad3d_pipeline.evaluation import text_metrics as tm


def _ngrams(tokens: Sequence[str], n: int) -> dict[tuple[str, ...], int]:
    counts: dict[tuple[str, ...], int] = {}
    for i in range(len(tokens) - n + 1):
        gram = tuple(tokens[i : i + n])
        counts[gram] = counts.get(gram, 0) + 1
    return counts


def reference_bleu(references: Sequence[Sequence[Sequence[str]]], translations: Sequence[Sequence[str]]) -> float:
    """TF NMT ``compute_bleu(references, translations, max_order=4, smooth=False)[0]``, written out."""
    max_order = 4
    matches = [0] * max_order
    possible = [0] * max_order
    c = r = 0
    for refs, hyp in zip(references, translations, strict=True):
        c += len(hyp)
        r += min(len(ref) for ref in refs)
        for n in range(1, max_order + 1):
            hyp_counts = _ngrams(hyp, n)
            # a hypothesis n-gram counts at most as often as it occurs in one reference (the max over them)
            ceiling: dict[tuple[str, ...], int] = {}
            for ref in refs:
                for gram, k in _ngrams(ref, n).items():
                    ceiling[gram] = max(ceiling.get(gram, 0), k)
            matches[n - 1] += sum(min(k, ceiling.get(gram, 0)) for gram, k in hyp_counts.items())
            possible[n - 1] += max(len(hyp) - n + 1, 0)
    precisions = [m / p if p > 0 else 0.0 for m, p in zip(matches, possible, strict=True)]
    if min(precisions) <= 0:
        return 0.0
    geometric_mean = math.exp(sum(math.log(p) for p in precisions) / max_order)
    brevity = 1.0 if c > r else math.exp(1 - r / c)
    return geometric_mean * brevity


def _sentence(rng: random.Random, vocabulary: list[str], low: int, high: int) -> list[str]:
    return [rng.choice(vocabulary) for _ in range(rng.randint(low, high))]


def _edited(rng: random.Random, tokens: list[str], vocabulary: list[str]) -> list[str]:
    """``tokens`` with some words replaced, dropped or inserted (a translation close to its reference)."""
    out: list[str] = []
    for token in tokens:
        roll = rng.random()
        if roll < 0.15:
            continue
        out.append(rng.choice(vocabulary) if roll < 0.35 else token)
        if rng.random() < 0.1:
            out.append(rng.choice(vocabulary))
    return out or [rng.choice(vocabulary)]


@pytest.mark.parametrize("seed", range(6))
def test_compute_bleu_equals_the_tf_nmt_formula_on_random_corpora(seed: int) -> None:
    rng = random.Random(seed)
    # small vocabularies give repeated words and many shared 2- to 4-grams (clipping matters)
    vocabulary = [f"w{i}" for i in range(rng.choice((3, 5, 8, 20)))]
    nonzero = 0
    for _ in range(150):
        size = rng.randint(1, 6)
        references = [[_sentence(rng, vocabulary, 1, 25) for _ in range(rng.randint(1, 3))] for _ in range(size)]
        translations = [
            _edited(rng, rng.choice(refs), vocabulary) if rng.random() < 0.7 else _sentence(rng, vocabulary, 1, 25)
            for refs in references
        ]
        expected = reference_bleu(references, translations)
        got = tm.compute_bleu(references, translations, max_order=4, smooth=False)[0]
        assert got == pytest.approx(expected, abs=1e-12, rel=0), (references, translations)
        nonzero += expected > 0
    assert nonzero > 20  # the cases exercise the whole formula, not only its zero branch


def test_hf_bleu_max_order_4_equals_the_formula_on_13a_tokens() -> None:
    """``hf_bleu`` (13a tokens, one reference) against the formula on sacreBLEU's own 13a tokens."""
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    tokenize = Tokenizer13a()
    rng = random.Random(11)
    words = [
        "the",
        "left",
        "lung",
        ",",
        "lower",
        "lobe",
        "nodule",
        ".",
        "3.5",
        "mm",
        "no",
        "effusion",
        "is",
        "seen",
        "-",
        "right",
    ]
    checked = 0
    for _ in range(400):
        reference_words = _sentence(rng, words, 1, 18)
        reference = " ".join(reference_words)
        prediction = " ".join(
            _edited(rng, reference_words, words) if rng.random() < 0.7 else _sentence(rng, words, 1, 18)
        )
        hyp, ref = tokenize(prediction).split(), tokenize(reference).split()
        expected = reference_bleu([[ref]], [hyp])
        assert tm.hf_bleu(prediction, reference, max_order=4) == pytest.approx(expected, abs=1e-12, rel=0)
        checked += expected > 0
    assert checked > 20


def test_formula_edge_cases() -> None:
    # identical texts: every precision 1, no brevity penalty
    tokens = ["a", "b", "c", "d", "e"]
    assert tm.compute_bleu([[tokens]], [tokens])[0] == reference_bleu([[tokens]], [tokens]) == 1.0
    # no 4-gram possible (3 tokens): precision 0 for order 4, so 0 (smooth=False)
    assert tm.compute_bleu([[["a", "b", "c"]]], [["a", "b", "c"]])[0] == 0.0
    # shorter translation: brevity penalty exp(1 - 8/5)
    ref = ["a", "b", "c", "d", "e", "f", "g", "h"]
    hyp = ["a", "b", "c", "d", "e"]
    assert tm.compute_bleu([[ref]], [hyp])[0] == pytest.approx(math.exp(1 - 8 / 5), abs=1e-12)
    # the closest-length rule is TF NMT's: the *shortest* reference sets r
    refs = [ref, ["a", "b", "c", "d", "e", "f"]]
    assert tm.compute_bleu([refs], [hyp])[0] == pytest.approx(reference_bleu([refs], [hyp]), abs=1e-12)
    # an empty translation scores 0 (TF NMT divides by zero there; current `evaluate` returns 0)
    assert tm.compute_bleu([[ref]], [[]])[0] == 0.0

"""NLTK's METEOR (``single_meteor_score``: exact, Porter-stem and WordNet-synonym stages), same alignment and
arithmetic, with stems and synonym sets looked up once per word (synonyms from the precomputed table of
:mod:`rad3d_pipeline.evaluation.text_metrics.wordnet_synonyms`, read in milliseconds)."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from itertools import chain, compress
from typing import Any

from rad3d_pipeline.evaluation.text_metrics.memo import on_clear
from rad3d_pipeline.evaluation.text_metrics.tokenizers import shared_stemmer
from rad3d_pipeline.evaluation.text_metrics.wordnet_synonyms import SynonymTable, open_table


@functools.cache
def nltk_wordnet() -> Any:
    """NLTK's own WordNet reader (about 4 s to build): what ``cache=False`` and the tests use."""
    from rad3d_pipeline.evaluation.text_metrics.wordnet_setup import ensure_wordnet

    ensure_wordnet()
    from nltk.corpus import wordnet

    wordnet.ensure_loaded()
    return wordnet


@functools.cache
def wordnet_synonyms() -> SynonymTable:
    """METEOR's synonym lookup from the precomputed table (milliseconds; built once if missing or stale)."""
    from rad3d_pipeline.evaluation.text_metrics.wordnet_setup import ensure_wordnet

    return open_table(ensure_wordnet())


on_clear(wordnet_synonyms.cache_clear)

Alignment = list[tuple[int, int]]  # (hypothesis position, reference position) of matched words


def _match_equal(
    matches: Alignment, hyp_at: list[int], hyp: Sequence[str], ref_at: list[int], ref: Sequence[str]
) -> tuple[list[int], Sequence[str], list[int], Sequence[str]]:
    """METEOR's exact and stem stages (NLTK's ``_match_enums``): align equal words, return the leftovers.

    NLTK takes hypothesis words from last to first and gives each the latest still unmatched
    equal reference word. Words only ever meet their equals, so per word that pairs its
    occurrences from the end: the k-th last in the hypothesis with the k-th last in the reference.
    ``hyp_at``/``ref_at`` hold each word's position in the original token lists.
    """
    common = set(hyp).intersection(ref)
    if not common:
        return hyp_at, hyp, ref_at, ref
    keep_hyp = [True] * len(hyp)
    keep_ref = [True] * len(ref)
    for word in common:
        if hyp.count(word) == 1 and ref.count(word) == 1:  # the usual case, found in C
            i, j = hyp.index(word), ref.index(word)
            matches.append((hyp_at[i], ref_at[j]))
            keep_hyp[i] = keep_ref[j] = False
            continue
        hyp_positions = [k for k, w in enumerate(hyp) if w == word]
        ref_positions = [k for k, w in enumerate(ref) if w == word]
        for i, j in zip(reversed(hyp_positions), reversed(ref_positions), strict=False):
            matches.append((hyp_at[i], ref_at[j]))
            keep_hyp[i] = keep_ref[j] = False
    return (
        list(compress(hyp_at, keep_hyp)),
        list(compress(hyp, keep_hyp)),
        list(compress(ref_at, keep_ref)),
        list(compress(ref, keep_ref)),
    )


def _match_synonyms(
    matches: Alignment, hyp_at: list[int], hyp: Sequence[str], ref_at: list[int], ref: Sequence[str]
) -> None:
    """METEOR's WordNet stage (NLTK's ``_enum_wordnetsyn_match``) on the stem stage's leftovers.

    Hypothesis words from last to first; each takes the latest still unmatched reference word
    among its synonyms (distinct words hold distinct positions, so the maximum over the few
    reference words is the one NLTK's backward scan finds first).
    """
    ref_words = set(ref)
    synonym_sets = list(map(wordnet_synonyms().lookup, hyp))
    if ref_words.isdisjoint(chain.from_iterable(synonym_sets)):  # the usual case: nothing to align
        return
    positions: dict[str, list[int]] | None = None
    for i in range(len(hyp) - 1, -1, -1):
        names = synonym_sets[i]
        if names.isdisjoint(ref_words):  # ref_words only shrinks, so this never skips a match
            continue
        if positions is None:
            positions = {}
            for j, word in enumerate(ref):
                positions.setdefault(word, []).append(j)
        best_j, best_word = -1, ""
        for candidate, found in positions.items():
            if found and found[-1] > best_j and candidate in names:
                best_j, best_word = found[-1], candidate
        if best_j >= 0:
            positions[best_word].pop()
            matches.append((hyp_at[i], ref_at[best_j]))


def meteor(
    reference: Sequence[str], hypothesis: Sequence[str], alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5
) -> float:
    """NLTK's ``single_meteor_score`` (lowercase; exact, Porter-stem, WordNet-synonym stages), memoised.

    Same alignment and arithmetic as ``nltk.translate.meteor_score`` (including NLTK's
    behaviour of looking synonyms up for the stemmed leftovers of the stem stage); stems and
    synonym sets are cached per word, and a stage with nothing to align is skipped.
    """
    return meteor_lowercase([w.lower() for w in reference], [w.lower() for w in hypothesis], alpha, beta, gamma)


def meteor_lowercase(
    ref: Sequence[str], hyp: Sequence[str], alpha: float = 0.9, beta: float = 3.0, gamma: float = 0.5
) -> float:
    """:func:`meteor` of tokens already lowercased."""
    translation_length, reference_length = len(hyp), len(ref)
    if not translation_length or not reference_length:
        return 0.0
    matches: Alignment = []
    hyp_at, hyp, ref_at, ref = _match_equal(matches, list(range(len(hyp))), hyp, list(range(len(ref))), ref)
    if hyp and ref:
        stem = shared_stemmer().stem
        hyp_at, hyp, ref_at, ref = _match_equal(matches, hyp_at, list(map(stem, hyp)), ref_at, list(map(stem, ref)))
        if hyp and ref:
            _match_synonyms(matches, hyp_at, hyp, ref_at, ref)
    matched = len(matches)
    if not matched:
        return 0.0
    matches.sort()
    precision = float(matched) / translation_length
    recall = float(matched) / reference_length
    fmean = (precision * recall) / (alpha * precision + (1 - alpha) * recall)
    chunks = 1
    for k in range(matched - 1):
        if not (matches[k + 1][0] == matches[k][0] + 1 and matches[k + 1][1] == matches[k][1] + 1):
            chunks += 1
    frag_frac = float(chunks) / matched
    penalty = gamma * frag_frac**beta
    return float((1 - penalty) * fmean)


def meteor_of(reference_tokens: list[str], hypothesis_tokens: list[str], cache: bool) -> float:
    """:func:`meteor`, or with ``cache=False`` NLTK's own ``meteor_score`` on its own WordNet reader."""
    if cache:
        return meteor(reference_tokens, hypothesis_tokens)
    from nltk.translate.meteor_score import meteor_score

    nltk_wordnet()
    return float(meteor_score([reference_tokens], hypothesis_tokens))

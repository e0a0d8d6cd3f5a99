"""What of sacreBLEU is reproduced here (the 13a rules, the corpus BLEU formula) and the check that the
installed sacreBLEU still has it.

sacreBLEU 2.x's ``TokenizerRegexp`` rules (private ``_re``) and ``BLEU.compute_bleu`` are compared with
:data:`RULES_13A` and :func:`bleu_exp` once per version of its source files (importing sacreBLEU costs
about 0.2 s), remembered in a stamp file named by their SHA-256; where they differ, sacreBLEU's own
code is called instead (pyproject.toml bounds the version).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import math
import re
from collections.abc import Sequence
from contextlib import suppress
from pathlib import Path

MAX_ORDER = 4  # sacreBLEU's default max_ngram_order

# sacreBLEU's TokenizerRegexp rules (sacrebleu 2.x), which the fast 13a split is built on
RULES_13A = (
    (r"([\{-\~\[-\` -\&\(-\+\:-\@\/])", r" \1 "),
    (r"([^0-9])([\.,])", r"\1 \2 "),
    (r"([\.,])([^0-9])", r" \1 \2"),
    (r"([0-9])(-)", r"\1 \2 "),
)

_SOURCES = (
    "tokenizers/tokenizer_base.py",
    "tokenizers/tokenizer_re.py",
    "tokenizers/tokenizer_13a.py",
    "metrics/bleu.py",
    "utils.py",
)


def sources_sha256() -> str | None:
    """SHA-256 of the sacreBLEU files whose rules and formula are reproduced here (found without importing it)."""
    spec = importlib.util.find_spec("sacrebleu")
    if spec is None or not spec.submodule_search_locations:
        return None
    package = Path(next(iter(spec.submodule_search_locations)))
    digest = hashlib.sha256()
    try:
        for name in _SOURCES:
            digest.update(name.encode() + b"\0" + (package / name).read_bytes() + b"\0")
    except OSError:
        return None
    return digest.hexdigest()


def stamp_path(digest: str) -> Path:
    from rad3d_pipeline.evaluation.text_metrics.wordnet_setup import default_nltk_data

    return default_nltk_data() / "corpora" / f"rad3d-sacrebleu-{digest[:24]}.verified"


@functools.cache
def verified() -> bool:
    """Whether the installed sacreBLEU has the 13a rules and corpus formula reproduced here (see the module)."""
    digest = sources_sha256()
    if digest is None:
        return False
    stamp = stamp_path(digest)
    if stamp.is_file():
        return True
    if not matches():
        return False
    with suppress(OSError):  # a read-only environment checks again next time
        stamp.parent.mkdir(parents=True, exist_ok=True)
        stamp.write_text("sacreBLEU 13a rules and corpus BLEU (exp smoothing) reproduced exactly\n", encoding="utf-8")
    return True


def matches() -> bool:
    """sacreBLEU's own 13a rules equal :data:`RULES_13A` and its ``compute_bleu`` equals :func:`bleu_exp`."""
    import random

    import sacrebleu
    from sacrebleu.tokenizers.tokenizer_re import TokenizerRegexp

    rules = TokenizerRegexp()._re  # type: ignore[no-untyped-call]
    if tuple((pattern.pattern, replacement, pattern.flags) for pattern, replacement in rules) != tuple(
        (pattern, replacement, re.compile(pattern).flags) for pattern, replacement in RULES_13A
    ):
        return False
    rng = random.Random(13)
    for _ in range(400):
        total = [rng.choice((0, rng.randint(1, 50), rng.randint(1, 10**6))) for _ in range(MAX_ORDER)]
        correct = [rng.randint(0, t) if rng.random() < 0.8 else 0 for t in total]
        sys_len, ref_len = rng.randint(0, 10**6), rng.randint(0, 10**6)
        theirs = sacrebleu.BLEU.compute_bleu(
            correct=list(correct), total=list(total), sys_len=sys_len, ref_len=ref_len, smooth_method="exp"
        ).score
        if float(theirs) != bleu_exp(correct, total, sys_len, ref_len):
            return False
    return True


def bleu_exp(correct: Sequence[int], total: Sequence[int], sys_len: int, ref_len: int) -> float:
    """sacreBLEU's ``BLEU.compute_bleu(..., smooth_method="exp", max_ngram_order=4).score``, same operations."""
    bp = 1.0
    if sys_len < ref_len:
        bp = math.exp(1 - ref_len / sys_len) if sys_len > 0 else 0.0
    order = MAX_ORDER
    precisions = [0.0] * order
    if not any(correct):
        return 0.0
    smooth_mteval = 1.0
    for n in range(1, order + 1):
        if total[n - 1] == 0:
            break
        if correct[n - 1] == 0:
            smooth_mteval *= 2
            precisions[n - 1] = 100.0 / (smooth_mteval * total[n - 1])
        else:
            precisions[n - 1] = 100.0 * correct[n - 1] / total[n - 1]
    return bp * math.exp(sum([math.log(p) if p != 0.0 else -9999999999 for p in precisions]) / order)

"""The tokenisers the metrics use, each equal to its library's: sacreBLEU's 13a, rouge-score's (with NLTK's
Porter stemmer), NLTK's ``word_tokenize``; memoised per text and per word, no library imported on the
fast paths (``tests/test_text_metrics.py`` compares each with its library on broad samples)."""

from __future__ import annotations

import abc
import builtins
import functools
import importlib.util
import re
import sys
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rad3d_pipeline.evaluation.text_metrics import sacrebleu_rules
from rad3d_pipeline.evaluation.text_metrics.memo import on_clear, per_text

# --------------------------------------------------------------------------- Porter stemmer (NLTK's)


class CachedStemmer:
    """NLTK's PorterStemmer (what both rouge-score and METEOR use) memoised per word."""

    def __init__(self) -> None:
        self.stem: Callable[[str], str] = functools.lru_cache(maxsize=1 << 17)(porter_stemmer_class()().stem)


def porter_stemmer_class() -> Any:
    """NLTK's ``PorterStemmer`` class, without importing the ``nltk`` package when it is not loaded yet.

    ``import nltk`` runs NLTK's ``__init__``, which imports scipy, scikit-learn and most of NLTK
    (about a second). The stemmer's module needs none of it: its three imports (``nltk.redos``
    and ``nltk.termsec.safe_print`` for its demo, the ``StemmerI`` base class) are given
    stand-ins and NLTK's own ``nltk/stem/porter.py`` source runs unchanged. Anything unexpected
    (another import, a missing file) falls back to the real import; ``tests/test_text_metrics.py``
    checks the stems against the imported class on a broad vocabulary.
    """
    if "nltk" not in sys.modules:
        try:
            return porter_from_source()
        except Exception:
            pass
    from nltk.stem.porter import PorterStemmer

    return PorterStemmer


class _StemmerI(abc.ABC):  # nltk.stem.api.StemmerI
    @abc.abstractmethod
    def stem(self, token: str) -> str: ...


@functools.cache
def porter_from_source() -> Any:
    spec = importlib.util.find_spec("nltk")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("nltk is not installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "stem" / "porter.py"
    stand_ins = {
        "nltk": types.SimpleNamespace(redos=None),
        "nltk.stem.api": types.SimpleNamespace(StemmerI=_StemmerI),
        "nltk.termsec": types.SimpleNamespace(safe_print=print),
    }

    def guarded_import(name: str, globals: Any = None, locals: Any = None, fromlist: Any = (), level: int = 0) -> Any:
        if name in stand_ins and level == 0:
            return stand_ins[name]
        if name == "nltk" or name.startswith("nltk."):
            raise ImportError(f"nltk/stem/porter.py now imports {name}")
        return __import__(name, globals, locals, fromlist, level)

    namespace: dict[str, Any] = {
        "__builtins__": {**vars(builtins), "__import__": guarded_import},
        "__name__": "rad3d_pipeline._nltk_porter",
        "__file__": str(path),
    }
    exec(compile(path.read_text(encoding="utf-8"), str(path), "exec"), namespace)
    return namespace["PorterStemmer"]


@functools.cache
def shared_stemmer() -> CachedStemmer:
    return CachedStemmer()


on_clear(shared_stemmer.cache_clear)

# --------------------------------------------------------------------------- rouge-score's tokenizer

# rouge_score.tokenize's patterns
_ROUGE_ALPHANUM = re.compile(r"[a-z0-9]+")  # what is left between the matches of r"[^a-z0-9]+"
_ROUGE_VALID_TOKEN = re.compile(r"^[a-z0-9]+$")
_ROUGE_STEMMED: dict[str, str] = {}  # rouge-score token -> stemmed token ("" when dropped); one entry per word
on_clear(_ROUGE_STEMMED.clear)


@functools.lru_cache(maxsize=1 << 17)
def _rouge_stem(token: str) -> str | None:
    """rouge-score's fate of a token longer than 3 characters: its Porter stem, or None if that is dropped."""
    stem = shared_stemmer().stem(token)
    return stem if _ROUGE_VALID_TOKEN.match(stem) else None


on_clear(_rouge_stem.cache_clear)


def rouge_tokens(text: str, use_stemmer: bool) -> tuple[str, ...]:
    """``rouge_score.tokenize.tokenize(text, PorterStemmer() if use_stemmer else None)``, same tokens.

    After the substitution only ``[a-z0-9]`` runs remain, so rouge-score's final validity check
    can only drop a stem; it is applied to stems alone (once per word, cached).
    """
    # rouge-score: lowercase, replace each run of r"[^a-z0-9]+" by a space, split on whitespace; that
    # leaves exactly the maximal runs of [a-z0-9], found here in one pass
    tokens = _ROUGE_ALPHANUM.findall(text.lower())
    if not use_stemmer:
        return tuple(tokens)
    known = _ROUGE_STEMMED
    if len(known) >= 1 << 17:
        known.clear()
    for token in set(tokens).difference(known):
        # each new word once: its stem if longer than 3 characters, "" where rouge-score drops it
        known[token] = (_rouge_stem(token) or "") if len(token) > 3 else token
    return tuple(filter(None, map(known.__getitem__, tokens)))


# --------------------------------------------------------------------------- NLTK's word_tokenize


@functools.cache
def punkt_available() -> bool:
    """Whether NLTK's punkt sentence model is installed (``word_tokenize`` needs it to split sentences)."""
    import nltk

    for resource in ("tokenizers/punkt_tab/english/", "tokenizers/punkt/english.pickle"):
        try:
            nltk.data.find(resource)
        except LookupError:
            continue
        return True
    return False


def meteor_tokenizer_label() -> str:
    if punkt_available():
        return "nltk.word_tokenize"
    return "nltk.word_tokenize(preserve_line=True) (punkt model not installed: no sentence splitting)"


def word_tokenize_uncached(text: str) -> list[str]:
    from nltk.tokenize import word_tokenize as nltk_word_tokenize

    if punkt_available():
        return list(nltk_word_tokenize(text))
    return list(nltk_word_tokenize(text, preserve_line=True))


_word_tokenize_cached = per_text(lambda text: tuple(word_tokenize_uncached(text)))


def word_tokenize(text: str) -> list[str]:
    """What HF ``evaluate``'s METEOR tokenises with (``nltk.word_tokenize``).

    NLTK's punkt model cannot be downloaded here; without it the sentence-splitting step
    is skipped (``preserve_line=True``), which only differs for multi-sentence texts whose
    inner sentence-final periods then stay attached to the word.
    """
    return list(_word_tokenize_cached(text))


# --------------------------------------------------------------------------- sacreBLEU's 13a


@functools.cache
def regexp_tokenizer_steps() -> tuple[dict[int, str], list[tuple[re.Pattern[str], str]]] | None:
    """sacreBLEU's ``TokenizerRegexp`` rules: the first (pad every symbol and space) as a translation table.

    The first rule matches single ASCII characters (space included) and pads each with spaces;
    run as ``re.sub`` its replacement template is expanded in Python for every match, about
    once per word. ``str.translate`` does the same in C. The other rules look at two
    neighbouring characters, one of them "." "," or "-". None if the installed sacreBLEU has
    other rules: then its own tokenizer is used.
    """
    if sacrebleu_rules.verified():  # the rules are sacreBLEU's: no need to import it
        rules = [(re.compile(pattern), replacement) for pattern, replacement in sacrebleu_rules.RULES_13A]
    else:
        from sacrebleu.tokenizers.tokenizer_re import TokenizerRegexp

        rules = TokenizerRegexp()._re  # type: ignore[no-untyped-call]
        if tuple((pattern.pattern, replacement) for pattern, replacement in rules) != sacrebleu_rules.RULES_13A:
            return None
    (first, _), *rest = rules
    table = {code: f" {chr(code)} " for code in range(128) if first.fullmatch(chr(code))}
    return table, rest


@functools.cache
def sacrebleu_13a() -> Any:
    from sacrebleu.tokenizers.tokenizer_13a import Tokenizer13a

    return Tokenizer13a()  # type: ignore[no-untyped-call]


_13A_WORDS: dict[str, str] = {}  # whitespace-separated word -> its 13a tokens joined by spaces
on_clear(_13A_WORDS.clear)


def tokens_13a_uncached(text: str) -> list[str]:
    """sacreBLEU's ``Tokenizer13a()(text).split()``: the mteval-v13a tokens.

    The first rule pads single characters with spaces; the others look at two neighbouring
    characters, one of them "." "," or "-", and whitespace acts in them as any other non-digit.
    None joins or removes whitespace, so each whitespace-separated word is tokenised on its own
    (between spaces), once per distinct word: the text's tokens are its words' tokens in order.
    """
    steps = regexp_tokenizer_steps()
    if steps is None:
        return str(sacrebleu_13a()(text)).split()
    text = text.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in text:
        text = text.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<").replace("&gt;", ">")
    known = _13A_WORDS
    if len(known) >= 1 << 17:
        known.clear()
    get = known.get
    return " ".join([get(word) or _13a_word(word, steps) for word in text.split()]).split()


def _13a_word(word: str, steps: tuple[dict[int, str], list[tuple[re.Pattern[str], str]]]) -> str:
    """sacreBLEU's ``TokenizerRegexp`` rules applied to one whitespace-free word (remembered)."""
    table, rules = steps
    pieces = word.translate(table).split()
    for i, piece in enumerate(pieces):
        if "." in piece or "," in piece or "-" in piece:  # the other rules need one of these
            line = f" {piece} "
            for pattern, replacement in rules:
                line = pattern.sub(replacement, line)
            pieces[i] = " ".join(line.split())
    tokens = _13A_WORDS[word] = " ".join(pieces)
    return tokens


def tokenize_13a_uncached(text: str) -> str:
    """sacreBLEU's ``Tokenizer13a()(text)``: mteval-v13a tokens joined by single spaces."""
    if regexp_tokenizer_steps() is None:
        return str(sacrebleu_13a()(text))
    return " ".join(tokens_13a_uncached(text))


tokenize_13a_cached = per_text(tokenize_13a_uncached)


def tokenize_13a(text: str, cache: bool = True) -> list[str]:
    """The 13a tokenizer (mteval-v13a) as HF ``evaluate``'s BLEU uses it: a list of tokens.

    ``cache=False`` runs sacreBLEU's own ``Tokenizer13a`` (the reference the fast path is tested against).
    """
    return (tokenize_13a_cached(text) if cache else str(sacrebleu_13a()(text))).split()

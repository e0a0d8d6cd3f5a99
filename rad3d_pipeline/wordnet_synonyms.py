"""WordNet synonyms as NLTK's METEOR looks them up, read straight from WordNet's data files.

NLTK's METEOR matches a hypothesis word against ``lemma.name()`` of every lemma of every synset
``wordnet.synsets(word)`` returns. Building those ``Synset`` objects (gloss, examples, pointers,
``Lemma`` objects) is most of the time of a cold METEOR run: about 0.4 ms a word. Only the lemma
names are needed, so :func:`synonyms` takes the same route to the same synsets (NLTK's own
``_morphy`` forms and lemma index, parts of speech in NLTK's order) and reads just the word
fields of each synset's line, from a read-only memory map of the data file. The result is the
same set of names as NLTK's (``tests/test_text_metrics.py`` checks that on a large vocabulary).

Memory maps carry no file position, so forked workers can share them safely.
"""

from __future__ import annotations

import functools
import mmap
import re
from pathlib import Path
from typing import Any

# NLTK's POS_LIST order and its data file per part of speech (FILEMAP; satellites live in data.adj)
_POS_ORDER = ("n", "v", "a", "r")
_DATA_FILE = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}
# NLTK's syntactic-marker split of a lemma field, e.g. "galore(ip)" -> "galore"
_MARKER = re.compile(r"(.*?)(\([^()]*\))?$")


class WordNetSynonyms:
    """Single-word WordNet lemma names for a word, equal to NLTK METEOR's ``_enum_wordnetsyn_match`` set."""

    def __init__(self, wordnet: Any) -> None:
        self._wordnet = wordnet
        self._root = Path(str(wordnet.root))
        self._maps: dict[str, mmap.mmap] = {}
        self.lookup = functools.lru_cache(maxsize=1 << 17)(self._lookup)

    def _data(self, pos: str) -> mmap.mmap:
        name = _DATA_FILE[pos]
        if name not in self._maps:
            path = self._root / f"data.{name}"
            with path.open("rb") as handle:
                self._maps[name] = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        return self._maps[name]

    def lemma_names(self, pos: str, offset: int) -> list[str]:
        """``[l.name() for l in wordnet.synset_from_pos_and_offset(pos, offset).lemmas()]``."""
        data = self._data(pos)
        end = data.find(b"\n", offset)
        line = data[offset : end if end >= 0 else len(data)]
        fields = line.split(b" ", 4)
        if len(fields) < 5 or fields[0] != b"%08d" % offset:
            raise LookupError(f"WordNet data.{_DATA_FILE[pos]} has no synset at offset {offset} ({self._root})")
        count = int(fields[3], 16)
        words = fields[4].split(b" ", 2 * count)[: 2 * count : 2]
        names = []
        for word in words:
            match = _MARKER.match(word.decode("utf-8"))
            names.append(match.group(1) if match else word.decode("utf-8"))
        return names

    def _lookup(self, word: str) -> frozenset[str]:
        wordnet = self._wordnet
        index = wordnet._lemma_pos_offset_map
        lemma = word.lower()
        names: set[str] = set()
        for pos in _POS_ORDER:
            for form in wordnet._morphy(lemma, pos, True):
                for offset in index[form].get(pos, []):
                    names.update(self.lemma_names(pos, offset))
        return frozenset(name for name in names if "_" not in name) | {word}

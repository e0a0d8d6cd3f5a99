"""WordNet synonyms as NLTK's METEOR looks them up, precomputed once and read from a memory map.

NLTK's METEOR matches a hypothesis word against ``lemma.name()`` of every lemma of every synset
``wordnet.synsets(word)`` returns (names holding ``_`` dropped, the word itself added). Building
NLTK's ``WordNetCorpusReader`` (its lemma index and exception lists) costs about 4 s per process,
more than scoring a whole file. :class:`SynonymTable` holds what that lookup needs, computed once
from NLTK's own reader:

- per lemma of WordNet's index and per part of speech (NLTK's order ``n v a r``), the single-word
  lemma names of all that lemma's synsets (read from the data files by :class:`WordNetSynonyms`);
- NLTK's exception lists and morphological substitutions (``_morphy``'s inputs).

A lookup then replays NLTK's ``synsets``: lowercase the word, for each part of speech take the
word and either its exception forms or its substitution forms, and union the names of those forms
that are in the index (a form that is not contributes nothing, exactly as ``_morphy`` filters it).

The table is a single file (sorted records behind an offsets array, a JSON header) written next to
NLTK's WordNet copy by ``python -m rad3d_pipeline.evaluation.text_metrics.wordnet_setup`` (or on first use), opened as a
read-only memory map: loading it costs a few milliseconds and no NLTK import. Its header records
the WordNet files it came from (name, size, modification time and a SHA-256 of their contents)
and the SHA-256 of NLTK's WordNet reader source; any difference makes it stale and it is rebuilt.
``tests/test_text_metrics.py`` checks the lookups against NLTK's reader on a broad word sample.

Memory maps carry no file position, so forked workers can share them safely.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.util
import json
import mmap
import os
import re
import struct
from collections.abc import Iterable
from pathlib import Path
from typing import Any

# NLTK's POS_LIST order and its data file per part of speech (FILEMAP; satellites live in data.adj)
_POS_ORDER = ("n", "v", "a", "r")
_DATA_FILE = {"n": "noun", "v": "verb", "a": "adj", "s": "adj", "r": "adv"}
# NLTK's syntactic-marker split of a lemma field, e.g. "galore(ip)" -> "galore"
_MARKER = re.compile(r"(.*?)(\([^()]*\))?$")

# The WordNet files a lookup depends on (index: lemmas -> synsets; data: lemma names; exc: exceptions).
SOURCE_FILES = tuple(f"{kind}.{name}" for kind in ("index", "data") for name in ("noun", "verb", "adj", "adv")) + tuple(
    f"{name}.exc" for name in ("noun", "verb", "adj", "adv")
)
TABLE_FORMAT = 1
TABLE_FILE = "rad3d-wordnet-synonyms.bin"
_MAGIC = b"RAD3D-WORDNET-SYNONYMS\n"
_FIELD = b"\x1f"  # between a record's key and its per-POS fields
_POS_SEP = b"\x1e"  # between per-POS fields


class WordNetSynonyms:
    """Single-word WordNet lemma names for a word through NLTK's loaded reader (the table's builder)."""

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


# --------------------------------------------------------------------------- fingerprints


def _sha256_files(paths: Iterable[Path]) -> str:
    digest = hashlib.sha256()
    for path in paths:
        digest.update(path.name.encode() + b"\0")
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
        digest.update(b"\0")
    return digest.hexdigest()


def _stats(root: Path) -> dict[str, list[int]]:
    out = {}
    for name in SOURCE_FILES:
        stat = (root / name).stat()
        out[name] = [stat.st_size, stat.st_mtime_ns]
    return out


def wordnet_checksum(root: Path) -> str:
    """SHA-256 over the WordNet files a lookup reads (names and contents, in a fixed order)."""
    return _sha256_files(root / name for name in SOURCE_FILES)


def nltk_reader_checksum() -> str:
    """SHA-256 of NLTK's WordNet reader source (``_morphy``, ``synsets``), found without importing NLTK."""
    spec = importlib.util.find_spec("nltk")
    if spec is None or not spec.submodule_search_locations:
        return "nltk-not-installed"
    package = Path(next(iter(spec.submodule_search_locations)))
    return _sha256_files([package / "corpus" / "reader" / "wordnet.py"])


class StaleTableError(Exception):
    """The table on disk does not describe the WordNet files / NLTK reader in use."""


# --------------------------------------------------------------------------- the precomputed table


class SynonymTable:
    """The precomputed lookup: :meth:`lookup` equals :class:`WordNetSynonyms`'s without NLTK's reader."""

    def __init__(self, path: Path, wordnet_root: Path, *, verify: bool = True) -> None:
        self.path = path
        with path.open("rb") as handle:
            self._map = mmap.mmap(handle.fileno(), 0, access=mmap.ACCESS_READ)
        data = self._map
        if data[: len(_MAGIC)] != _MAGIC:
            raise StaleTableError(f"{path}: not a WordNet synonym table")
        start = len(_MAGIC)
        (header_length,) = struct.unpack_from("<Q", data, start)
        start += 8
        try:
            header = json.loads(data[start : start + header_length])
        except ValueError as exc:
            raise StaleTableError(f"{path}: unreadable header ({exc})") from None
        self.header: dict[str, Any] = header
        if header.get("format") != TABLE_FORMAT:
            raise StaleTableError(f"{path}: table format {header.get('format')}, expected {TABLE_FORMAT}")
        if verify:
            check_fresh(header, wordnet_root)
        start += header_length
        count = int(header["count"])
        self._count = count
        self._offsets = memoryview(data)[start : start + 4 * (count + 1)].cast("I")
        self._records = start + 4 * (count + 1)
        self._exceptions: dict[str, dict[str, list[str]]] = header["exceptions"]
        self._substitutions: dict[str, list[tuple[str, str]]] = {
            pos: [(old, new) for old, new in rules] for pos, rules in header["substitutions"].items()
        }
        self.lookup = functools.lru_cache(maxsize=1 << 17)(self._lookup)

    def _record(self, i: int) -> bytes:
        return self._map[self._records + self._offsets[i] : self._records + self._offsets[i + 1]]

    def _key(self, i: int) -> bytes:
        record = self._record(i)
        return record[: record.index(_FIELD)]

    def names(self, form: str) -> dict[str, list[str]] | None:
        """The index entry of ``form``: single-word names per part of speech, or None if not a lemma."""
        key = form.encode("utf-8")
        lo, hi = 0, self._count
        while lo < hi:  # bisect over the sorted keys
            mid = (lo + hi) // 2
            if self._key(mid) < key:
                lo = mid + 1
            else:
                hi = mid
        if lo == self._count:
            return None
        record = self._record(lo)
        at = record.index(_FIELD)
        if record[:at] != key:
            return None
        fields = record[at + 1 :].decode("utf-8").split(_POS_SEP.decode())
        return {field[0]: field[1:].split(" ") if len(field) > 1 else [] for field in fields if field}

    def _forms(self, lemma: str, pos: str) -> list[str]:
        """NLTK's ``_morphy(lemma, pos, check_exceptions=True)`` candidates before its index filter."""
        exceptions = self._exceptions[pos]
        if lemma in exceptions:
            return [lemma, *exceptions[lemma]]
        return [lemma] + [lemma[: -len(old)] + new for old, new in self._substitutions[pos] if lemma.endswith(old)]

    def _lookup(self, word: str) -> frozenset[str]:
        lemma = word.lower()
        names: set[str] = {word}
        entries: dict[str, dict[str, list[str]] | None] = {}
        for pos in _POS_ORDER:
            for form in self._forms(lemma, pos):
                if form not in entries:
                    entries[form] = self.names(form)
                entry = entries[form]
                if entry is not None:
                    names.update(entry.get(pos, ()))
        return frozenset(names)


def check_fresh(header: dict[str, Any], wordnet_root: Path) -> None:
    """Raise :class:`StaleTableError` unless ``header`` describes the WordNet files and NLTK reader in use.

    File sizes and modification times are compared first (a stat each); the contents are hashed
    only when those differ, so an unchanged copy costs no read.
    """
    source = header.get("source", {})
    try:
        stats = _stats(wordnet_root)
    except OSError as exc:
        raise StaleTableError(f"WordNet files under {wordnet_root} unreadable: {exc}") from None
    if stats != source.get("stats") and wordnet_checksum(wordnet_root) != source.get("wordnet_sha256"):
        raise StaleTableError(f"WordNet files under {wordnet_root} changed since the table was built")
    if nltk_reader_checksum() != source.get("nltk_reader_sha256"):
        raise StaleTableError("NLTK's WordNet reader changed since the table was built")


def build_table(wordnet: Any, path: Path) -> Path:
    """Write the table for NLTK's loaded ``wordnet`` reader to ``path`` (atomically: temporary file, rename)."""
    root = Path(str(wordnet.root))
    synonyms = WordNetSynonyms(wordnet)
    names_of: dict[tuple[str, int], list[str]] = {}
    records: list[tuple[bytes, bytes]] = []
    for lemma, by_pos in wordnet._lemma_pos_offset_map.items():
        fields = []
        for pos in _POS_ORDER:
            offsets = by_pos.get(pos)
            if offsets is None:
                continue
            names: dict[str, None] = {}
            for offset in offsets:
                key = (pos, offset)
                if key not in names_of:
                    names_of[key] = [n for n in synonyms.lemma_names(pos, offset) if "_" not in n]
                names.update(dict.fromkeys(names_of[key]))
            fields.append(pos + " ".join(sorted(names)))
        records.append((lemma.encode("utf-8"), _POS_SEP.join(f.encode("utf-8") for f in fields)))
    records.sort()
    for lemma_key, _ in records:
        if _FIELD in lemma_key or b" " in lemma_key:
            raise ValueError(f"WordNet lemma {lemma_key!r} holds a separator byte")
    header = {
        "format": TABLE_FORMAT,
        "count": len(records),
        "source": {
            "wordnet_root": str(root),
            "stats": _stats(root),
            "wordnet_sha256": wordnet_checksum(root),
            "nltk_reader_sha256": nltk_reader_checksum(),
        },
        "exceptions": {pos: wordnet._exception_map[pos] for pos in _POS_ORDER},
        "substitutions": {pos: list(wordnet.MORPHOLOGICAL_SUBSTITUTIONS[pos]) for pos in _POS_ORDER},
    }
    header_bytes = json.dumps(header, sort_keys=True, separators=(",", ":")).encode("utf-8")
    blobs = [key + _FIELD + value for key, value in records]
    offsets = [0]
    for blob in blobs:
        offsets.append(offsets[-1] + len(blob))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as handle:
            handle.write(_MAGIC)
            handle.write(struct.pack("<Q", len(header_bytes)))
            handle.write(header_bytes)
            handle.write(struct.pack(f"<{len(offsets)}I", *offsets))
            for blob in blobs:
                handle.write(blob)
        tmp.replace(path)  # readers that hold the old file keep their map
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def table_path(nltk_data: Path) -> Path:
    """Where the table lives: beside NLTK's WordNet copy, ``<nltk_data>/corpora/<TABLE_FILE>``."""
    return nltk_data / "corpora" / TABLE_FILE


def load_nltk_wordnet(nltk_data: Path) -> Any:
    """NLTK's WordNet reader on ``<nltk_data>/corpora/wordnet`` (the slow part the table avoids)."""
    from nltk.corpus.reader.wordnet import WordNetCorpusReader

    return WordNetCorpusReader(str(nltk_data / "corpora" / "wordnet"), None)


def open_table(nltk_data: Path, *, rebuild: bool = True) -> SynonymTable:
    """The table for the WordNet copy under ``nltk_data``; built (once, about 10 s) when missing or stale.

    Where the folder is not writable a fresh table is built in a temporary file for this process.
    """
    wordnet_root = nltk_data / "corpora" / "wordnet"
    path = table_path(nltk_data)
    try:
        return SynonymTable(path, wordnet_root)
    except (FileNotFoundError, StaleTableError, ValueError, struct.error):
        if not rebuild:
            raise
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # NLTK warns that the multilingual functions are unavailable
        reader = load_nltk_wordnet(nltk_data)
    try:
        build_table(reader, path)
    except OSError:
        import tempfile

        path = Path(tempfile.mkdtemp(prefix="rad3d-wordnet-")) / TABLE_FILE
        build_table(reader, path)
    return SynonymTable(path, wordnet_root)

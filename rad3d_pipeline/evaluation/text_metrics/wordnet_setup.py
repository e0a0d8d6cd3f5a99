"""Make WordNet 3.0 usable offline for NLTK (METEOR's synonym stage).

NLTK normally downloads its ``wordnet`` corpus from the network. Here the database comes
from Debian's ``wordnet-base`` and ``wordnet-sense-index`` packages, which install the
WordNet 3.0 files under ``/usr/share/wordnet``. NLTK cannot read that folder directly:
it wants ``<nltk_data>/corpora/wordnet/`` and a ``lexnames`` file that Debian does not
ship. :func:`ensure_wordnet` copies the database files there, writes ``lexnames`` (the
standard WordNet 3.0 list of the 45 lexicographer files) and points NLTK at the folder.

Run ``python -m rad3d_pipeline.evaluation.text_metrics.wordnet_setup [NLTK_DATA_DIR]`` once per machine (CI does
it in its setup step); calling :func:`ensure_wordnet` again is cheap and idempotent. The command
also precomputes METEOR's synonym table (:mod:`rad3d_pipeline.evaluation.text_metrics.wordnet_synonyms`)
beside the copy, so that no later process has to build NLTK's WordNet reader (about 4 s each).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import sys
from pathlib import Path

SYSTEM_WORDNET = Path("/usr/share/wordnet")
DEBIAN_PACKAGES = ("wordnet-base", "wordnet-sense-index")

# The database files NLTK's WordNetCorpusReader opens (besides ``lexnames``), and the
# Debian package that ships each of them.
_REQUIRED_FILES: dict[str, str] = {
    "data.adj": "wordnet-base",
    "data.adv": "wordnet-base",
    "data.noun": "wordnet-base",
    "data.verb": "wordnet-base",
    "index.adj": "wordnet-base",
    "index.adv": "wordnet-base",
    "index.noun": "wordnet-base",
    "index.verb": "wordnet-base",
    "adj.exc": "wordnet-base",
    "adv.exc": "wordnet-base",
    "noun.exc": "wordnet-base",
    "verb.exc": "wordnet-base",
    "cntlist.rev": "wordnet-base",
    "index.sense": "wordnet-sense-index",
}

# WordNet 3.0 lexicographer files: number, name, syntactic category (1 noun, 2 verb, 3 adj, 4 adv).
LEXNAMES: tuple[tuple[str, int], ...] = (
    ("adj.all", 3),
    ("adj.pert", 3),
    ("adv.all", 4),
    ("noun.Tops", 1),
    ("noun.act", 1),
    ("noun.animal", 1),
    ("noun.artifact", 1),
    ("noun.attribute", 1),
    ("noun.body", 1),
    ("noun.cognition", 1),
    ("noun.communication", 1),
    ("noun.event", 1),
    ("noun.feeling", 1),
    ("noun.food", 1),
    ("noun.group", 1),
    ("noun.location", 1),
    ("noun.motive", 1),
    ("noun.object", 1),
    ("noun.person", 1),
    ("noun.phenomenon", 1),
    ("noun.plant", 1),
    ("noun.possession", 1),
    ("noun.process", 1),
    ("noun.quantity", 1),
    ("noun.relation", 1),
    ("noun.shape", 1),
    ("noun.state", 1),
    ("noun.substance", 1),
    ("noun.time", 1),
    ("verb.body", 2),
    ("verb.change", 2),
    ("verb.cognition", 2),
    ("verb.communication", 2),
    ("verb.competition", 2),
    ("verb.consumption", 2),
    ("verb.contact", 2),
    ("verb.creation", 2),
    ("verb.emotion", 2),
    ("verb.motion", 2),
    ("verb.perception", 2),
    ("verb.possession", 2),
    ("verb.social", 2),
    ("verb.stative", 2),
    ("verb.weather", 2),
    ("adj.ppl", 3),
)


class WordNetUnavailableError(RuntimeError):
    """The WordNet database is neither installed for NLTK nor available from Debian's packages."""


def lexnames_text() -> str:
    """The ``lexnames`` file: ``NN<TAB>name<TAB>pos`` per line, 00 adj.all to 44 adj.ppl."""
    return "".join(f"{i:02d}\t{name}\t{pos}\n" for i, (name, pos) in enumerate(LEXNAMES))


def default_nltk_data() -> Path:
    """``<virtualenv>/nltk_data``: a folder NLTK searches by default (``sys.prefix/nltk_data``)."""
    return Path(sys.prefix) / "nltk_data"


def _is_complete(target: Path) -> bool:
    if not all((target / name).is_file() for name in _REQUIRED_FILES):
        return False
    lexnames = target / "lexnames"
    return lexnames.is_file() and lexnames.read_text(encoding="utf-8") == lexnames_text()


def _register(nltk_data: Path) -> None:
    root = str(nltk_data)
    parts = [p for p in os.environ.get("NLTK_DATA", "").split(os.pathsep) if p]
    if root not in parts:
        os.environ["NLTK_DATA"] = os.pathsep.join([root, *parts])
    # NLTK reads NLTK_DATA when it is imported (importing it costs about a second, so it is not
    # imported here); an NLTK imported before now gets the folder in its search path directly.
    nltk = sys.modules.get("nltk")
    data = getattr(nltk, "data", None)
    if data is not None and root not in data.path:
        data.path.insert(0, root)


def ensure_wordnet(nltk_data: Path | None = None, source: Path = SYSTEM_WORDNET) -> Path:
    """Install WordNet for NLTK under ``nltk_data`` (default: ``sys.prefix/nltk_data``) if needed.

    Returns the ``nltk_data`` root and makes NLTK search it first (``NLTK_DATA`` and
    ``nltk.data.path``). Raises :class:`WordNetUnavailableError` naming the Debian packages
    to install when the database is missing.
    """
    root = Path(nltk_data) if nltk_data is not None else default_nltk_data()
    target = root / "corpora" / "wordnet"
    if not _is_complete(target):
        missing = sorted({pkg for name, pkg in _REQUIRED_FILES.items() if not (source / name).is_file()})
        if missing:
            raise WordNetUnavailableError(
                f"WordNet 3.0 database not found under {source} (needed by NLTK's METEOR). "
                f"Install the Debian package(s): apt-get install -y {' '.join(missing)} "
                f"(the full set is: {' '.join(DEBIAN_PACKAGES)})"
            )
        staging = target.with_name(f".wordnet-{os.getpid()}.tmp")
        if staging.exists():
            shutil.rmtree(staging)
        staging.mkdir(parents=True)
        for entry in sorted(source.iterdir()):
            # The database files only: Debian's wordnet folder also holds GUI resources.
            if entry.is_file():
                shutil.copy2(entry, staging / entry.name)
        (staging / "lexnames").write_text(lexnames_text(), encoding="utf-8")
        # An incomplete old copy is renamed aside, never deleted in place: a process that is reading
        # a copy keeps its open files, and the new copy appears in one rename.
        if target.exists() and not _is_complete(target):
            aside = target.with_name(f".wordnet-old-{os.getpid()}")
            with contextlib.suppress(OSError):  # another process moved or replaced it first
                target.rename(aside)
            shutil.rmtree(aside, ignore_errors=True)
        try:
            staging.rename(target)
        except OSError:  # another process installed it at the same moment
            shutil.rmtree(staging, ignore_errors=True)
            if not _is_complete(target):
                raise
    _register(root)
    return root


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) > 1 or (args and args[0] in {"-h", "--help"}):
        print("usage: python -m rad3d_pipeline.evaluation.text_metrics.wordnet_setup [NLTK_DATA_DIR]")
        return 0 if args and args[0] in {"-h", "--help"} else 2
    try:
        root = ensure_wordnet(Path(args[0]) if args else None)
    except WordNetUnavailableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    from rad3d_pipeline.evaluation.text_metrics.wordnet_synonyms import open_table

    table = open_table(root)
    print(f"WordNet ready for NLTK under {root / 'corpora' / 'wordnet'}; METEOR synonym table {table.path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

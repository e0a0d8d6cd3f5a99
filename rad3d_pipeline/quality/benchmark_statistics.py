"""Benchmark statistics (the paper's Table 2 and Figure 5): counts, entities, charts.

Entities come from scispaCy's ``en_ner_bionlp13cg_md`` when it is installed; otherwise from
a rule-based entity ruler over an anatomy and pathology lexicon, and the output says so.
"""

from __future__ import annotations

import io
import re
from collections import Counter
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from rad3d_pipeline.common.plots import png_bytes, pyplot
from rad3d_pipeline.release.export import write_csv

SCISPACY_NER = "en_ner_bionlp13cg_md"
ORGANS: dict[str, tuple[str, ...]] = {
    "lung": ("lung", "lungs", "lobe", "lobes", "lingula", "pulmonary", "parenchyma", "bronchus", "bronchi"),
    "heart": ("heart", "cardiac", "pericardium", "pericardial", "coronary"),
    "aorta and vessels": ("aorta", "aortic", "artery", "arteries", "vein", "vessel", "vascular", "pulmonary trunk"),
    "pleura": ("pleura", "pleural"),
    "mediastinum": ("mediastinum", "mediastinal", "hilum", "hilar", "paratracheal"),
    "airway": ("trachea", "tracheal", "airway"),
    "esophagus": ("esophagus", "esophageal", "oesophagus"),
    "thyroid": ("thyroid",),
    "liver": ("liver", "hepatic"),
    "kidney": ("kidney", "kidneys", "renal"),
    "adrenal": ("adrenal",),
    "spleen": ("spleen", "splenic"),
    "bone": ("vertebra", "vertebrae", "vertebral", "rib", "ribs", "sternum", "bone", "bones", "spine"),
    "lymph nodes": ("lymph node", "lymph nodes", "lymphadenopathy"),
}
PATHOLOGIES: tuple[str, ...] = (
    "nodule",
    "mass",
    "lesion",
    "cyst",
    "effusion",
    "consolidation",
    "atelectasis",
    "emphysema",
    "opacity",
    "ground-glass",
    "fibrosis",
    "bronchiectasis",
    "calcification",
    "hernia",
    "thickening",
    "cardiomegaly",
    "bulla",
)


@cache
def entity_pipeline() -> tuple[Any, str]:
    """(spaCy pipeline, name): scispaCy's NER model when installed, else the lexicon ruler."""
    import spacy  # imported on use: loading the code location must stay cheap

    if spacy.util.is_package(SCISPACY_NER):
        return spacy.load(SCISPACY_NER), f"scispacy:{SCISPACY_NER}"
    nlp = spacy.blank("en")
    ruler: Any = nlp.add_pipe("entity_ruler", config={"phrase_matcher_attr": "LOWER"})
    patterns = [{"label": "ORGAN", "pattern": term, "id": organ} for organ, terms in ORGANS.items() for term in terms]
    patterns += [{"label": "PATHOLOGY", "pattern": term, "id": term} for term in PATHOLOGIES]
    ruler.add_patterns(patterns)
    return nlp, "rule-based:anatomy-pathology-lexicon"


def organ_of(text: str) -> str | None:
    lowered = text.lower()
    for organ, terms in ORGANS.items():
        if lowered in terms:
            return organ
    return None


def entity_counts(texts: list[str]) -> tuple[pd.DataFrame, str]:
    """Entity mentions (label, text, organ group) over the texts, and the extractor's name.

    The plain path: every text through the pipeline. :func:`compute_statistics` gives the same
    mentions from each distinct text piece once.
    """
    nlp, name = entity_pipeline()
    rows = []
    for doc in nlp.pipe(texts, batch_size=256):
        for ent in doc.ents:
            organ = ent.ent_id_ if ent.label_ == "ORGAN" and ent.ent_id_ else organ_of(ent.text)
            rows.append({"label": ent.label_, "text": ent.text.lower(), "organ": organ or ""})
    return pd.DataFrame(rows, columns=["label", "text", "organ"]), name


def table2(rows: pd.DataFrame) -> pd.DataFrame:
    """Images, patients and QA pairs per split and task (release rows with release_split)."""
    volume_codes, volumes = pd.factorize(rows["VolumeName"], sort=False)
    patients = pd.Series(volumes, dtype=object).str.extract(r"^([a-z]+_\d+)_")[0]
    patient_codes, _ = pd.factorize(patients, sort=False)
    volume = np.where(volume_codes < 0, np.nan, volume_codes)
    patient_of_row = np.where(volume_codes < 0, -1, np.asarray(patient_codes)[volume_codes])
    patient = np.where(patient_of_row < 0, np.nan, patient_of_row)
    frame = pd.DataFrame(
        {"release_split": rows["release_split"], "Task": rows["Task"], "volume": volume, "patient": patient}
    )
    grouped = frame.groupby(["release_split", "Task"], sort=True)
    out = grouped.agg(images=("volume", "nunique"), patients=("patient", "nunique"), qa_pairs=("Task", "size"))
    return out.reset_index()


# ---------------------------------------------------------------- texts, once per distinct piece

# The lexicon's phrases are made of letters, spaces and hyphens. spaCy splits a text at spaces
# first and tokenizes each piece on its own, and a token holding any other character (".", ",",
# ":", "]", a digit) is in no phrase; so no phrase match crosses a space that follows such a
# character. Texts are cut there into segments and each distinct segment is matched once.
_SEGMENT_BOUNDARY = re.compile(r"(?<=[^\w\s-]) ")
_LEXICON_CHARS = re.compile(r"^[\w -]+$")


def lexicon_segmentable() -> bool:
    """Whether the lexicon ruler's phrases allow cutting texts at :data:`_SEGMENT_BOUNDARY`."""
    terms = [t for group in ORGANS.values() for t in group] + list(PATHOLOGIES)
    return all(_LEXICON_CHARS.match(t) and not re.search(r"[\d_]", t) for t in terms)


@dataclass
class _Corpus:
    """Rows' texts as distinct texts, and each distinct text as a sequence of distinct segments."""

    codes: np.ndarray  # per row: its distinct text
    seg_ids: np.ndarray  # every distinct text's segment ids, text after text
    seg_start: np.ndarray  # per distinct text: where its segment ids start in seg_ids (plus the end)
    segments: list[str]  # distinct segments, in order of first appearance

    @classmethod
    def of(cls, texts: pd.Series, segment: bool) -> _Corpus:
        codes, uniques = pd.factorize(texts, sort=False, use_na_sentinel=True)
        if (codes < 0).any():
            row = int(np.flatnonzero(codes < 0)[0])
            raise ValueError(f"benchmark statistics: row {row} has no question or answer text")
        ids: dict[str, int] = {}
        flat: list[int] = []
        starts = [0]
        for text in uniques:
            parts = _SEGMENT_BOUNDARY.split(text) if segment else [text]
            flat.extend(ids.setdefault(part, len(ids)) for part in parts)
            starts.append(len(flat))
        return cls(np.asarray(codes, dtype=np.int64), np.array(flat, np.int64), np.array(starts, np.int64), list(ids))

    def texts_in_order(self, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Distinct texts of the rows in order of first appearance, and how many rows hold each."""
        codes = self.codes[rows]
        unique, first, counts = np.unique(codes, return_index=True, return_counts=True)
        order = np.argsort(first, kind="stable")
        return unique[order], counts[order]


def _ragged_take(flat: np.ndarray, start: np.ndarray, idx: np.ndarray) -> np.ndarray:
    """``flat[start[i]:start[i + 1]]`` for each i of ``idx``, concatenated."""
    lengths = start[idx + 1] - start[idx]
    total = int(lengths.sum())
    out_start = np.cumsum(lengths) - lengths
    return flat[np.repeat(start[idx] - out_start, lengths) + np.arange(total, dtype=np.int64)]


@dataclass(frozen=True)
class Mentions:
    """Entity mentions of many texts: each distinct mention once (``table``), and ``order``, the
    table row of every mention in text order (what :func:`entity_counts` lists row by row)."""

    table: pd.DataFrame  # label, text, organ
    order: np.ndarray
    extractor: str

    def __len__(self) -> int:
        return len(self.order)

    def to_frame(self) -> pd.DataFrame:
        """The mentions row by row, as :func:`entity_counts` gives them."""
        return self.table.take(self.order).reset_index(drop=True)

    def organ_counts(self) -> Counter[str]:
        """Mentions per organ group (none: left out), in order of first mention."""
        organ_codes, organs = pd.factorize(self.table["organ"], sort=False)
        per_mention = np.asarray(organ_codes, dtype=np.int64)[self.order]
        present, first, counts = np.unique(per_mention, return_index=True, return_counts=True)
        ordered = np.argsort(first, kind="stable")
        return Counter({str(organs[present[i]]): int(counts[i]) for i in ordered if organs[present[i]]})

    def write_csv(self, path: Path) -> None:
        """The same file as ``entity_counts(...)[0].to_csv(path, index=False)``."""
        columns = {}
        for column in ENTITY_COLUMNS:
            codes, values = pd.factorize(self.table[column], sort=False)
            columns[column] = pd.Categorical.from_codes(np.asarray(codes)[self.order], categories=values)
        write_csv(pd.DataFrame(columns), path)


ENTITY_COLUMNS: tuple[str, ...] = ("label", "text", "organ")


def _mentions(corpus: _Corpus, nlp: Any, extractor: str) -> Mentions:
    keys: dict[tuple[str, str, str], int] = {}
    per_segment: list[int] = []
    seg_start = [0]
    for doc in nlp.pipe(corpus.segments, batch_size=256):
        for ent in doc.ents:
            organ = ent.ent_id_ if ent.label_ == "ORGAN" and ent.ent_id_ else organ_of(ent.text)
            key = (ent.label_, ent.text.lower(), organ or "")
            per_segment.append(keys.setdefault(key, len(keys)))
        seg_start.append(len(per_segment))
    seg_flat, seg_starts = np.array(per_segment, np.int64), np.array(seg_start, np.int64)
    # Per distinct text: its segments' mentions in order.
    text_flat = _ragged_take(seg_flat, seg_starts, corpus.seg_ids)
    seg_len = seg_starts[1:] - seg_starts[:-1]
    upto = np.concatenate(([0], np.cumsum(seg_len[corpus.seg_ids]))).astype(np.int64)
    text_start = upto[corpus.seg_start]  # where each distinct text's mentions start in text_flat
    order = _ragged_take(text_flat, text_start, corpus.codes)
    table = pd.DataFrame(list(keys), columns=list(ENTITY_COLUMNS), dtype=object)
    return Mentions(table, order, extractor)


def _text_tokens(text: str, cloud: Any) -> list[str]:
    """WordCloud.process_text's tokens of a text before counting (collocations off)."""
    pattern = cloud.regexp if cloud.regexp is not None else (r"\w[\w']*" if cloud.min_word_length <= 1 else r"\w[\w']+")
    words = re.findall(pattern, text)
    words = [w[:-2] if w.lower().endswith("'s") else w for w in words]
    if not cloud.include_numbers:
        words = [w for w in words if not w.isdigit()]
    if cloud.min_word_length:
        words = [w for w in words if len(w) >= cloud.min_word_length]
    stopwords = {w.lower() for w in cloud.stopwords}
    return [w for w in words if w.lower() not in stopwords]


def weighted_frequencies(pieces: list[str], weights: list[int], cloud: Any) -> dict[str, int]:
    """``cloud.process_text(" ".join(text repeated weight times, in order))`` without the repeats.

    The pieces are in order of first appearance; the cases and plurals are merged as wordcloud's
    ``process_tokens`` does, on weighted counts, so ties keep their order.
    """
    if cloud.collocations:
        raise ValueError("weighted_frequencies: collocations are not supported")
    cases: dict[str, dict[str, int]] = {}
    for piece, weight in zip(pieces, weights, strict=True):
        for word in _text_tokens(piece, cloud):
            case = cases.setdefault(word.lower(), {})
            case[word] = case.get(word, 0) + weight
    merged: dict[str, str] = {}
    if cloud.normalize_plurals:
        for key in list(cases):
            if key.endswith("s") and not key.endswith("ss") and key[:-1] in cases:
                singular = cases[key[:-1]]
                for word, count in cases[key].items():
                    singular[word[:-1]] = singular.get(word[:-1], 0) + count
                merged[key] = key[:-1]
                del cases[key]
    fused: dict[str, int] = {}
    for case in cases.values():
        first = max(case.items(), key=lambda item: item[1])[0]
        fused[first] = sum(case.values())
    return fused


def _cloud(seed: int) -> Any:
    from wordcloud import WordCloud

    return WordCloud(width=640, height=360, background_color="white", random_state=seed, collocations=False)


def _cloud_png(cloud: Any, frequencies: dict[str, int]) -> bytes:
    image = cloud.generate_from_frequencies(frequencies).to_image()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def organ_chart_of_counts(counts: Counter[str], title: str) -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    names = [name for name, _ in counts.most_common()]
    ax.barh(names[::-1], [counts[n] for n in names][::-1], color="#4c72b0")
    ax.set_xlabel("mentions in questions and answers")
    ax.set_title(title)
    return png_bytes(fig, dpi=110, crop=True)


def organ_chart(entities: pd.DataFrame, title: str) -> bytes:
    return organ_chart_of_counts(Counter(o for o in entities["organ"] if o), title)


def word_cloud(texts: list[str], seed: int = 0) -> bytes:
    """The word cloud of the texts, the plain way (:func:`compute_statistics` weighs distinct pieces)."""
    text = " ".join(texts) or "empty"
    cloud = _cloud(seed)
    return _cloud_png(cloud, cloud.process_text(text))


@dataclass(frozen=True)
class BenchmarkStatistics:
    """The paper's Table 2 and Figure 5 for a set of release rows."""

    table2: pd.DataFrame
    mentions: Mentions
    organ_png: bytes
    word_clouds: dict[int, bytes]  # task -> PNG

    @property
    def extractor(self) -> str:
        return self.mentions.extractor

    def write(self, folder: Path) -> dict[str, Path]:
        """``table2.csv``, ``entities.csv``, ``organ_distribution.png``, ``wordcloud_task<N>.png``."""
        folder.mkdir(parents=True, exist_ok=True)
        paths = {"table2": folder / "table2.csv", "entities": folder / "entities.csv"}
        self.table2.to_csv(paths["table2"], index=False)
        self.mentions.write_csv(paths["entities"])
        paths["organ_distribution"] = folder / "organ_distribution.png"
        paths["organ_distribution"].write_bytes(self.organ_png)
        for old in folder.glob("wordcloud_task*.png"):  # tasks no longer in the release
            if old.stem.removeprefix("wordcloud_task") not in {str(t) for t in self.word_clouds}:
                old.unlink()
        for task, png in self.word_clouds.items():
            paths[f"wordcloud_task{task}"] = folder / f"wordcloud_task{task}.png"
            paths[f"wordcloud_task{task}"].write_bytes(png)
        return paths


def compute_statistics(rows: pd.DataFrame, seed: int = 0) -> BenchmarkStatistics:
    """Table 2, entity mentions, the organ chart and per-task word clouds of release rows.

    Each distinct question-and-answer text is processed once and weighed by how many rows hold
    it; with the lexicon ruler, each distinct segment (:data:`_SEGMENT_BOUNDARY`) once. The
    outputs are those of :func:`table2`, :func:`entity_counts`, :func:`organ_chart` and
    :func:`word_cloud` over every row (tests/test_statistics.py holds them equal).
    """
    texts = rows["Question"].astype(object) + " " + rows["Answer"].astype(object)
    nlp, extractor = entity_pipeline()
    segment = extractor.startswith("rule-based") and lexicon_segmentable()
    corpus = _Corpus.of(texts, segment)
    mentions = _mentions(corpus, nlp, extractor)
    organ_png = organ_chart_of_counts(mentions.organ_counts(), f"Organs in the QA ({extractor})")
    clouds: dict[int, bytes] = {}
    tasks = rows["Task"].to_numpy()
    for task in sorted(pd.unique(tasks)):
        texts_in_task, counts = corpus.texts_in_order(np.flatnonzero(tasks == task))
        # Segments of those texts in order of first appearance, weighed by their rows.
        seg_seq = _ragged_take(corpus.seg_ids, corpus.seg_start, texts_in_task)
        per_text = corpus.seg_start[texts_in_task + 1] - corpus.seg_start[texts_in_task]
        seg_weights = np.bincount(seg_seq, weights=np.repeat(counts, per_text), minlength=len(corpus.segments))
        present, first = np.unique(seg_seq, return_index=True)
        ordered = present[np.argsort(first, kind="stable")]
        cloud = _cloud(seed)
        if len(ordered):
            freqs = weighted_frequencies(
                [corpus.segments[i] for i in ordered], [round(float(seg_weights[i])) for i in ordered], cloud
            )
        else:
            freqs = cloud.process_text("empty")
        clouds[int(task)] = _cloud_png(cloud, freqs)
    return BenchmarkStatistics(table2(rows), mentions, organ_png, clouds)


def heatmap(matrix: pd.DataFrame, title: str, fmt: str = "{:.2f}") -> bytes:
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(1.2 * len(matrix.columns) + 2, 1.0 * len(matrix.index) + 1.5))
    values = matrix.to_numpy(dtype=float)
    # Colour each column on its own scale (metrics differ in range); the numbers stay raw.
    lo, hi = np.nanmin(values, axis=0), np.nanmax(values, axis=0)
    colours = (values - lo) / np.where(hi > lo, hi - lo, 1.0)
    image = ax.imshow(colours, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(matrix.columns)), [str(c) for c in matrix.columns], rotation=30, ha="right")
    ax.set_yticks(range(len(matrix.index)), [str(i) for i in matrix.index])
    for i in range(values.shape[0]):
        for j in range(values.shape[1]):
            ax.text(j, i, fmt.format(values[i, j]), ha="center", va="center", color="white", fontsize=8)
    fig.colorbar(image, ax=ax)
    ax.set_title(title)
    return png_bytes(fig, dpi=110, crop=True)

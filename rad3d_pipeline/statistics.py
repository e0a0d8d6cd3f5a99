"""Benchmark statistics (the paper's Table 2 and Figure 5): counts, entities, charts.

Entities come from scispaCy's ``en_ner_bionlp13cg_md`` when it is installed; otherwise from
a rule-based entity ruler over an anatomy and pathology lexicon, and the output says so.
"""

from __future__ import annotations

import io
from collections import Counter
from functools import cache
from typing import Any

import numpy as np
import pandas as pd
import spacy

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
    """Entity mentions (label, text, organ group) over the texts, and the extractor's name."""
    nlp, name = entity_pipeline()
    rows = []
    for doc in nlp.pipe(texts, batch_size=256):
        for ent in doc.ents:
            organ = ent.ent_id_ if ent.label_ == "ORGAN" and ent.ent_id_ else organ_of(ent.text)
            rows.append({"label": ent.label_, "text": ent.text.lower(), "organ": organ or ""})
    return pd.DataFrame(rows, columns=["label", "text", "organ"]), name


def table2(rows: pd.DataFrame) -> pd.DataFrame:
    """Images, patients and QA pairs per split and task (release rows with release_split)."""
    patient = rows["VolumeName"].str.extract(r"^([a-z]+_\d+)_")[0]
    frame = rows.assign(patient=patient)
    grouped = frame.groupby(["release_split", "Task"], sort=True)
    out = grouped.agg(images=("VolumeName", "nunique"), patients=("patient", "nunique"), qa_pairs=("Question", "size"))
    return out.reset_index()


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buffer.getvalue()


def organ_chart(entities: pd.DataFrame, title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    counts = Counter(o for o in entities["organ"] if o)
    fig, ax = plt.subplots(figsize=(7, 4))
    names = [name for name, _ in counts.most_common()]
    ax.barh(names[::-1], [counts[n] for n in names][::-1], color="#4c72b0")
    ax.set_xlabel("mentions in questions and answers")
    ax.set_title(title)
    return _png(fig)


def word_cloud(texts: list[str], seed: int = 0) -> bytes:
    from wordcloud import WordCloud

    text = " ".join(texts) or "empty"
    cloud = WordCloud(width=640, height=360, background_color="white", random_state=seed, collocations=False)
    image = cloud.generate(text).to_image()
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def heatmap(matrix: pd.DataFrame, title: str, fmt: str = "{:.2f}") -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
    return _png(fig)

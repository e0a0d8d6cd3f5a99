"""Task 4, existence detection: 18 yes/no questions per selected volume, from the labels."""

from __future__ import annotations

import numpy as np
import pandas as pd

from rad3d_pipeline.closed_qa.question_templates import TASK4_TEMPLATES
from rad3d_pipeline.ingest.labels import CTRATE_LABELS, TASK4_SUBTASK
from rad3d_pipeline.ingest.patients import first_reconstructions
from rad3d_pipeline.open_qa.qa_rows import NO_CHOICE, QA_COLUMNS, empty_qa_frame, seeded_rng, shuffled_indices

TASK = 4


def select_task4_volumes(labels: pd.DataFrame) -> pd.DataFrame:
    """Each patient's first scan, first reconstruction (``*_a_1`` in CT-RATE)."""
    firsts = first_reconstructions(labels)
    return firsts.drop_duplicates("patient_id", keep="first").reset_index(drop=True)


def build_task4(labels: pd.DataFrame, seed: int = 0) -> pd.DataFrame:
    """Task 4 rows for the selected volumes of a label table.

    Per volume the template pool is shuffled (seeded by the seed and the VolumeName) and
    assigned to the labels in CT-RATE's column order, as the paper describes.
    """
    selected = select_task4_volumes(labels)
    if selected.empty:
        return empty_qa_frame()
    n_labels = len(CTRATE_LABELS)
    volumes = selected["VolumeName"].to_numpy()
    n_pool = len(TASK4_TEMPLATES)
    # Every (template, label) question once; each volume picks its shuffle of the pool per label.
    phrased = np.array(
        [[t.format(aspect=label.lower()) for label in CTRATE_LABELS] for t in TASK4_TEMPLATES], dtype=object
    )
    order = np.array(
        [shuffled_indices(n_pool, seeded_rng(seed, "task4", str(v))) for v in volumes.tolist()], dtype=np.int64
    ).reshape(len(volumes), n_pool)
    slots = np.arange(n_labels) % n_pool
    questions = phrased[order[:, slots], np.arange(n_labels)[None, :]].reshape(-1)
    values = selected[list(CTRATE_LABELS)].to_numpy(dtype=np.int8).reshape(-1)
    yes = values == 1
    n_rows = len(volumes) * n_labels
    label_col = np.tile(np.array(CTRATE_LABELS, dtype=object), len(volumes))
    frame = pd.DataFrame(
        {
            "Task": np.full(n_rows, TASK, dtype=np.int64),
            "Subtask": np.tile(
                np.array([TASK4_SUBTASK[label] for label in CTRATE_LABELS], dtype=np.int64), len(volumes)
            ),
            "VolumeName": np.repeat(volumes, n_labels),
            "Question": questions,
            "Answer": np.where(yes, "Yes", "No"),
            "QuestionType": "Close",
            "AnswerChoice": np.where(yes, "A", "B"),
            "Choice A": "Yes",
            "Choice B": "No",
            "Choice C": NO_CHOICE,
            "Choice D": NO_CHOICE,
            "split": np.repeat(selected["split"].to_numpy(), n_labels),
            "patient_id": np.repeat(selected["patient_id"].to_numpy(), n_labels),
            "subtask_name": label_col,
            "label": label_col,
        }
    )
    return frame[list(QA_COLUMNS)]

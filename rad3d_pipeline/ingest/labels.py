"""The 18 CT-RATE abnormality labels and the 3D-RAD numbering derived from them."""

from __future__ import annotations

# Column order of CT-RATE's multi_abnormality_labels/*_predicted_labels.csv.
CTRATE_LABELS: tuple[str, ...] = (
    "Medical material",
    "Arterial wall calcification",
    "Cardiomegaly",
    "Pericardial effusion",
    "Coronary artery wall calcification",
    "Hiatal hernia",
    "Lymphadenopathy",
    "Emphysema",
    "Atelectasis",
    "Lung nodule",
    "Lung opacity",
    "Pulmonary fibrotic sequela",
    "Pleural effusion",
    "Mosaic attenuation pattern",
    "Peribronchial thickening",
    "Consolidation",
    "Bronchiectasis",
    "Interlobular septal thickening",
)

# Tasks 5-6 leave out "Medical material" (stents are not lesions; the paper, appendix A).
TEMPORAL_LABELS: tuple[str, ...] = tuple(label for label in CTRATE_LABELS if label != "Medical material")

# The release numbers Task 4 subtasks by the label files' alphabetical order.
TASK4_SUBTASK: dict[str, int] = {label: i + 1 for i, label in enumerate(sorted(CTRATE_LABELS))}

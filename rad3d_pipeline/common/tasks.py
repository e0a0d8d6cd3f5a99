"""The six 3D-RAD tasks by number, as the paper names them."""

TASK_NAMES: dict[int, str] = {
    1: "Image Observation",
    2: "Anomaly Detection",
    3: "Medical Computation",
    4: "Existence Detection",
    5: "Static Temporal Diagnosis",
    6: "Longitudinal Temporal Diagnosis",
}

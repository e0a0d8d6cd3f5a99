"""Report sentences: segmentation, sections, measurements, negation and side."""

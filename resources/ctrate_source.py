"""The CT-RATE download as a resource: validated tables of reports, labels and metadata."""

from __future__ import annotations

from typing import Any

from dagster import ConfigurableResource
from pydantic import Field

from rad3d_pipeline.ingest.ctrate import (
    CtrateLayout,
    LoadResult,
    Split,
    crosscheck,
    read_labels,
    read_metadata,
    read_reports,
    read_splits,
)


class CtrateSource(ConfigurableResource):
    """A CT-RATE root in CT-RATE's layout, with or without the ``dataset/`` level."""

    root: str = Field(description="CT-RATE root folder (the one holding dataset/ or radiology_text_reports/).")

    def layout(self) -> CtrateLayout:
        return CtrateLayout.resolve(self.root)

    def labels(self, splits: tuple[Split, ...]) -> LoadResult:
        return read_splits(read_labels, self.layout(), splits)

    def reports(self, splits: tuple[Split, ...]) -> LoadResult:
        return read_splits(read_reports, self.layout(), splits)

    def metadata(self, splits: tuple[Split, ...]) -> LoadResult:
        return read_splits(read_metadata, self.layout(), splits)

    def crosscheck(self, splits: tuple[Split, ...]) -> dict[str, dict[str, Any]]:
        """Per split, volumes with a report but no label row and the reverse (see ``ctrate.crosscheck``)."""
        return crosscheck(self.layout(), splits)

"""Matplotlib, headless, for every chart of the project: :func:`pyplot` and :func:`png_bytes`.

matplotlib is imported on the first chart, not with the module (it costs a noticeable part of a
second), and always with the ``Agg`` backend (no display on a worker or in CI).
"""

from __future__ import annotations

import io
from typing import Any


def pyplot() -> Any:
    """``matplotlib.pyplot`` on the ``Agg`` backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def png_bytes(fig: Any, *, dpi: int = 100, crop: bool = False) -> bytes:
    """``fig`` as PNG bytes, then closed.

    ``crop=False``: laid out with ``tight_layout`` unless the figure has a layout engine of its own
    (``layout="constrained"``), saved at the figure's size. ``crop=True``: saved with
    ``bbox_inches="tight"`` (the image cropped to what is drawn), without a layout pass.
    """
    plt = pyplot()
    buffer = io.BytesIO()
    if crop:
        fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    else:
        if fig.get_layout_engine() is None:
            fig.tight_layout()
        fig.savefig(buffer, format="png", dpi=dpi)
    plt.close(fig)
    return buffer.getvalue()

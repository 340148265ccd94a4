"""matplotlib on the Agg backend, and a figure written as PNG atomically (bench and sweep charts)."""

from __future__ import annotations

import io
from pathlib import Path

from mtz_mobile.fileio import write_atomic


def pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: Path) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    pyplot().close(fig)
    write_atomic(path, buf.getvalue())
    return path.name

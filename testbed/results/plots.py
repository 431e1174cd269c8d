"""PNG plots from results documents (never from live measurements)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .documents import Document


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out, write (PNG, 110 dpi) and close one experiment's figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(out_dir: Path, docs: list[Document]) -> list[Path]:
    """Every kind's plots of every document, into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    from .kinds import plotter

    made: list[Path] = []
    for doc in docs:
        plot = plotter(doc.kind)
        if plot is not None:
            made += plot(doc, out_dir)
    return made

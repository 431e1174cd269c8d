"""PNG plots from results documents (never from live measurements): each kind's, and QEMU
next to the agents."""

from __future__ import annotations

from pathlib import Path

from .documents import Document


def plot_all(out_dir: Path, docs: list[Document]) -> list[Path]:
    """Every kind's plots of every document, into ``out_dir``."""
    import matplotlib

    matplotlib.use("Agg")
    from .kinds import plotter
    from .side_by_side import plot as side_by_side

    made: list[Path] = []
    for doc in docs:
        plot = plotter(doc.kind)
        if plot is not None:
            made += plot(doc, out_dir)
        made += side_by_side(doc.raw, out_dir)
    return made

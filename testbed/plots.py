"""PNG plots from results documents (never from live measurements)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out, write (PNG, 110 dpi) and close one experiment's figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_all(out_dir: Path, docs: list[dict[str, Any]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    from .experiments import plotter_for
    from .side_by_side import plot as side_by_side

    made: list[Path] = []
    for doc in docs:
        plot = plotter_for(doc["spec"]["kind"])
        if plot is not None:
            made += plot(doc, out_dir)
        made += side_by_side(doc, out_dir)
    return made

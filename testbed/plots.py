"""PNG plots from results documents (never from live measurements)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_all(out_dir: Path, docs: list[dict[str, Any]]) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    from .experiments import plotter_for

    made: list[Path] = []
    for doc in docs:
        plot = plotter_for(doc["spec"]["kind"])
        if plot is not None:
            made += plot(doc, out_dir)
    return made

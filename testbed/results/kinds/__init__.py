"""Each experiment kind's own part of the report and its plots, from its results document
(``section(doc) -> markdown lines``, ``plot(doc, out_dir) -> PNG paths``); a kind ``x-y`` has
module ``x_y`` here, as in ``testbed.run.kinds``."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..documents import Document


def _module(kind: str) -> Any:
    try:
        return importlib.import_module(f"{__name__}.{kind.replace('-', '_')}")
    except ModuleNotFoundError:
        return None


def section(doc: Document) -> list[str]:
    """Markdown lines of the kind's own headline section ([] when it has none)."""
    fn = getattr(_module(doc.kind), "section", None)
    return fn(doc) if fn else []


def plotter(kind: str) -> Callable[[Document, Path], list[Path]] | None:
    """The kind's plot function, if it has one."""
    return getattr(_module(kind), "plot", None)

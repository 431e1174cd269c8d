"""Experiment kinds: each module runs ONE concrete variant of its spec and returns a dict.

The runner (``testbed.run.runner``) expands sweeps and repetitions, adds the environment and
writes results; plots and the report read only those results.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Progress = Callable[[str], None]


def runner_for(kind: str) -> Callable[[Any, Progress], dict[str, Any]]:
    """The ``run(spec, progress) -> variant result`` function of experiment ``kind``."""
    mod = _module(kind)
    if mod is None:
        raise KeyError(f"no runner for experiment kind {kind!r}")
    return mod.run


def report_section(kind: str, doc: dict[str, Any]) -> list[str]:
    """Markdown lines of a kind's own headline section ([] when it has none)."""
    mod = _module(kind)
    fn = getattr(mod, "report_section", None) if mod else None
    return fn(doc) if fn else []


def plotter_for(kind: str) -> Callable[[dict[str, Any], Any], list[Any]] | None:
    mod = _module(kind)
    return getattr(mod, "plot", None) if mod else None


def _module(kind: str) -> Any:
    import importlib

    name = {"smoke": "smoke", "core-load": "core_load", "long-distance": "long_distance",
            "cloud-encrypted": "cloud_encrypted"}.get(kind)
    if name is None:
        return None
    try:
        return importlib.import_module(f"{__name__}.{name}")
    except ModuleNotFoundError:
        return None

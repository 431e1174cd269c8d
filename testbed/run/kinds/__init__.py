"""Experiment kinds: each module runs ONE concrete variant of its spec and returns a dict.

The runner (``testbed.run.runner``) expands sweeps and repetitions, adds the environment and
writes results; the report and plots (``testbed.results``) read only those results. The kinds
are the ones ``testbed.run.spec.KINDS`` validates; a kind ``x-y`` runs in module ``x_y``.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from ..spec import KINDS

Progress = Callable[[str], None]


def module_name(kind: str) -> str:
    """The module (here, and in ``testbed.results.kinds``) of experiment ``kind``."""
    return kind.replace("-", "_")


def runner_for(kind: str) -> Callable[[Any, Progress], dict[str, Any]]:
    """The ``run(spec, progress) -> variant result`` function of experiment ``kind``."""
    if kind not in KINDS:
        raise KeyError(f"no experiment kind {kind!r} (known: {', '.join(KINDS)})")
    return importlib.import_module(f"{__name__}.{module_name(kind)}").run

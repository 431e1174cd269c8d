"""Topologies: WHAT the network is, as pure data (``topologies.model.Network``).

Every topology is named and parameterised the same way in experiment specs, on the CLI and
in Python::

    from topologies import build
    net = build("wan", sites=2, rtt_ms=150, bw_mbps=100)

``REGISTRY`` maps each name to its builder; ``build`` checks the parameters against the
builder's signature and raises :class:`TopologyError` naming what is wrong.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from .cloud import cloud
from .fabric import PlanError
from .lan import lan
from .model import Network
from .pair import pair
from .spine_leaf import spine_leaf
from .wan import wan

REGISTRY: dict[str, Callable[..., Network]] = {
    "pair": pair,
    "spine_leaf": spine_leaf,
    "wan": wan,
    "cloud": cloud,
    "lan": lan,
}


class TopologyError(ValueError):
    """Unknown topology or parameter, or invalid parameter values."""


def _canonical(name: str) -> str:
    return name.strip().lower().replace("-", "_")


def parameters(name: str) -> dict[str, Any]:
    """Parameter names of topology ``name`` with their defaults."""
    builder = _builder(name)
    return {p.name: p.default for p in inspect.signature(builder).parameters.values()}


def _builder(name: str) -> Callable[..., Network]:
    try:
        return REGISTRY[_canonical(name)]
    except KeyError:
        raise TopologyError(f"unknown topology {name!r}; known: {', '.join(sorted(REGISTRY))}"
                            ) from None


def build(name: str, **params: Any) -> Network:
    """Build topology ``name`` (``spine-leaf`` and ``spine_leaf`` are the same) from params."""
    builder = _builder(name)
    known = inspect.signature(builder).parameters
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise TopologyError(f"topology {_canonical(name)!r}: unknown parameter(s) "
                            f"{', '.join(unknown)}; known: {', '.join(known)}")
    try:
        return builder(**params)
    except (PlanError, ValueError, TypeError) as exc:
        raise TopologyError(f"topology {_canonical(name)!r}: {exc}") from None


__all__ = ["REGISTRY", "Network", "TopologyError", "build", "parameters"]

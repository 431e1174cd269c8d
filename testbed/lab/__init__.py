"""The lab: a topology realised on this kernel (namespaces, links, shaping, routed stacks,
firewall, services) and the one place that executes its commands and owns its state.

``from testbed.lab import Lab`` is the public entry; it is imported on first use, so that the
package's own helpers (``python -m testbed.lab.zygote``) start without the whole lab.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Lab"]


def __getattr__(name: str) -> Any:
    if name == "Lab":
        from .lab import Lab

        return Lab
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

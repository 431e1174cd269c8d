"""The lab: a topology realised on this kernel (namespaces, links, shaping, routed stacks,
firewall, services) and the one place that executes its commands and owns its state."""

from .lab import Lab

__all__ = ["Lab"]

"""An L3 spine-leaf fabric with hypervisor hosts on the leaves.

::

        s1      s2   ...           spines (routers)
        |  \\  /  |
        |   \\/   |                 every leaf links to every spine (fabric links)
        |   /\\   |
        l1      l2   ...           leaves (routers, each the gateway of its hosts)
       /  \\    /  \\
    h1-1 h1-2 h2-1 h2-2            hypervisor hosts, one link per function stack

Every leaf reaches every other leaf over all spines (ECMP, routes computed from the
topology); ``ecmp_hash`` selects L3 (addresses) or L4 (addresses + ports) flow hashing.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from .fabric import AddressPlan, PlanError, StackOptions, check_rate, fabric_site
from .model import LinkSpec, Network, StackMode
from .paths import compute_routes


def fabric_rate(spines: int, hosts_per_leaf: int, host_link_mbps: float | None,
                fabric_link_mbps: float | None, oversubscription: float | None) -> float | None:
    """Leaf-spine link speed: given, or derived from the oversubscription ratio

    ``oversubscription = hosts_per_leaf * host_link_mbps / (spines * fabric_link_mbps)``.
    """
    check_rate("host_link_mbps", host_link_mbps)
    check_rate("fabric_link_mbps", fabric_link_mbps)
    if oversubscription is None:
        return fabric_link_mbps
    if isinstance(oversubscription, bool) or not oversubscription > 0:
        raise PlanError(f"oversubscription must be > 0 (got {oversubscription!r})")
    if host_link_mbps is None:
        raise PlanError("oversubscription needs host_link_mbps (the host side of the ratio)")
    derived = hosts_per_leaf * host_link_mbps / (spines * oversubscription)
    if fabric_link_mbps is not None and abs(fabric_link_mbps - derived) > 0.01 * derived:
        raise PlanError(f"fabric_link_mbps={fabric_link_mbps} contradicts oversubscription="
                        f"{oversubscription} (which gives {derived:g}); give one of them")
    return derived


def spine_leaf(spines: int = 2, leaves: int = 2, hosts_per_leaf: int = 2,
               host_link_mbps: float | None = None, fabric_link_mbps: float | None = None,
               oversubscription: float | None = None, ecmp_hash: str = "l4",
               stacks: bool | Sequence[str] = True, stack_mode: StackMode = "auto",
               stack_rate_mbps: Mapping[str, float] | None = None,
               stack_dscp: Mapping[str, str] | None = None) -> Network:
    """A spine-leaf fabric. Link speeds ``None`` mean unshaped veth links.

    ``stacks``: True (management, migration, replication), a list of functions, or False
    (one plain link per host). ``stack_mode``: ``auto`` (VRF when the kernel has it, else
    policy routing; decided by the lab), ``vrf`` or ``policy``.
    """
    fabric_mbps = fabric_rate(spines, hosts_per_leaf, host_link_mbps, fabric_link_mbps,
                              oversubscription)
    opts = StackOptions.from_params(stacks, stack_rate_mbps, stack_dscp)
    if stack_mode not in ("auto", "vrf", "policy"):
        raise PlanError(f"stack_mode must be auto, vrf or policy (got {stack_mode!r})")
    net = Network("spine_leaf", params={
        "spines": spines, "leaves": leaves, "hosts_per_leaf": hosts_per_leaf,
        "host_link_mbps": host_link_mbps, "fabric_link_mbps": fabric_mbps,
        "oversubscription": (hosts_per_leaf * host_link_mbps / (spines * fabric_mbps)
                             if host_link_mbps and fabric_mbps else None),
        "ecmp_hash": ecmp_hash, "stacks": list(opts.functions) if opts else False,
        "stack_mode": stack_mode, "stack_rate_mbps": dict(stack_rate_mbps or {}),
        "stack_dscp": dict(stack_dscp or {})})
    net.stack_mode = stack_mode
    site = fabric_site(net, AddressPlan(), "", spines, leaves, hosts_per_leaf,
                       LinkSpec(bw_mbps=host_link_mbps), LinkSpec(bw_mbps=fabric_mbps), opts,
                       ecmp_hash)
    for route in compute_routes(net, site.announce):
        net.add_route(route)
    return net

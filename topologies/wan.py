"""Sites joined by WAN routers over emulated long-distance links.

::

    site a (router with hosts,          WAN link(s): one-way delay per         site b
    or a spine-leaf fabric whose   a-r ===== direction, jitter, loss, ===== b-r ...
    spines all link to a-r)               bandwidth

Each site has a WAN router ``<site>-r``; WAN routers are joined as a full mesh (or a chain).
A WAN link's impairments are applied on both ends' egress, so each direction gets its own
one-way delay: ``rtt_ms`` splits evenly, ``delay_ms`` is one-way (a number, or
``[a_to_b, b_to_a]`` for an asymmetric path).
"""

from __future__ import annotations

import string
from collections.abc import Mapping, Sequence
from typing import Any

from .fabric import (
    AddressPlan,
    PlanError,
    Site,
    StackOptions,
    check_rate,
    fabric_site,
    router_site,
    router_sysctls,
)
from .model import Interface, LinkSpec, Network, StackMode
from .paths import compute_routes

WAN_KEYS = ("rtt_ms", "delay_ms", "jitter_ms", "loss_pct", "bw_mbps", "reorder", "queue_pkts")


def wan_specs(rtt_ms: float | None = None, delay_ms: float | Sequence[float] | None = None,
              jitter_ms: float = 0.0, loss_pct: float = 0.0, bw_mbps: float | None = None,
              reorder: bool = False, queue_pkts: int | None = None) -> tuple[LinkSpec, LinkSpec]:
    """The two directions of a WAN link from its user-facing parameters."""
    if rtt_ms is not None and delay_ms is not None:
        raise PlanError("give rtt_ms or delay_ms, not both")
    if rtt_ms is not None:
        if rtt_ms < 0:
            raise PlanError(f"rtt_ms must be >= 0 (got {rtt_ms})")
        ab = ba = rtt_ms / 2
    elif delay_ms is None:
        ab = ba = 0.0
    elif isinstance(delay_ms, int | float):
        ab = ba = float(delay_ms)
    else:
        if len(delay_ms) != 2:
            raise PlanError(f"delay_ms must be one number or [a_to_b, b_to_a] (got {delay_ms})")
        ab, ba = (float(d) for d in delay_ms)
    check_rate("bw_mbps", bw_mbps)
    try:
        return tuple(LinkSpec(bw_mbps=bw_mbps, delay_ms=d, jitter_ms=jitter_ms,  # type: ignore
                              loss_pct=loss_pct, reorder=reorder, queue_pkts=queue_pkts)
                     for d in (ab, ba))
    except ValueError as exc:
        raise PlanError(str(exc)) from None


def build_site(net: Network, plan: AddressPlan, name: str, spines: int, leaves: int,
               hosts_per_leaf: int, host_link_mbps: float | None,
               fabric_link_mbps: float | None, opts: StackOptions | None,
               ecmp_hash: str) -> tuple[Site, str]:
    """A site and its WAN router ``<name>-r`` (returned)."""
    prefix = f"{name}-"
    host_link = LinkSpec(bw_mbps=host_link_mbps)
    if spines == 0:
        if leaves != 1:
            raise PlanError("a site without spines is one router with hosts: leaves must be 1")
        site = router_site(net, plan, prefix, hosts_per_leaf, host_link, opts, ecmp_hash)
        return site, site.border[0]
    site = fabric_site(net, plan, prefix, spines, leaves, hosts_per_leaf, host_link,
                       LinkSpec(bw_mbps=fabric_link_mbps), opts, ecmp_hash)
    border = f"{name}-r"
    net.add_node(border, "router", sysctls=router_sysctls(ecmp_hash))
    for j, spine in enumerate(site.spines, start=1):
        a, b = plan.p2p("fabric")
        net.add_link(Interface(border, f"{border}-s{j}", (a,)),
                     Interface(spine, f"{spine}-r", (b,)), LinkSpec(bw_mbps=fabric_link_mbps))
    return site, border


def site_names(n: int) -> list[str]:
    if not isinstance(n, int) or isinstance(n, bool) or not 2 <= n <= 26:
        raise PlanError(f"sites must be an integer in 2..26 (got {n!r})")
    return list(string.ascii_lowercase[:n])


def wan(sites: int = 2, spines: int = 0, leaves: int = 1, hosts_per_leaf: int = 2,
        rtt_ms: float | None = None, delay_ms: float | Sequence[float] | None = None,
        jitter_ms: float = 0.0, loss_pct: float = 0.0, bw_mbps: float | None = None,
        reorder: bool = False, queue_pkts: int | None = None, layout: str = "mesh",
        links: Mapping[str, Mapping[str, Any]] | None = None,
        host_link_mbps: float | None = None, fabric_link_mbps: float | None = None,
        ecmp_hash: str = "l4", stacks: bool | Sequence[str] = False,
        stack_mode: StackMode = "auto", stack_rate_mbps: Mapping[str, float] | None = None,
        stack_dscp: Mapping[str, str] | None = None) -> Network:
    """``sites`` sites (``a``, ``b``, ...) joined by WAN links.

    ``spines=0`` makes each site one router with ``hosts_per_leaf`` hosts; otherwise each site
    is a spine-leaf fabric. The WAN parameters apply to every WAN link; ``links`` overrides
    them per link, keyed ``"a-b"`` (e.g. ``{"a-c": {"rtt_ms": 150}}``).
    """
    names = site_names(sites)
    if layout not in ("mesh", "chain"):
        raise PlanError(f"layout must be mesh or chain (got {layout!r})")
    opts = StackOptions.from_params(stacks, stack_rate_mbps, stack_dscp)
    base = {"rtt_ms": rtt_ms, "delay_ms": delay_ms, "jitter_ms": jitter_ms,
            "loss_pct": loss_pct, "bw_mbps": bw_mbps, "reorder": reorder,
            "queue_pkts": queue_pkts}
    pairs = ([(x, y) for i, x in enumerate(names) for y in names[i + 1:]] if layout == "mesh"
             else list(zip(names, names[1:], strict=False)))
    overrides = dict(links or {})
    for key, over in overrides.items():
        if tuple(key.split("-")) not in pairs:
            raise PlanError(f"links: {key!r} is not a WAN link (links: "
                            f"{', '.join(f'{x}-{y}' for x, y in pairs)})")
        bad = set(over) - set(WAN_KEYS)
        if bad:
            raise PlanError(f"links[{key!r}]: unknown setting(s) {sorted(bad)} "
                            f"(known: {', '.join(WAN_KEYS)})")
    net = Network("wan", params={"sites": sites, "spines": spines, "leaves": leaves,
                                 "hosts_per_leaf": hosts_per_leaf, **base, "layout": layout,
                                 "links": {k: dict(v) for k, v in overrides.items()},
                                 "host_link_mbps": host_link_mbps,
                                 "fabric_link_mbps": fabric_link_mbps, "ecmp_hash": ecmp_hash,
                                 "stacks": list(opts.functions) if opts else False,
                                 "stack_mode": stack_mode})
    net.stack_mode = stack_mode
    plan = AddressPlan()
    announce: dict[str, list[str]] = {}
    border: dict[str, str] = {}
    for name in names:
        site, border[name] = build_site(net, plan, name, spines, leaves, hosts_per_leaf,
                                        host_link_mbps, fabric_link_mbps, opts, ecmp_hash)
        for k, v in site.announce.items():
            announce.setdefault(k, []).extend(v)
    for x, y in pairs:
        params = {**base}
        over = dict(overrides.get(f"{x}-{y}", {}))
        if "rtt_ms" in over:
            params["delay_ms"] = None
        if "delay_ms" in over:
            params["rtt_ms"] = None
        params.update(over)
        ab, ba = wan_specs(**params)
        a, b = plan.p2p("wan")
        rx, ry = border[x], border[y]
        net.add_link(Interface(rx, f"{rx}-{y}", (a,)), Interface(ry, f"{ry}-{x}", (b,)), ab, ba)
        announce.setdefault(rx, []).append(a)
    for route in compute_routes(net, {k: _networks(v) for k, v in announce.items()}):
        net.add_route(route)
    return net


def _networks(cidrs: list[str]) -> list[str]:
    import ipaddress

    return [str(ipaddress.ip_interface(c).network) for c in cidrs]

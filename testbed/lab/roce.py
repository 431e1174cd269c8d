"""A Soft-RoCE path between two hosts of a running lab, removed when the lab stops.

The rxe devices and their anchors (``testbed.host.rxe``: why they sit in the initial
namespace) are outside the lab's nodes, so ``Lab.stop`` removes them through its stop hook,
before the nodes go; the path's own record lets ``testbed clean`` remove it after a crash.
RoCE crosses the two hosts' direct link, with its shaping, as their TCP does.
"""

from __future__ import annotations

import ipaddress
from typing import TYPE_CHECKING

from ..host.rxe import Endpoint, RocePath

if TYPE_CHECKING:
    from .lab import Lab


def roce_path(lab: Lab, src: str, dst: str) -> RocePath:
    """Soft-RoCE from ``src`` to ``dst`` over the link that joins them (``path.source.rxe``
    and ``path.destination.rxe`` are the devices the agents open with ``--rdma``)."""
    links = [li for li in lab.network.links if {li.a.node, li.b.node} == {src, dst}]
    if len(links) != 1:
        raise ValueError(f"no single link joins {src} and {dst} in topology "
                         f"{lab.network.name!r} ({len(links)} found)")
    ends = {end.node: end for end in (links[0].a, links[0].b)}
    if not ends[src].addrs or not ends[dst].addrs:
        raise ValueError(f"the link {src} <-> {dst} has no addresses")

    def endpoint(node: str) -> Endpoint:
        ip = ipaddress.ip_interface(ends[node].addrs[0]).ip
        return Endpoint(f"pid:{lab.pid(node)}", str(ip))

    path = RocePath(endpoint(src), endpoint(dst))
    lab.on_stop(path.down)  # registered first: a half-built path goes too
    path.up()
    return path

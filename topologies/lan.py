"""Hosts on one virtual switch (Open vSwitch or a Linux bridge): the simplest L2 segment.

    h1   h2   ...   hN
     \\   |         /
         s1  (ovs | bridge)
"""

from __future__ import annotations

from .fabric import PlanError
from .model import Interface, LinkSpec, Network


def lan(hosts: int = 2, switch: str = "bridge", bw_mbps: float | None = None,
        subnet: str = "10.0.0") -> Network:
    """``hosts`` hosts at ``<subnet>.1..N/24`` on switch ``s1`` of kind ``switch``."""
    if not isinstance(hosts, int) or not 1 <= hosts <= 250:
        raise PlanError(f"hosts must be an integer in 1..250 (got {hosts!r})")
    if switch not in ("ovs", "bridge"):
        raise PlanError(f"switch must be 'ovs' or 'bridge' (got {switch!r})")
    net = Network("lan", params={"hosts": hosts, "switch": switch, "bw_mbps": bw_mbps})
    net.add_node("s1", "switch", kind=switch)
    for i in range(1, hosts + 1):
        net.add_node(f"h{i}")
        net.add_link(Interface(f"h{i}", f"h{i}-eth0", (f"{subnet}.{i}/24",)),
                     Interface("s1", f"s1-eth{i}"), LinkSpec(bw_mbps=bw_mbps))
    return net

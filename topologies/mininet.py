"""A Mininet ``Topo`` of a :class:`~topologies.model.Network`, for plain Mininet users.

``Mininet(topo=to_mininet_topo(net), controller=None)`` builds the same nodes and links;
each node's class (:class:`PlanHost`) applies its addresses, sysctls, routes and commands when
Mininet configures it. Shaping is the caller's choice: pass ``shaper(dev, spec)`` returning the
tc commands for one interface (``testbed.Lab`` uses ``testbed.lab.shaping``); without one, links
are unshaped rather than silently mis-shaped by ``TCLink``. Function stacks in VRF mode and
gateway firewalls need ``testbed.Lab``; here stacks use policy routing.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable, Sequence
from typing import Any

from .model import LinkSpec, Network

Shaper = Callable[[str, LinkSpec], Sequence[Sequence[str]]]


def node_commands(net: Network, node: str, shaper: Shaper | None = None) -> list[list[str]]:
    """Shell-free argv lists that configure ``node`` (after its links exist)."""
    spec = net.nodes[node]
    cmds = [["ip", "link", "set", "lo", "up"],
            ["sysctl", "-qw", f"net.ipv4.ip_forward={int(spec.forwarding)}"]]
    cmds += [["sysctl", "-qw", f"{k}={v}"] for k, v in spec.sysctls]
    for link in net.links:
        for end in (link.a, link.b):
            if end.node != node:
                continue
            cmds += [["ip", "addr", "add", a, "dev", end.name] for a in end.addrs]
            cmds.append(["ip", "link", "set", end.name, "up"])
            if shaper and link.spec_from(node).shaped:
                cmds += [list(c) for c in shaper(end.name, link.spec_from(node))]
    for st in net.stacks:
        if st.node == node:
            cmds.append(["ip", "rule", "add", "from", st.ip, "lookup", str(st.table),
                         "pref", str(100 + st.table)])
    for r in net.routes:
        if r.node == node:
            cmds.append(r.command())
    cmds += [list(c) for c in net.commands.get(node, [])]
    return cmds


def to_mininet_topo(net: Network, shaper: Shaper | None = None) -> Any:
    from mininet.node import Host
    from mininet.topo import Topo

    class PlanHost(Host):  # type: ignore[misc]
        """A Mininet host that runs its plan's commands when configured."""

        def config(self, plan_cmds: Sequence[Sequence[str]] = (), **params: Any) -> Any:
            result = super().config(**params)
            for cmd in plan_cmds:
                out = self.cmd(shlex.join(cmd))
                if "rror" in out:
                    raise RuntimeError(f"{self.name}: `{' '.join(cmd)}`: {out.strip()}")
            return result

    class PlanTopo(Topo):  # type: ignore[misc]
        def build(self) -> None:
            for name in net.nodes:
                self.addHost(name, cls=PlanHost, ip=None,
                             plan_cmds=node_commands(net, name, shaper))
            for link in net.links:
                self.addLink(link.a.node, link.b.node, intfName1=link.a.name,
                             intfName2=link.b.name)

    return PlanTopo()

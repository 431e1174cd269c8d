"""Per-function routed stacks on hypervisor hosts: VRF or source-based policy routing.

Each :class:`topologies.model.FunctionStack` has its own interface, address, routing table
and default gateway. With VRF (``kind vrf``, Linux >= 4.3 with CONFIG_NET_VRF) the interface is
enslaved to a VRF device bound to the stack's table; without it, ``ip rule from <addr>`` and
``ip rule oif <dev>`` select the table. In both modes a ``from <addr>`` rule is installed, so a
process only has to bind the stack's address (``iperf3 -B``, ``ping -I <addr>``) to use the
stack's gateway, and ``tcp/udp_l3mdev_accept`` let unbound listeners serve every VRF.
Optional per-stack egress caps are HTB classes; DSCP marks are nftables rules
(``testbed.lab.firewall``).
"""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING

from topologies.model import FunctionStack, Network

from ..host.nsexec import run

if TYPE_CHECKING:
    from .lab import Lab

RULE_PREF_BASE = 100
# l3mdev_accept: listeners bound to no VRF serve every VRF. ip_nonlocal_bind: an address on a
# VRF slave is not in the local table, so bind() to it fails (EADDRNOTAVAIL) unless the socket
# is bound to the VRF device first; with it, binding the stack's address is enough in both
# modes (the ``from <addr>`` rule then selects the VRF's table).
VRF_SYSCTLS = (("net.ipv4.tcp_l3mdev_accept", "1"), ("net.ipv4.udp_l3mdev_accept", "1"),
               ("net.ipv4.ip_nonlocal_bind", "1"))


def vrf_available(pid: int | None) -> bool:
    """Can a VRF device be created in the namespace of ``pid``? (Tries, then removes it.)"""
    probe = run(["ip", "link", "add", "tbvrfprobe", "type", "vrf", "table", "4000"], pid,
                check=False)
    if probe.returncode == 0:
        run(["ip", "link", "del", "tbvrfprobe"], pid, check=False)
        return True
    return False


def resolve_mode(mode: str, pid: int | None) -> str:
    """``auto`` -> ``vrf`` when the kernel has VRF, else ``policy``; ``vrf`` must be there."""
    if mode == "policy":
        return "policy"
    have = vrf_available(pid)
    if mode == "vrf" and not have:
        raise RuntimeError("stack_mode='vrf' but this kernel has no VRF (CONFIG_NET_VRF): use "
                           "stack_mode='policy' or 'auto', or run inside the full-kernel VM")
    return "vrf" if have else "policy"


def stack_commands(stacks: list[FunctionStack], mode: str) -> list[list[str]]:
    """Commands for one node's stacks (before its routes are installed)."""
    cmds: list[list[str]] = []
    if mode == "vrf" and stacks:
        cmds += [["sysctl", "-qw", f"{k}={v}"] for k, v in VRF_SYSCTLS]
    for st in stacks:
        pref = str(RULE_PREF_BASE + st.table)
        if mode == "vrf":
            cmds += [["ip", "link", "add", st.vrf, "type", "vrf", "table", str(st.table)],
                     ["ip", "link", "set", st.vrf, "up"],
                     ["ip", "link", "set", "dev", st.dev, "master", st.vrf]]
        else:
            cmds.append(["ip", "rule", "add", "oif", st.dev, "lookup", str(st.table),
                         "pref", pref])
        cmds.append(["ip", "rule", "add", "from", st.ip, "lookup", str(st.table), "pref", pref])
        # nothing of this stack falls through to another table
        cmds.append(["ip", "route", "replace", "unreachable", "default", "metric", "4278198272",
                     "table", str(st.table)])
    return cmds


def cap_commands(st: FunctionStack, link_mbps: float | None) -> list[list[str]]:
    """HTB on the stack's interface: one class at the cap (or the link speed if lower)."""
    if st.rate_mbps is None:
        return []
    rate = min(st.rate_mbps, link_mbps) if link_mbps else st.rate_mbps
    bits = f"{int(rate * 1e6)}bit"
    return [["tc", "qdisc", "replace", "dev", st.dev, "root", "handle", "1:", "htb",
             "default", "10"],
            ["tc", "class", "add", "dev", st.dev, "parent", "1:", "classid", "1:10", "htb",
             "rate", bits, "ceil", bits]]


def setup_stacks(lab: Lab) -> str | None:
    """Create every node's stacks; returns the mode in use (None without stacks)."""
    net: Network = lab.network
    if not net.stacks:
        return None
    mode = resolve_mode(net.stack_mode, lab.pid(net.stacks[0].node))
    by_node: dict[str, list[FunctionStack]] = {}
    for st in net.stacks:
        by_node.setdefault(st.node, []).append(st)
    for node, stacks in by_node.items():
        cmds = stack_commands(stacks, mode)
        if mode == "vrf":
            cmds += main_table_leaks(net, node, stacks)
        lab.run_many(node, cmds)
    return mode


def main_table_leaks(net: Network, node: str, stacks: list[FunctionStack]) -> list[list[str]]:
    """VRF mode: the subnet of the stack that the main table's default route uses.

    Enslaving moves a stack's connected route into its VRF table; the node's main-table
    default (for processes bound to no stack, the management stack in the builders) needs
    that subnet in the main table to reach its gateway, as in policy mode.
    """
    gateways = {hop for r in net.routes if r.node == node and r.table is None for hop in r.via}
    return [["ip", "route", "replace", st.subnet, "dev", st.dev]
            for st in stacks if st.gateway in gateways]


def cap_function(lab: Lab, function: str, mbps: float) -> None:
    """Cap every ``function`` stack of a running lab at ``mbps`` (HTB, as if the topology had
    asked for it from the start)."""
    lab.network.stacks = [replace(st, rate_mbps=mbps) if st.function == function else st
                          for st in lab.network.stacks]
    apply_caps(lab, function)


def apply_caps(lab: Lab, function: str | None = None) -> None:
    """Rate caps (HTB) of the stacks; they replace a plain link shaper on that interface."""
    for st in lab.network.stacks:
        if function is not None and st.function != function:
            continue
        link = next(li for li in lab.network.links
                    if (st.node, st.dev) in ((li.a.node, li.a.name), (li.b.node, li.b.name)))
        spec = link.spec_from(st.node)
        if st.rate_mbps is not None and spec.needs_netem:
            raise RuntimeError(f"{st.node}:{st.dev}: a stack rate cap on a link with netem "
                               f"impairments is not supported; cap the link's bw_mbps instead")
        cmds = cap_commands(st, spec.bw_mbps)
        if cmds:  # a different root kind (the link's tbf) cannot be "replaced": remove it
            lab.run(st.node, ["tc", "qdisc", "del", "dev", st.dev, "root"], check=False)
            lab.qdisc_plans.pop((st.node, st.dev), None)
        for cmd in cmds:
            lab.run(st.node, cmd)

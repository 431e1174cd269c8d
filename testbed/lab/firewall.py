"""nftables for gateways (NAT + firewall) and hosts (DSCP marks of function stacks).

A :class:`topologies.model.GatewayPolicy` becomes one ``ip testbed`` table in the gateway's
namespace: DNAT of the published ports, masquerade of inside networks towards the outside,
and filter chains that drop every new connection arriving on the outside interface except the
published (DNAT-ed) ones. Rules are loaded atomically with ``nft -f -``.
"""

from __future__ import annotations

import subprocess
from typing import TYPE_CHECKING

from topologies.model import FunctionStack, GatewayPolicy

from ..host.nsexec import ns_prefix

if TYPE_CHECKING:
    from .lab import Lab

TABLE = "testbed"


def gateway_ruleset(gw: GatewayPolicy) -> str:
    out = f'"{gw.outside_dev}"'
    inside = ", ".join(gw.inside_nets)
    dnat = [f"    iifname {out} ip daddr {gw.public_addr} {p.proto} dport {p.port} "
            f"dnat to {p.to_addr}:{p.to_port}" for p in gw.published]
    lines = [
        f"table ip {TABLE} {{",
        "  chain natpre {",
        "    type nat hook prerouting priority dstnat; policy accept;",
        *dnat,
        "  }",
        "  chain natpost {",
        "    type nat hook postrouting priority srcnat; policy accept;",
        *([f"    oifname {out} ip saddr {{ {inside} }} snat to {gw.public_addr}"]
          if gw.masquerade else []),
        "  }",
        "  chain filterin {",
        "    type filter hook input priority filter; policy accept;",
        "    ct state established,related accept",
        f"    iifname {out} counter drop",
        "  }",
        "  chain filterfw {",
        "    type filter hook forward priority filter; policy drop;",
        "    ct state established,related accept",
        f"    iifname {out} ct status dnat counter accept",
        f"    iifname {out} counter drop",
        f"    oifname {out} ip saddr {{ {inside} }} accept",
        "    counter",
        "  }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def dscp_ruleset(stacks: list[FunctionStack]) -> str:
    marks = [f'    oifname "{st.dev}" ip dscp set {st.dscp.lower()}' for st in stacks if st.dscp]
    if not marks:
        return ""
    return "\n".join([f"table ip {TABLE}_dscp {{", "  chain dscpmark {",
                      "    type filter hook postrouting priority mangle; policy accept;",
                      *marks, "  }", "}"]) + "\n"


def load(ruleset: str, pid: int | None) -> None:
    proc = subprocess.run(ns_prefix(pid) + ["nft", "-f", "-"], input=ruleset, text=True,
                          capture_output=True, timeout=30)
    if proc.returncode != 0:
        raise RuntimeError(f"nft -f failed in netns of pid {pid}: {proc.stderr.strip()}\n"
                           f"{ruleset}")


def apply(lab: Lab) -> None:
    """Load gateway policies and DSCP marks of the lab's network."""
    for gw in lab.network.gateways:
        load(gateway_ruleset(gw), lab.pid(gw.node))
    by_node: dict[str, list[FunctionStack]] = {}
    for st in lab.network.stacks:
        by_node.setdefault(st.node, []).append(st)
    for node, stacks in by_node.items():
        rules = dscp_ruleset(stacks)
        if rules:
            load(rules, lab.pid(node))

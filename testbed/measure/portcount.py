"""Which router a flow crossed: nftables byte counters per TCP destination port in routers.

ECMP hashes each connection onto one of several equal paths; in a spine-leaf fabric the spine
a migration's data connection took decides whom it shares its links with. Every migration of
a burst has its own destination port, so a counter per port in every spine's forward hook says
which spine carried it (the counters count what the hook sees: forwarded packets only).
"""

from __future__ import annotations

import json
import subprocess
from typing import TYPE_CHECKING

from ..host.nsexec import ns_prefix

if TYPE_CHECKING:
    from ..lab.lab import Lab

TABLE = "tbports"


def ruleset(ports: list[int]) -> str:
    """One counter per destination port, in a table of its own (replaced whole on load)."""
    rules = [f"    tcp dport {p} counter" for p in sorted(set(ports))]
    return "\n".join([f"table inet {TABLE} {{", "  chain counted {",
                      "    type filter hook forward priority -300; policy accept;", *rules,
                      "  }", "}"]) + "\n"


def parse(listing: str) -> dict[int, int]:
    """Bytes per destination port from ``nft -j list table inet tbports``."""
    out: dict[int, int] = {}
    for item in json.loads(listing or "{}").get("nftables", []):
        rule = item.get("rule")
        if not rule:
            continue
        port = count = None
        for expr in rule.get("expr", []):
            if "match" in expr and expr["match"].get("left", {}).get("payload", {}).get(
                    "field") == "dport":
                port = int(expr["match"]["right"])
            elif "counter" in expr:
                count = int(expr["counter"]["bytes"])
        if port is not None and count is not None:
            out[port] = out.get(port, 0) + count
    return out


class PortCounters:
    """Counters for ``ports`` in each of ``routers`` (lab node names) while in use."""

    def __init__(self, lab: Lab, routers: list[str], ports: list[int]) -> None:
        self.lab, self.routers, self.ports = lab, routers, ports

    def _nft(self, router: str, args: list[str], stdin: str | None = None) -> str:
        proc = subprocess.run(ns_prefix(self.lab.pid(router)) + ["nft", *args], input=stdin,
                              text=True, capture_output=True, timeout=30)
        if proc.returncode != 0:
            raise RuntimeError(f"nft {' '.join(args)} in {router}: {proc.stderr.strip()}")
        return proc.stdout

    def start(self) -> PortCounters:
        for r in self.routers:
            self._nft(r, ["-f", "-"], ruleset(self.ports))
        return self

    def read(self) -> dict[str, dict[int, int]]:
        """Bytes so far per router and port."""
        return {r: parse(self._nft(r, ["-j", "list", "table", "inet", TABLE]))
                for r in self.routers}

    def stop(self) -> None:
        for r in self.routers:
            subprocess.run(ns_prefix(self.lab.pid(r)) + ["nft", "delete", "table", "inet",
                                                         TABLE], capture_output=True)


def carrier(before: dict[str, dict[int, int]], after: dict[str, dict[int, int]],
            port: int) -> tuple[str | None, dict[str, int]]:
    """The router that carried most of ``port``'s bytes between two readings (None: none
    did), and every router's share."""
    seen = {r: after[r].get(port, 0) - before.get(r, {}).get(port, 0) for r in after}
    best = max(seen, key=lambda r: seen[r], default=None)
    return (best if best is not None and seen[best] > 0 else None), seen

"""Two hosts joined by one shaped link: the smallest topology, used by the smoke experiment.

    h1 ---- (bw, delay each way, jitter, loss; bottleneck queue) ---- h2
"""

from __future__ import annotations

from .model import Interface, LinkSpec, Network


def pair(delay_ms: float = 25.0, bw_mbps: float | None = 100.0, jitter_ms: float = 0.0,
         loss_pct: float = 0.0, subnet: str = "10.0.0", queue_pkts: int | None = None) -> Network:
    """``delay_ms`` is one-way, applied in both directions (RTT = 2 x delay_ms);
    ``queue_pkts`` the bottleneck's queue (default: one BDP, at least 64 packets)."""
    net = Network("pair", params={"delay_ms": delay_ms, "bw_mbps": bw_mbps,
                                  "jitter_ms": jitter_ms, "loss_pct": loss_pct,
                                  "queue_pkts": queue_pkts})
    net.add_node("h1")
    net.add_node("h2")
    spec = LinkSpec(bw_mbps=bw_mbps, delay_ms=delay_ms, jitter_ms=jitter_ms, loss_pct=loss_pct,
                    queue_pkts=queue_pkts)
    net.add_link(Interface("h1", "h1-eth0", (f"{subnet}.1/24",)),
                 Interface("h2", "h2-eth0", (f"{subnet}.2/24",)), spec)
    return net

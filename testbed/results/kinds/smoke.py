"""smoke in the results: RTT and rate of one link against its configuration."""

from __future__ import annotations

from ..documents import Document
from ..figures import fmt


def section(doc: Document) -> list[str]:
    lines = ["| configured RTT ms | RTT p50 ms | configured Mbit/s | iperf3 Mbit/s | "
             "queue drops |", "|---|---|---|---|---|"]
    for v in doc.variants:
        s = v.summary
        lines.append(f"| {fmt(s.get('configured_rtt_ms'))} | {fmt(s.get('rtt_p50_ms'), '.2f')}"
                     f" | {fmt(s.get('configured_bw_mbps'))} | {fmt(s.get('iperf3_mbps'))} | "
                     f"{fmt(s.get('qdisc_drops'), 'd')} |")
    return lines

"""The smoke experiment: two hosts, one shaped link, RTT and iperf3 vs what was configured."""

from __future__ import annotations

import time
from typing import Any

from ...lab.lab import Lab
from ...measure.path import iperf3, ping
from ..spec import SmokeSpec
from ..topology import direct_link, network_of
from . import Progress


def run(spec: SmokeSpec, progress: Progress) -> dict[str, Any]:
    network = network_of(spec)  # pair from [link], or the [topology] chosen
    link = direct_link(network, "h1", "h2")
    asked = link.spec_from("h1") if link else None  # what h1 -> h2 was configured as
    rtt_asked = link.a_to_b.delay_ms + link.b_to_a.delay_ms if link else None
    out: dict[str, Any] = {"topology": network.describe()}
    t0 = time.monotonic()
    with Lab(network) as lab:
        progress(f"{spec.name}: lab up ({len(network.nodes)} nodes) in "
                 f"{time.monotonic() - t0:.1f} s; pinging")
        dst = network.address("h2")
        lab.run("h1", ["ping", "-c", "2", "-i", "0.2", "-W", "3", dst], check=False, timeout=30)
        rtt = ping(lab, "h1", dst, count=spec.measure.ping_count)
        progress(f"{spec.name}: RTT p50 {rtt.get('rtt_p50_ms')} ms; iperf3 "
                 f"{spec.measure.iperf_seconds:g} s")
        tput = iperf3(lab, "h1", "h2", dst, spec.measure.iperf_seconds,
                      spec.measure.iperf_streams)
        drops = lab.emulator_drops()
        out.update(links=lab.links_readback(), ping=rtt, iperf3=tput,
                   qdisc_drops=drops)
    out["summary"] = {
        "configured_rtt_ms": rtt_asked, "configured_bw_mbps": asked.bw_mbps if asked else None,
        "rtt_p50_ms": rtt.get("rtt_p50_ms"), "loss_pct": rtt.get("loss_pct"),
        "iperf3_mbps": tput["iperf3_mbps"], "qdisc_drops": sum(drops.values()),
    }
    progress(f"{spec.name}: RTT p50 {rtt.get('rtt_p50_ms')} ms (configured {rtt_asked}),"
             f" iperf3 {tput['iperf3_mbps']} Mbit/s (configured "
             f"{asked.bw_mbps if asked else None}), "
             f"bottleneck-queue drops {sum(drops.values())}")
    return out

"""The smoke experiment: two hosts, one shaped link, RTT and iperf3 vs what was configured."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from topologies.pair import pair

from . import environment, results, shaping
from .lab import Lab
from .spec import SmokeSpec


def run(spec: SmokeSpec, out_dir: Path, progress: Any = print) -> dict[str, Any]:
    """Build the pair topology, measure, tear down, write ``<name>.json``/``.csv``."""
    p = spec.link
    network = pair(delay_ms=p.delay_ms, bw_mbps=p.bw_mbps, jitter_ms=p.jitter_ms,
                   loss_pct=p.loss_pct)
    doc: dict[str, Any] = {"spec": spec.model_dump(), "environment": environment.describe(),
                           "topology": network.describe(), "status": "running"}
    t0 = time.monotonic()
    try:
        with Lab(network) as lab:
            progress(f"{spec.name}: lab up ({len(network.nodes)} nodes) in "
                     f"{time.monotonic() - t0:.1f} s; pinging")
            dst = network.address("h2")
            rtt = _ping(lab, dst, spec)
            progress(f"{spec.name}: RTT p50 {rtt.get('rtt_p50_ms')} ms; iperf3 "
                     f"{spec.measure.iperf_seconds:g} s")
            from .measure import iperf3

            tput = iperf3(lab, "h1", "h2", dst, spec.measure.iperf_seconds,
                          spec.measure.iperf_streams)
            drops = {f"{n}:{d}": shaping.qdisc_drops(d, lab.pid(n)) for n, d in lab.qdisc_plans}
            doc.update(links=lab.links_readback(), ping=rtt, iperf3=tput,
                       emulator_qdisc_drops=drops)
        doc["status"] = "completed"
    except BaseException as exc:
        doc["status"] = f"failed: {type(exc).__name__}: {exc}"
        raise
    finally:
        doc["duration_s"] = round(time.monotonic() - t0, 3)
        configured_rtt = 2 * p.delay_ms
        row = {
            "experiment": spec.name, "status": doc["status"],
            "configured_rtt_ms": configured_rtt, "configured_bw_mbps": p.bw_mbps,
            "rtt_p50_ms": doc.get("ping", {}).get("rtt_p50_ms"),
            "loss_pct": doc.get("ping", {}).get("loss_pct"),
            "iperf3_mbps": doc.get("iperf3", {}).get("iperf3_mbps"),
            "emulator_drops": sum(doc.get("emulator_qdisc_drops", {}).values()),
        }
        doc["summary"] = row
        results.write(out_dir, spec.name, doc, [row])
    return doc


def _ping(lab: Lab, dst: str, spec: SmokeSpec) -> dict[str, Any]:
    from .measure import ping

    lab.run("h1", ["ping", "-c", "2", "-i", "0.2", "-W", "3", dst], check=False, timeout=30)
    return ping(lab, "h1", dst, count=spec.measure.ping_count)

"""How faithful the impairment appliance is: RTT and iperf3 through it, against the asked values.

Per RTT (default 1, 10, 50, 100, 150, 200 ms) a two-site WAN whose link passes through the
appliance at ``--bw`` Mbit/s: the calibration (the appliance's own RTT, the delays applied),
ping RTT (median of 50), iperf3 (BDP window; its steady state, slow start left out) /
configured, retransmits and
the emulator's own drops (netem queues in the guest, the taps' rings); then the highest rate
it carries at 150 ms (``--ceiling``). Run as root on a kernel without netem (or with
TESTBED_APPLIANCE=always):

    python benchmarks/appliance_bench.py [--bw 250] [--rtts 1,10,50,100,150,200] [--ceiling]
"""

from __future__ import annotations

import argparse
import json
import time

from testbed.host import appliance
from testbed.lab import Lab
from testbed.measure.path import iperf3, ping
from topologies.wan import wan


def measure(rtt: float, bw: float, seconds: float) -> dict[str, object]:
    net = wan(sites=2, hosts_per_leaf=1, rtt_ms=rtt, bw_mbps=bw)
    with Lab(net) as lab:
        dst = net.address("b-h1")
        got = ping(lab, "a-h1", dst, count=50, interval_s=0.02)
        window = int(2 * bw * 1e6 / 8 * max(rtt, 1) / 1000) + 65536
        tput = iperf3(lab, "a-h1", "b-h1", dst, seconds=seconds, window=str(window),
                      omit_s=2)
        drops = lab.emulator_drops()
        cal = lab.appliance_links[0].calibration
    return {"rtt_asked_ms": rtt, "rtt_p50_ms": got["rtt_p50_ms"],
            "rtt_error_pct": round(100 * (got["rtt_p50_ms"] - rtt) / rtt, 2),
            "appliance_rtt_ms": cal["appliance_rtt_ms"], "below_floor": cal["below_floor"],
            "applied_delay_ms": cal["applied_delay_ms"], "bw_mbps": bw,
            "iperf3_mbps": tput["steady_mbps"], "iperf3_cold_mbps": tput["iperf3_mbps"],
            "iperf3_over_configured": round(tput["steady_mbps"] / bw, 3),
            "retransmits": tput["retransmits"],
            "appliance_drops": sum(v for k, v in drops.items() if k.startswith("appliance")),
            "bottleneck_drops": sum(v for k, v in drops.items()
                                    if not k.startswith("appliance"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bw", type=float, default=250.0)
    ap.add_argument("--rtts", default="1,10,50,100,150,200")
    ap.add_argument("--seconds", type=float, default=6.0)
    ap.add_argument("--ceiling", action="store_true",
                    help="also find the highest rate carried at 150 ms (500-1000 Mbit/s)")
    args = ap.parse_args()
    t0 = time.monotonic()
    appliance.shared()
    boot = time.monotonic() - t0
    rows = [measure(float(r), args.bw, args.seconds) for r in args.rtts.split(",")]
    print(f"appliance boot {boot:.0f} s (TCG, 1 vCPU)")
    print("| RTT asked ms | appliance's own RTT ms | RTT p50 ms | error % | iperf3 Mbit/s | "
          "iperf3 / configured | retransmits | appliance drops | bottleneck drops |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        floor = " (below the appliance's own)" if r["below_floor"] else ""
        print(f"| {r['rtt_asked_ms']:g}{floor} | {r['appliance_rtt_ms']:.2f} | "
              f"{r['rtt_p50_ms']} | {r['rtt_error_pct']:+.1f} | {r['iperf3_mbps']:.1f} | "
              f"{r['iperf3_over_configured']:.3f} | {r['retransmits']} | "
              f"{r['appliance_drops']} | {r['bottleneck_drops']} |")
    if args.ceiling:
        print("\nhighest rate carried at 150 ms RTT:")
        for bw in (500.0, 750.0, 1000.0):
            r = measure(150.0, bw, args.seconds)
            print(f"  configured {bw:g} Mbit/s: iperf3 {r['iperf3_mbps']:.1f} "
                  f"({r['iperf3_over_configured']:.2f}), retransmits {r['retransmits']}, "
                  f"appliance drops {r['appliance_drops']}")
            rows.append(r)
    print(json.dumps(rows))
    appliance.shutdown()


if __name__ == "__main__":
    main()

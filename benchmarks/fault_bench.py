"""Fault-injection benchmark of the agents' switchover: every case of the fault suite
(tests/integration/fault_harness.py) once, or ``--repeat N`` times, and the table: faults
injected, survived, copies running at the end, data lost (goal: all survived, always exactly
one copy, 0 lost). Also what verifying the paused source before the decision adds to the
downtime, for built-in guests of a few sizes. Root, real namespaces (nftables, veth, tbf).

    python benchmarks/fault_bench.py [--repeat N] [--only NAME,...] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.integration.fault_harness import (  # noqa: E402
    CASES,
    PY,
    Net,
    kill,
    run_case,
    table,
)


def verify_cost(size: str, verify: str, net: Net | None = None) -> dict:
    """One migration of a built-in guest (loopback, or across ``net``'s tbf veth) with the
    source check before the decision on (auto) or off: downtime and the check's time."""
    host = net.dst if net else "127.0.0.1"
    pre_d = ["ip", "netns", "exec", net.b] if net else []
    pre_s = ["ip", "netns", "exec", net.a] if net else []
    dest = subprocess.Popen([*pre_d, *PY, "destination", "--listen", f"{host}:0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(dest.stdout.readline())["listening"][1]
        out = subprocess.run([*pre_s, *PY, "source", "--workload", size, "--to",
                              f"{host}:{port}", "--preflight", "off", "--json",
                              "--probe-interval-ms", "0", "--verify-source", verify],
                             capture_output=True, text=True, timeout=180)
        res = json.loads(out.stdout)
    finally:
        dest.kill()
        dest.wait()
    for pid in (res.get("destination_pid"), res.get("source_pid")):
        kill(pid)  # whichever copy runs: the benchmark leaves none behind
    return {"size": size, "path": "tbf 1 Gbit/s veth" if net else "loopback",
            "verify": verify, "downtime_ms": res.get("downtime_ms"),
            "source_verify_ms": res.get("source_verify_ms"), "outcome": res.get("outcome")}


def verify_costs() -> list[dict]:
    out = []
    net = Net(rate_mbit=1000)
    try:
        for size in ("64M", "256M"):
            for where in (None, net):
                for verify in ("auto", "off"):
                    out.append(verify_cost(size, verify, where))
    finally:
        net.close()
    return out


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=1)
    ap.add_argument("--only", help="comma-separated case names")
    ap.add_argument("--json", metavar="OUT")
    ap.add_argument("--no-verify-cost", action="store_true")
    args = ap.parse_args()
    cases = [c for c in CASES if not args.only or c.name in args.only.split(",")]
    verdicts = []
    t0 = time.monotonic()
    for _ in range(args.repeat):
        for case in cases:
            v = run_case(case)
            verdicts.append(v)
            print(f"{case.name}: {v.outcome or 'agent died; guard'}, copies {v.copies}, "
                  f"{'survived' if v.survived else 'NOT survived'} ({v.seconds} s)",
                  file=sys.stderr, flush=True)
    print(table(verdicts))
    print(f"wall time {time.monotonic() - t0:.0f} s")
    costs = [] if args.no_verify_cost else verify_costs()
    if costs:
        print("\n| guest | path | source check | downtime ms | source check ms |")
        print("|---|---|---|---|---|")
        for c in costs:
            print(f"| {c['size']} | {c['path']} | {c['verify']} | {c['downtime_ms']} | "
                  f"{c['source_verify_ms']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "cases": [{"name": v.case.name, "fault": v.case.fault, "outcome": v.outcome,
                       "copies": v.copies, "survived": v.survived, "lost": v.lost,
                       "seconds": v.seconds} for v in verdicts], "verify_cost": costs}))
    return 0 if all(v.survived for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())

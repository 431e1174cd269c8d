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

from tests.integration.fault_harness import CASES, PY, kill, run_case, table  # noqa: E402


def verify_cost(size: str) -> dict:
    """One loopback migration of a built-in guest: the source check's share of downtime."""
    dest = subprocess.Popen([*PY, "destination", "--listen", "127.0.0.1:0"],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(dest.stdout.readline())["listening"][1]
        out = subprocess.run([*PY, "source", "--workload", size, "--to", f"127.0.0.1:{port}",
                              "--preflight", "off", "--json"], capture_output=True, text=True,
                             timeout=120)
        res = json.loads(out.stdout)
    finally:
        dest.kill()
        dest.wait()
    for pid in (res.get("destination_pid"), res.get("source_pid")):
        kill(pid)  # whichever copy runs: the benchmark leaves none behind
    return {"size": size, "downtime_ms": res.get("downtime_ms"),
            "source_verify_ms": res.get("source_verify_ms"),
            "verify_ms_destination": res.get("verify_ms"), "outcome": res.get("outcome")}


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
    costs = [] if args.no_verify_cost else [verify_cost(s) for s in ("64M", "256M")]
    if costs:
        print("\n| guest | downtime ms | of which source check ms | destination check ms |")
        print("|---|---|---|---|")
        for c in costs:
            print(f"| {c['size']} | {c['downtime_ms']} | {c['source_verify_ms']} | "
                  f"{c['verify_ms_destination']} |")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "cases": [{"name": v.case.name, "fault": v.case.fault, "outcome": v.outcome,
                       "copies": v.copies, "survived": v.survived, "lost": v.lost,
                       "seconds": v.seconds} for v in verdicts], "verify_cost": costs}))
    return 0 if all(v.survived for v in verdicts) else 1


if __name__ == "__main__":
    sys.exit(main())

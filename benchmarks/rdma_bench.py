"""TCP vs RDMA (Soft-RoCE) migration on the same path, through the rdma experiment kind: goodput
against its own baseline (iperf3 for TCP, perftest's ib_write_bw for RDMA), CPU seconds per GB
(user and system) at each end and the whole machine's system and softirq time, downtime and
rounds, at several RTTs and loss rates; then issue 18's targets.

    python benchmarks/rdma_bench.py [--size 16M] [--rate 100] [--rtts 0,10,50]
                                    [--losses 0,0.1,1] [--secs 3] [--streams 1] [--out DIR]

The arguments become an rdma spec (``testbed.run.spec.RdmaSpec``, validated here), written to
``DIR/rdma-bench.toml`` and run by ``testbed run`` (one code path with the kind: a pair lab per
point, its rxe path removed with it; on a kernel without rdma_rxe the whole run goes to the
full-kernel VM, where under TCG every CPU figure is the emulator's). The results document,
report.md and plot land in DIR; the table and the verdicts are printed from the document.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.__main__ import parse_size  # noqa: E402
from testbed.results.documents import DocumentError, load  # noqa: E402
from testbed.results.kinds import rdma as rdma_results  # noqa: E402
from testbed.run import spec as spec_mod  # noqa: E402

NAME = "rdma-bench"


def spec_data(args: argparse.Namespace) -> dict[str, Any]:
    """The rdma spec the arguments ask for (a TOML-shaped dict)."""
    return {"name": NAME, "kind": "rdma",
            "description": f"rdma_bench: {args.size} guest, tbf {args.rate:g} Mbit/s",
            "rtt_ms": [float(x) for x in args.rtts.split(",")],
            "loss_pct": [float(x) for x in args.losses.split(",")],
            "bw_mbps": args.rate, "baseline_seconds": args.secs,
            "migration": {"workload_mib": max(1, parse_size(args.size) >> 20),
                          "dirty_rate_mbs": args.dirty_rate, "streams": args.streams,
                          "timeout_s": args.timeout}}


def to_toml(data: dict[str, Any]) -> str:
    """Flat keys, then one level of tables; JSON's scalars and flat lists are TOML's too."""
    lines = [f"{k} = {json.dumps(v)}" for k, v in data.items() if not isinstance(v, dict)]
    for table, body in ((k, v) for k, v in data.items() if isinstance(v, dict)):
        lines += ["", f"[{table}]", *(f"{k} = {json.dumps(v)}" for k, v in body.items())]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--size", default="16M", help="the guest's memory (e.g. 16M)")
    ap.add_argument("--rate", type=float, default=100.0, help="the path's tbf rate, Mbit/s")
    ap.add_argument("--rtts", default="0,10,50", help="RTTs in ms, comma-separated")
    ap.add_argument("--losses", default="0,0.1,1", help="loss %% each way, comma-separated")
    ap.add_argument("--secs", type=float, default=3.0, help="seconds per baseline")
    ap.add_argument("--streams", type=int, default=1)
    ap.add_argument("--dirty-rate", type=float, default=2.0, help="the guest's MB/s")
    ap.add_argument("--timeout", type=float, default=600.0, help="per migration, s")
    ap.add_argument("--out", type=Path, default=ROOT / "results" / NAME)
    args = ap.parse_args()
    data = spec_data(args)
    text = to_toml(data)
    try:
        spec_mod.parse(data, f"{NAME}.toml", text)
    except (spec_mod.SpecError, ValueError) as exc:
        print(f"rdma_bench: {exc}", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    spec_file = args.out / f"{NAME}.toml"
    spec_file.write_text(text)
    t0 = time.monotonic()
    rc = subprocess.call([sys.executable, "-m", "testbed", "run", str(spec_file),
                          "--out", str(args.out)], cwd=ROOT)
    try:
        doc = next(d for d in load(args.out) if d.name == NAME)
    except (DocumentError, StopIteration):
        print(f"rdma_bench: no results document in {args.out} (testbed run exit {rc})",
              file=sys.stderr)
        return rc or 1
    env = doc.environment
    print(f"\n# TCP vs RDMA migration: kernel {env.get('kernel')}, "
          f"{(doc.placement or {}).get('where', env.get('mode'))}, {env.get('cpus')} CPUs, "
          f"{args.size} guest, tbf {args.rate:g} Mbit/s; {time.monotonic() - t0:.0f} s "
          f"(status {doc.status})\n")
    print("\n".join(rdma_results.section(doc)))
    print(f"\nresults: {args.out} (report.md, {NAME}.json, the plot)")
    return rc


if __name__ == "__main__":
    sys.exit(main())

"""What encryption costs: plaintext vs TLS 1.3 migrations on the same path, in the same run.

    python benchmarks/agents_tls_bench.py [--size 384M] [--rate 1gbit] [--streams 1,4] [--reps 2]

Two namespaces this script creates (``tbt-bench-*``, always removed, made by
``agents_bench.veth_pair``) joined by a veth with tbf
at ``--rate`` on both ends. Plaintext and encrypted migrations of the built-in workload
alternate (so drift in the machine hits both alike); for each: goodput (bytes on the wire over
the migration time) and CPU seconds per GB on the wire, source and destination processes
(``wait4`` rusage; the guest is not counted: ``--no-resume`` leaves it at the source).
Prints a table, then one JSON document.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import uuid

from agents_bench import B_IP, sh, veth_pair  # same directory: run as a script

PY = [sys.executable, "-m", "agents"]
IDENTITY = "bench.destination"


def cpu_of(pid: int) -> float:
    """Reap ``pid`` and return its user+system CPU seconds."""
    _, _, ru = os.wait4(pid, 0)
    return ru.ru_utime + ru.ru_stime


def one(a: str, b: str, size: str, streams: int, mode: str, tmp: str) -> dict:
    creds = os.path.join(tmp, uuid.uuid4().hex[:8])
    sh(*PY, "credentials", "--out", creds, "--identity", IDENTITY, "--ip", B_IP)
    dest = subprocess.Popen(["ip", "netns", "exec", b, *PY, "destination", "--listen",
                             f"{B_IP}:0", "--no-resume", "--encryption", mode,
                             "--credentials", creds], stdout=subprocess.PIPE, text=True)
    src = None
    try:
        port = json.loads(dest.stdout.readline())["listening"][1]
        src = subprocess.Popen(["ip", "netns", "exec", a, *PY, "source", "--workload", size,
                                "--mix", "text=50,random=50", "--dirty-rate", "2",
                                "--streams", str(streams), "--to", f"{B_IP}:{port}",
                                "--encryption", mode, "--credentials", creds,
                                "--preflight", "off", "--json"],
                               stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        out = src.stdout.read()
        src_cpu = cpu_of(src.pid)
        dest.stdout.read()
        dst_cpu = cpu_of(dest.pid)
    finally:
        for p in (src, dest):
            if p is not None and p.returncode is None:
                with contextlib.suppress(ProcessLookupError, ChildProcessError):
                    p.kill()
                    os.waitpid(p.pid, 0)
    res = json.loads(out)
    if res.get("source_pid"):
        with contextlib.suppress(ProcessLookupError):
            os.kill(res["source_pid"], signal.SIGKILL)
    if not res["completed"]:
        raise SystemExit(f"{mode} migration failed: {res['error']}")
    gb = res["bytes_on_wire"] / 1e9
    return {"mode": mode, "streams": streams, "encrypted": res["encrypted"],
            "cipher": res["cipher"], "goodput_mbps": res["goodput_mbps"],
            "bytes_on_wire": res["bytes_on_wire"], "migration_time_s": res["migration_time_s"],
            "src_cpu_s": round(src_cpu, 3), "dst_cpu_s": round(dst_cpu, 3),
            "cpu_s_per_gb": round((src_cpu + dst_cpu) / gb, 3),
            "src_cpu_s_per_gb": round(src_cpu / gb, 3), "dst_cpu_s_per_gb": round(dst_cpu / gb, 3)}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="384M")
    ap.add_argument("--rate", default="1gbit")
    ap.add_argument("--streams", default="1,4")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    runs: list[dict] = []
    with veth_pair(args.rate) as (a, b), tempfile.TemporaryDirectory() as tmp:
        for streams in (int(s) for s in args.streams.split(",")):
            for _ in range(args.reps):
                for mode in ("disabled", "required"):  # alternate: same path, same run
                    runs.append(one(a, b, args.size, streams, mode, tmp))
    summary = []
    print(f"path: veth + tbf {args.rate}, workload {args.size}, {os.cpu_count()} cores")
    print(f"{'streams':>7} {'mode':>9} {'goodput Mbit/s':>15} {'CPU s/GB':>9} "
          f"{'src':>6} {'dst':>6}")
    for streams in sorted({r["streams"] for r in runs}):
        row = {"streams": streams}
        for mode in ("disabled", "required"):
            rs = [r for r in runs if r["streams"] == streams and r["mode"] == mode]
            g = statistics.median(r["goodput_mbps"] for r in rs)
            c = statistics.median(r["cpu_s_per_gb"] for r in rs)
            cs = statistics.median(r["src_cpu_s_per_gb"] for r in rs)
            cd = statistics.median(r["dst_cpu_s_per_gb"] for r in rs)
            row[mode] = {"goodput_mbps": g, "cpu_s_per_gb": c}
            print(f"{streams:>7} {'tls1.3' if mode == 'required' else 'plain':>9} {g:>15.1f} "
                  f"{c:>9.2f} {cs:>6.2f} {cd:>6.2f}")
        row["ratio"] = round(row["required"]["goodput_mbps"] / row["disabled"]["goodput_mbps"],
                             3)
        print(f"{streams:>7} {'ratio':>9} {row['ratio']:>15.3f}  (target >= 0.9)")
        summary.append(row)
    print(json.dumps({"rate": args.rate, "size": args.size, "summary": summary, "runs": runs}))
    return 0 if all(r["ratio"] >= 0.9 for r in summary) else 1


if __name__ == "__main__":
    sys.exit(main())

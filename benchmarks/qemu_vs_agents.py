"""QEMU's own live migration next to the agents', on the same path (root; prints JSON + a table).

    python benchmarks/qemu_vs_agents.py [--rate 250mbit] [--rtt-ms 0] [--size 64] \
        [--dirty-rate 8] [--reps 2]

Two namespaces this script creates (``tbt-qva-*``, always removed) joined by a veth with a
tbf of ``--rate`` on each end (and, with ``--rtt-ms`` > 0, netem delay: only on a kernel
that has netem). For each repetition, one right after the other on the same path: iperf3 -J,
an agents migration of a ``--size`` MiB built-in workload (random pages, like the QEMU
guest's), a QEMU migration of a TCG guest whose dirtier holds ``--size`` MiB of random pages
in 192 MiB of RAM (hot set: 10 % of it, the agents' default hot fraction). Same dirty rate,
both against the same 300 ms downtime limit. The medians of throughput / iperf3 and downtime
end the output. Under TCG the emulated CPU, not the network, shapes the guest's dirtying.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agents.qemu.command import Guest, Options  # noqa: E402
from agents.qemu.driver import Plan, local_launcher, migrate  # noqa: E402

PY = [sys.executable, "-m", "agents"]
A_IP, B_IP = "10.79.0.1", "10.79.0.2"
LIMIT_MS = 300


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


@contextlib.contextmanager
def path(rate: str, rtt_ms: float):
    tag = uuid.uuid4().hex[:5]
    a, b = f"tbt-qva-a{tag}", f"tbt-qva-b{tag}"
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        sh("ip", "link", "add", "qa" + tag, "netns", a, "type", "veth", "peer", "name",
           "qb" + tag, "netns", b)
        for ns, dev, ip in ((a, "qa" + tag, A_IP), (b, "qb" + tag, B_IP)):
            sh("ip", "-n", ns, "addr", "add", ip + "/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            tc = ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev]
            if rtt_ms > 0:
                proc = sh(*tc, "root", "handle", "1:", "netem", "delay", f"{rtt_ms / 2}ms",
                          "limit", "100000", check=False)
                if proc.returncode != 0:
                    raise SystemExit(f"--rtt-ms needs netem, which this kernel lacks: "
                                     f"{proc.stderr.strip()}")
                sh(*tc, "parent", "1:1", "handle", "10:", "tbf", "rate", rate, "burst", "64kb",
                   "latency", f"{max(20, rtt_ms)}ms")
            else:
                sh(*tc, "root", "tbf", "rate", rate, "burst", "64kb", "latency", "20ms")
        yield a, b
    finally:
        for ns in (a, b):
            sh("ip", "netns", "del", ns, check=False)


def iperf3(a: str, b: str, seconds: int = 5) -> float:
    server = subprocess.Popen(["ip", "netns", "exec", b, "iperf3", "-s", "-1"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(0.5)
        out = sh("ip", "netns", "exec", a, "iperf3", "-c", B_IP, "-t", str(seconds), "-J")
        return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
    finally:
        server.kill()
        server.wait()


def agents(a: str, b: str, size: int, rate: float) -> dict:
    dest = subprocess.Popen(["ip", "netns", "exec", b, *PY, "destination", "--listen",
                             f"{B_IP}:0", "--resume-host", B_IP], stdout=subprocess.PIPE,
                            text=True)
    try:
        port = json.loads(dest.stdout.readline())["listening"][1]
        out = sh("ip", "netns", "exec", a, *PY, "source", "--workload", f"{size}M",
                 "--mix", "random=100", "--dirty-rate", str(rate), "--downtime-ms",
                 str(LIMIT_MS), "--to", f"{B_IP}:{port}", "--json", check=False)
        res = json.loads(out.stdout)
    finally:
        dest.kill()
        dest.wait()
    for pid in (res.get("destination_pid"), res.get("source_pid")):
        if pid:
            sh("kill", "-9", str(pid), check=False)
    return res


def qemu(a: str, b: str, size: int, rate: float) -> dict:
    guest = Guest(ram_mib=max(192, size + 64), dirty_mib=size, dirty_rate_mbs=rate,
                  hot_mib=max(1, size // 10))
    with tempfile.TemporaryDirectory(prefix="tb-qva-") as tmp:
        plan = Plan(B_IP, Path(tmp), 4444, guest, Options(downtime_limit_ms=LIMIT_MS))
        return migrate(plan, local_launcher({"source": f"/run/netns/{a}",
                                             "destination": f"/run/netns/{b}"}))


FIELDS = ("completed", "integrity_ok", "migration_time_s", "downtime_ms", "goodput_mbps",
          "bytes_on_wire", "image_bytes", "rounds", "error")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rate", default="250mbit")
    ap.add_argument("--rtt-ms", type=float, default=0.0)
    ap.add_argument("--size", type=int, default=64, help="MiB of dirtied memory")
    ap.add_argument("--dirty-rate", type=float, default=8.0, help="MB/s")
    ap.add_argument("--reps", type=int, default=2)
    args = ap.parse_args()
    runs = []
    with path(args.rate, args.rtt_ms) as (a, b):
        for _ in range(args.reps):
            ip3 = iperf3(a, b)
            row = {"iperf3_mbps": round(ip3, 1)}
            for name, fn in (("agents", agents), ("qemu", qemu)):
                res = fn(a, b, args.size, args.dirty_rate)
                row[name] = {k: res.get(k) for k in FIELDS} | {
                    "throughput_over_iperf3": round((res.get("goodput_mbps") or 0) / ip3, 3)}
                if name == "qemu":
                    row[name] |= {k: res.get(k) for k in ("setup_time_ms", "dirty_sync_count",
                                                          "pages_per_second", "accel")}
            runs.append(row)
            print(json.dumps(row), flush=True)
    print(f"\n{args.rate}, RTT {args.rtt_ms:g} ms, {args.size} MiB dirtied at "
          f"{args.dirty_rate:g} MB/s, downtime limit {LIMIT_MS} ms, medians of {args.reps}:")
    print("| | throughput / iperf3 | goodput Mbit/s | downtime ms | time s | wire MB | ok |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in ("agents", "qemu"):
        def med(key: str, rows=runs, who=name) -> float:
            return round(statistics.median((r[who][key] or 0) for r in rows), 3)
        ok = sum(bool(r[name]["completed"] and r[name]["integrity_ok"]) for r in runs)
        print(f"| {name} | {med('throughput_over_iperf3')} | {med('goodput_mbps')} | "
              f"{med('downtime_ms')} | {med('migration_time_s')} | "
              f"{med('bytes_on_wire') / 1e6:.1f} | {ok}/{len(runs)} |")
    print(f"iperf3 median: {statistics.median(r['iperf3_mbps'] for r in runs)} Mbit/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

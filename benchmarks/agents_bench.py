"""Migration figures on a veth between two namespaces this script creates (root; prints JSON).

    python benchmarks/agents_bench.py [--size 1G] [--rates 1gbit,10gbit,unshaped] [--reps 3]

For each path (tbf-shaped or unshaped): ``--reps`` pairs of an iperf3 -J run and a migration
of the built-in workload on the same path, one right after the other (the machine's drift
hits both alike); the medians of goodput / iperf3 (the whole migration: bytes on the wire
over the time from the start of round 0 to the destination's ACK, downtime included) and of
page-stream rate / iperf3 (round 0's rate). Then one migration each with zstd, 2 and 4
streams and a 64M guest, bytes on the wire divided by the image size; and a foreign
``stress-ng --vm 1 --vm-bytes 256M`` migrated with its digest verified. Namespaces are named
``tbt-bench-*`` and always removed. Ends with a table of the medians.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import subprocess
import sys
import time
import uuid
from pathlib import Path

PY = [sys.executable, "-m", "agents"]
A_IP, B_IP = "10.78.0.1", "10.78.0.2"


def sh(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=check, capture_output=True, text=True)


@contextlib.contextmanager
def veth_pair(rate: str | None):
    tag = uuid.uuid4().hex[:5]
    a, b = f"tbt-bench-a{tag}", f"tbt-bench-b{tag}"
    try:
        sh("ip", "netns", "add", a)
        sh("ip", "netns", "add", b)
        sh("ip", "link", "add", "va" + tag, "netns", a, "type", "veth", "peer", "name",
           "vb" + tag, "netns", b)
        for ns, dev, ip in ((a, "va" + tag, A_IP), (b, "vb" + tag, B_IP)):
            sh("ip", "-n", ns, "addr", "add", ip + "/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            if rate:
                sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                   "rate", rate, "burst", "1mb", "latency", "20ms")
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


def migrate(a: str, b: str, *source_args: str, resume: bool = True) -> dict:
    extra = [] if resume else ["--no-resume"]
    dest = subprocess.Popen(["ip", "netns", "exec", b, *PY, "destination", "--listen",
                             f"{B_IP}:0", "--resume-host", B_IP, *extra],
                            stdout=subprocess.PIPE, text=True)
    try:
        port = json.loads(dest.stdout.readline())["listening"][1]
        out = sh("ip", "netns", "exec", a, *PY, "source", *source_args, "--to",
                 f"{B_IP}:{port}", "--json", check=False)
        res = json.loads(out.stdout)
    finally:
        dest.kill()
        dest.wait()
    for pid in (res.get("destination_pid"), res.get("source_pid")):  # guests, either side
        if pid:
            sh("kill", "-9", str(pid), check=False)
    return res


def summary(res: dict, iperf_mbps: float) -> dict:
    return {k: res.get(k) for k in (
        "completed", "integrity_ok", "rounds", "downtime_ms", "client_downtime_ms",
        "migration_time_s", "goodput_mbps", "stream_rate_mbps", "dirty_tracking",
        "compression", "verify_ms", "throttle_mechanism", "error")} | {
        "stream_rate_over_iperf3": round((res.get("stream_rate_mbps") or 0) / iperf_mbps, 3),
        "wire_over_image": round(res.get("bytes_on_wire", 0) / max(res.get("image_bytes", 1), 1),
                                 3)}


def stress_ng_case(a: str, b: str) -> dict:
    ng = subprocess.Popen(["ip", "netns", "exec", a, "stress-ng", "--vm", "1", "--vm-bytes",
                           "256M", "--vm-keep", "--quiet"], start_new_session=True)
    try:
        time.sleep(3)
        kids = sh("pgrep", "-f", "stress-ng-vm", check=False).stdout.split()
        rss = {}
        for k in kids:
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{k}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        rss[int(k)] = int(line.split()[1])
        worker = max(rss, key=rss.get)
        res = migrate(a, b, "--pid", str(worker), "--max-rounds", "4", resume=False)
        return {k: res.get(k) for k in ("completed", "integrity_ok", "image_bytes", "rounds",
                                        "switchover_reason", "dirty_tracking", "downtime_ms",
                                        "stream_rate_mbps", "error")}
    finally:
        sh("pkill", "-9", "-g", str(ng.pid), check=False)
        ng.wait()


def paired(a: str, b: str, size: str, reps: int) -> dict:
    """``reps`` x (iperf3, migration) on one path; every figure and the medians."""
    runs = []
    for _ in range(reps):
        ip3 = iperf3(a, b)
        res = migrate(a, b, "--workload", size, "--dirty-rate", "20")
        runs.append(summary(res, ip3) | {"iperf3_mbps": round(ip3, 1),
                                         "goodput_over_iperf3": round(
                                             (res.get("goodput_mbps") or 0) / ip3, 3)})
    med = {k: round(statistics.median(r[k] or 0 for r in runs), 3) for k in (
        "iperf3_mbps", "goodput_mbps", "goodput_over_iperf3", "stream_rate_mbps",
        "stream_rate_over_iperf3", "downtime_ms")}
    return {"median": med, "all_completed": all(r["completed"] for r in runs), "runs": runs}


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="1G", help="guest size of the paired runs")
    ap.add_argument("--rates", default="1gbit,10gbit,unshaped")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    report: dict = {}
    for rate in args.rates.split(","):
        with veth_pair(None if rate == "unshaped" else rate) as (a, b):
            entry: dict = {"plain": paired(a, b, args.size, args.reps)}
            ip3 = entry["plain"]["median"]["iperf3_mbps"]
            for name, size, extra in (("zstd", args.size, ["--compress"]),
                                      ("plain_2_streams", args.size, ["--streams", "2"]),
                                      ("plain_4_streams", args.size, ["--streams", "4"]),
                                      ("plain_64M", "64M", [])):
                res = migrate(a, b, "--workload", size, "--dirty-rate", "20", *extra)
                entry[name] = summary(res, ip3)
            if rate == args.rates.split(",")[0]:
                entry["stress_ng_256M"] = stress_ng_case(a, b)
            report[rate] = entry
            print(json.dumps({rate: entry}, indent=1), flush=True)
    print(f"\n{'path':<10} {'iperf3':>8} {'goodput':>8} {'/iperf3':>8} {'stream':>8} "
          f"{'/iperf3':>8} {'downtime':>9}   (medians of {args.reps}, Mbit/s, ms; "
          f"{args.size} guest)")
    for rate, entry in report.items():
        m = entry["plain"]["median"]
        print(f"{rate:<10} {m['iperf3_mbps']:>8.0f} {m['goodput_mbps']:>8.0f} "
              f"{m['goodput_over_iperf3']:>8.3f} {m['stream_rate_mbps']:>8.0f} "
              f"{m['stream_rate_over_iperf3']:>8.3f} {m['downtime_ms']:>9.1f}")
    for rate, entry in report.items():
        print(f"{rate:<10} wire/image: plain {entry['plain']['runs'][0]['wire_over_image']}, "
              f"zstd {entry['zstd']['wire_over_image']}; stream/iperf3 with 2 / 4 streams "
              f"{entry['plain_2_streams']['stream_rate_over_iperf3']} / "
              f"{entry['plain_4_streams']['stream_rate_over_iperf3']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

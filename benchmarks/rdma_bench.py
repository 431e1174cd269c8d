"""TCP vs RDMA (Soft-RoCE) migration on the same path: goodput against its own baseline (iperf3
for TCP, perftest's ib_write_bw for RDMA), CPU seconds per GB (user and system) at each end,
downtime and rounds, at several RTTs and loss rates.

    python benchmarks/rdma_bench.py [--size 32M] [--rate 500] [--rtts 0,10,50]
                                    [--losses 0,0.1,1] [--out DIR]

Needs rdma_rxe: where this kernel lacks it (the host kernel has no RDMA at all) the script
re-executes itself inside the full-kernel VM (TCG: software emulation; every CPU figure is
the emulated CPU's, and goodput is bounded by it, not by the link). The path: two namespaces
joined by a veth with tbf at ``--rate`` and netem (delay = RTT/2 and loss each way); RoCE
crosses it through the rxe anchors of ``testbed.host.rxe``.

CPU: each agent's own user/system time from its start of migration to its result
(getrusage); Soft-RoCE's responder (the copy into the destination's memory) runs in softirq
context, which Linux does not charge to the destination process, so the whole VM's kernel time
(system + softirq, /proc/stat) over each migration is reported beside it.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agents.__main__ import parse_size  # noqa: E402
from testbed.host import doctor  # noqa: E402
from tests.integration.rdma_harness import (  # noqa: E402
    PY,
    RdmaNet,
    destination,
    guest,
    outcome,
)

HZ = os.sysconf("SC_CLK_TCK")


def kernel_s() -> dict[str, float]:
    """Whole-machine CPU seconds so far by kind (/proc/stat, all CPUs)."""
    f = Path("/proc/stat").read_text().splitlines()[0].split()[1:]
    user, nice, system, idle, iowait, irq, softirq = (int(x) / HZ for x in f[:7])
    return {"user": user + nice, "system": system, "softirq": softirq + irq}


def iperf3(net: RdmaNet, secs: int) -> float:
    srv = subprocess.Popen(["ip", "netns", "exec", net.b, "iperf3", "-s", "-1", "-B", net.dst],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.5)
    try:
        out = subprocess.run(["ip", "netns", "exec", net.a, "iperf3", "-c", net.dst, "-B",
                              net.src, "-t", str(secs), "-J"], capture_output=True, text=True,
                             timeout=secs + 60)
        return json.loads(out.stdout)["end"]["sum_received"]["bits_per_second"] / 1e6
    except (ValueError, KeyError, subprocess.TimeoutExpired):
        return 0.0
    finally:
        srv.kill()
        srv.wait()


def ib_write_bw(net: RdmaNet, secs: int) -> float:
    """perftest's RDMA WRITE bandwidth between the two rxe devices (1 MiB messages), Mbit/s."""
    common = ["-s", "1048576", "-D", str(secs), "-F", "--report_gbits"]
    srv = subprocess.Popen(["ip", "netns", "exec", net.b, "ib_write_bw", "-d",
                            net.path.destination.rxe, *common], stdout=subprocess.PIPE,
                           stderr=subprocess.STDOUT, text=True)
    time.sleep(2)
    try:
        out = subprocess.run(["ip", "netns", "exec", net.a, "ib_write_bw", "-d",
                              net.path.source.rxe, *common, net.dst], capture_output=True,
                             text=True, timeout=secs + 90)
        # "#bytes #iterations BW peak[Gb/sec] BW average[Gb/sec] MsgRate[Mpps]"
        m = re.search(r"^\s*1048576\s+\d+\s+([\d.]+)\s+([\d.]+)", out.stdout, re.M)
        return float(m.group(2)) * 1e3 if m else 0.0
    except subprocess.TimeoutExpired:
        return 0.0
    finally:
        srv.kill()
        srv.wait()


def migrate(net: RdmaNet, size: str, rdma: bool, timeout: float) -> dict:
    with guest(size, 10) as info, destination(net, "--no-resume", rdma=rdma) as (dproc, port):
        k0 = kernel_s()
        args = ["--pid", str(info["pid"]), "--to", f"{net.dst}:{port}", "--bind", net.src,
                "--json", "--idle-timeout", "20", "--commit-timeout", "30",
                "--resolve-timeout", "5", "--timeout", str(timeout), "--preflight", "off"]
        if rdma:
            args += ["--rdma", net.path.source.rxe]
        t0 = time.monotonic()
        proc = subprocess.run(["ip", "netns", "exec", net.a, *PY, "source", *args],
                              capture_output=True, text=True, timeout=timeout + 120)
        wall = time.monotonic() - t0
        k1 = kernel_s()
        try:
            res = json.loads(proc.stdout.strip().splitlines()[-1])
        except (ValueError, IndexError):
            return {"completed": False, "error": f"no result: {proc.stderr[-500:]}"}
        dst = outcome(dproc, 30) or {}
    gb = max(res.get("bytes_on_wire", 0), 1) / 1e9
    cs, cd = res.get("cpu_migration_s", {}), dst.get("cpu_migration_s", {})
    return {
        "completed": res.get("completed"), "integrity_ok": res.get("integrity_ok"),
        "error": res.get("error"), "transport": res.get("transport"),
        "goodput_mbps": res.get("goodput_mbps"), "downtime_ms": res.get("downtime_ms"),
        "rounds": res.get("rounds"), "migration_time_s": res.get("migration_time_s"),
        "bytes_on_wire": res.get("bytes_on_wire"), "wall_s": round(wall, 1),
        "src_user_s_per_gb": round(cs.get("user", 0) / gb, 3),
        "src_sys_s_per_gb": round(cs.get("system", 0) / gb, 3),
        "dst_user_s_per_gb": round(cd.get("user", 0) / gb, 3),
        "dst_sys_s_per_gb": round(cd.get("system", 0) / gb, 3),
        "vm_sys_s_per_gb": round((k1["system"] - k0["system"]) / gb, 3),
        "vm_softirq_s_per_gb": round((k1["softirq"] - k0["softirq"]) / gb, 3),
        "rdma_bytes_written": (res.get("rdma") or {}).get("bytes_written"),
    }


def run(args: argparse.Namespace) -> list[dict]:
    rows = []
    rtts = [float(x) for x in args.rtts.split(",")]
    losses = [float(x) for x in args.losses.split(",")]
    with RdmaNet(rate_mbit=args.rate) as net:
        if args.mtu != 1500:
            for ns, dev in ((net.a, net.va), (net.b, net.vb), (net.a, net.path.source.node_dev),
                            (net.b, net.path.destination.node_dev)):
                subprocess.run(["ip", "-n", ns, "link", "set", dev, "mtu", str(args.mtu)],
                               check=True)
            for a in (net.path.source, net.path.destination):
                subprocess.run(["ip", "link", "set", a.root_dev, "mtu", str(args.mtu)],
                               check=True)
        for rtt in rtts:
            for loss in losses:
                net.impair(delay_ms=rtt / 2, loss_pct=loss)
                row = {"rtt_ms": rtt, "loss_pct": loss, "rate_mbit": args.rate,
                       "iperf3_mbps": round(iperf3(net, args.secs), 1),
                       "ib_write_bw_mbps": round(ib_write_bw(net, args.secs), 1)}
                timeout = max(120.0, parse_size(args.size) * 8 / 5e6 * 3)
                row["tcp"] = migrate(net, args.size, False, timeout)
                row["rdma"] = migrate(net, args.size, True, timeout)
                for k, base in (("tcp", "iperf3_mbps"), ("rdma", "ib_write_bw_mbps")):
                    g = row[k].get("goodput_mbps") or 0
                    row[k]["vs_baseline"] = round(g / row[base], 3) if row[base] else None
                print(json.dumps(row), flush=True)
                rows.append(row)
                with (args.out / "rows.jsonl").open("a") as f:  # kept if the run is cut short
                    f.write(json.dumps(row) + "\n")
    return rows


def table(rows: list[dict]) -> str:
    head = ("| RTT ms | loss % | iperf3 | ib_write_bw | transport | goodput Mbit/s | / baseline "
            "| src user/sys s/GB | dst user/sys s/GB | VM sys/softirq s/GB | downtime ms "
            "| rounds | ok |\n|" + "---|" * 13)
    lines = [head]
    for r in rows:
        for k in ("tcp", "rdma"):
            m = r[k]
            lines.append(
                f"| {r['rtt_ms']:g} | {r['loss_pct']:g} | {r['iperf3_mbps']} | "
                f"{r['ib_write_bw_mbps']} | {k} | {m.get('goodput_mbps')} | "
                f"{m.get('vs_baseline')} | {m.get('src_user_s_per_gb')} / "
                f"{m.get('src_sys_s_per_gb')} | {m.get('dst_user_s_per_gb')} / "
                f"{m.get('dst_sys_s_per_gb')} | {m.get('vm_sys_s_per_gb')} / "
                f"{m.get('vm_softirq_s_per_gb')} | {m.get('downtime_ms')} | "
                f"{m.get('rounds')} | {'yes' if m.get('completed') else 'NO'} |")
    return "\n".join(lines)


def verdicts(rows: list[dict]) -> list[str]:
    out = []
    base = [r for r in rows if r["rtt_ms"] == 0 and r["loss_pct"] == 0]
    if base:
        r = base[0]
        v = r["rdma"].get("vs_baseline")
        out.append(f"target goodput / ib_write_bw >= 0.9 unimpaired: {v} -> "
                   f"{'met' if v and v >= 0.9 else 'NOT met'}")
        t = r["tcp"]["dst_user_s_per_gb"] + r["tcp"]["dst_sys_s_per_gb"]
        d = r["rdma"]["dst_user_s_per_gb"] + r["rdma"]["dst_sys_s_per_gb"]
        ratio = round(d / t, 3) if t else None
        out.append(f"target destination CPU/GB RDMA <= 0.2 x TCP (process user+sys): "
                   f"{d:.3f} vs {t:.3f} s/GB = {ratio} -> "
                   f"{'met' if ratio is not None and ratio <= 0.2 else 'NOT met'} "
                   f"(system time beside it: RDMA {r['rdma']['dst_sys_s_per_gb']}, TCP "
                   f"{r['tcp']['dst_sys_s_per_gb']} s/GB; whole VM softirq: RDMA "
                   f"{r['rdma']['vm_softirq_s_per_gb']}, TCP {r['tcp']['vm_softirq_s_per_gb']})")
    for rtt in sorted({r["rtt_ms"] for r in rows}):
        below = [r for r in rows if r["rtt_ms"] == rtt and
                 (r["rdma"].get("goodput_mbps") or 0) < (r["tcp"].get("goodput_mbps") or 0)]
        first = min(below, key=lambda r: r["loss_pct"]) if below else None
        out.append(f"RTT {rtt:g} ms: RDMA below TCP " +
                   (f"from {first['loss_pct']:g} % loss" if first else "at no loss measured"))
    return out


def plot(rows: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for rtt in sorted({r["rtt_ms"] for r in rows}):
        rs = sorted((r for r in rows if r["rtt_ms"] == rtt), key=lambda r: r["loss_pct"])
        xs = [r["loss_pct"] for r in rs]
        for k, style in (("tcp", "--o"), ("rdma", "-s")):
            ax.plot(xs, [r[k].get("goodput_mbps") or 0 for r in rs], style,
                    label=f"{k.upper()} {rtt:g} ms")
    ax.set_xscale("symlog", linthresh=0.1)
    ax.set_xlabel("loss % (each way)")
    ax.set_ylabel("migration goodput, Mbit/s")
    ax.set_title("TCP vs RDMA (Soft-RoCE) migration, TCG VM")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size", default="32M")
    ap.add_argument("--rate", type=int, default=500, help="tbf rate, Mbit/s")
    ap.add_argument("--rtts", default="0,10,50")
    ap.add_argument("--losses", default="0,0.1,1")
    ap.add_argument("--secs", type=int, default=5, help="seconds per baseline")
    ap.add_argument("--mtu", type=int, default=1500)
    ap.add_argument("--out", type=Path, default=ROOT / "results" / "rdma-bench")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("run as root (namespaces, rxe links)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    if os.environ.get(doctor.IN_VM_ENV) != "1":
        rep = doctor.diagnose()
        if not rep.features.get("rdma_rxe"):
            if rep.vm is None:
                print("no rdma_rxe here and no VM: " + "; ".join(rep.reasons), file=sys.stderr)
                return 1
            from testbed.host.vm import run_in_vm

            print(f"kernel {rep.kernel} has no rdma_rxe: running in the full-kernel VM "
                  f"({rep.vm['accelerator']})", flush=True)
            return run_in_vm([sys.executable, *sys.argv], str(rep.vm["kernel"]),
                             str(rep.vm["accelerator"]), rwdirs=[args.out.resolve()])
    t0 = time.monotonic()
    rows = run(args)
    env = {"kernel": os.uname().release, "in_vm": os.environ.get(doctor.IN_VM_ENV) == "1",
           "cpus": os.cpu_count(), "size": args.size, "rate_mbit": args.rate, "mtu": args.mtu,
           "wall_s": round(time.monotonic() - t0, 1)}
    (args.out / "rdma-bench.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    report = [f"# TCP vs RDMA migration ({env['kernel']}, "
              f"{'TCG VM' if env['in_vm'] else 'native'}, {env['cpus']} CPUs, "
              f"{args.size} guest, tbf {args.rate} Mbit/s, MTU {args.mtu})", "",
              table(rows), "", *[f"- {v}" for v in verdicts(rows)], "",
              "CPU s/GB per process: getrusage from start of migration to result. Soft-RoCE's "
              "responder copies in softirq context, not charged to the destination process: "
              "the VM's system and softirq time over each run is beside it (the whole VM: "
              "both agents, the guest, netem). Under TCG every CPU figure is the emulator's.",
              ""]
    (args.out / "report.md").write_text("\n".join(report))
    plot(rows, args.out / "goodput.png")
    print("\n".join(report))
    if rows:
        print("median RDMA/TCP goodput:", statistics.median(
            (r["rdma"].get("goodput_mbps") or 0) / max(r["tcp"].get("goodput_mbps") or 1e-9,
                                                       1e-9) for r in rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""rdma: one TCP and one RDMA (Soft-RoCE) migration on the same two-host path, per RTT and loss.

For each (RTT, loss) point: a ``pair`` lab (RTT/2 delay and the loss each way, tbf at
``bw_mbps``) with a Soft-RoCE path over its link (``testbed.lab.roce``, removed with the lab);
the path's ping, iperf3 and ``ib_write_bw`` between the two rxe devices; then each transport's
migration of the agents' built-in guest, with the same ``[migration]`` settings, plaintext
(RDMA WRITE carries pages in clear) and held against its own baseline (iperf3 for TCP,
ib_write_bw for RDMA). CPU seconds per GB on the wire: each agent's own user and system time
over its whole run (the agents' ``cpu_migration_s``: what issue 18's target is judged on),
over the copy phase alone (``cpu_copy_s``: the source from round 0 to the final round sent,
the destination from the first batch to the final round's last), the destination's
integrity check within it (``cpu_verify_s``: hashing every page where it landed, the batch
checksums) and its phases around it (``cpu_setup_s``: HELLO to HELLO_OK, the image and any
RDMA region; ``cpu_commit_s``: the final round's end to the decision), and the whole
machine's system and softirq time (``/proc/stat``): Soft-RoCE's responder places the WRITEs
in softirq context, charged (without IRQ time accounting) to whichever task it interrupted,
the destination's least of all.
"""

from __future__ import annotations

import json
import time
from typing import Any

from ...lab.lab import Lab
from ...lab.roce import roce_path
from ...lab.shaping import qdisc_drops
from ...measure import cpustat
from ...measure.migration import migrate
from ...measure.path import iperf3, ping
from ...measure.rdma_baseline import ib_write_bw
from ...results.figures import cell, failed
from ..jobs import job_from
from ..spec import RdmaSpec
from ..topology import network_of
from . import Progress

SRC, DST = "h1", "h2"
BASELINE = {"tcp": ("iperf3", "iperf3_mbps"), "rdma": ("ib_write_bw", "ib_write_bw_mbps")}
CPU_KEYS = ("src_user", "src_system", "dst_user", "dst_system", "src_copy_user",
            "src_copy_system", "dst_copy_user", "dst_copy_system", "dst_verify",
            "dst_setup", "dst_commit", "machine_user", "machine_system", "machine_softirq")
ROW_EXTRA = ("transport_choice", "rtt_ms", "loss_pct", "baseline_tool", "baseline_mbps",
             "goodput_vs_baseline", *(f"{k}_s_per_gb" for k in CPU_KEYS), "link_rx_bytes",
             "bottleneck_drops", "bottleneck_drop_pct")


def run(spec: RdmaSpec, progress: Progress) -> dict[str, Any]:
    out: dict[str, Any] = {"points": [], "migrations": [], "transports": spec.transports,
                           "virtualization": cpustat.virtualization(),
                           "cpu_per_gb_of": "bytes_on_wire"}
    for rtt in spec.rtt_ms:
        for loss in spec.loss_pct:
            out["points"].append(_point(spec, rtt, loss, progress, out["migrations"]))
    return out


def _point(spec: RdmaSpec, rtt: float, loss: float, progress: Progress,
           migrations: list[dict[str, Any]]) -> dict[str, Any]:
    net = network_of(spec, rtt_ms=rtt, loss_pct=loss)  # pair: RTT/2 and the loss each way
    point: dict[str, Any] = {"rtt_ms": rtt, "loss_pct": loss, "bw_mbps": spec.bw_mbps}
    devs = {e.node: e.name for li in net.links for e in (li.a, li.b)}
    t0 = time.monotonic()
    rdma = "rdma" in spec.transports
    with Lab(net) as lab:
        if rdma:
            path = roce_path(lab, SRC, DST)
            point["rdma_path"] = {"source": path.source.rxe,
                                  "destination": path.destination.rxe,
                                  "source_ip": path.source.ip,
                                  "destination_ip": path.destination.ip}
        dst_ip = net.address(DST)
        lab.run(SRC, ["ping", "-c", "2", "-i", "0.2", "-W", "3", dst_ip], check=False)
        point["ping"] = ping(lab, SRC, dst_ip, count=10, interval_s=0.2)
        seen = max(rtt, point["ping"].get("rtt_p50_ms") or 0.0, 5.0)
        bdp = spec.bw_mbps * 1e6 / 8 * seen / 1000
        window = f"{int(2 * bdp) + 65536}" if 2 * bdp > 4 << 20 else None  # else autotuned
        point["iperf3"] = iperf3(lab, SRC, DST, dst_ip, spec.baseline_seconds, window=window)
        point["ib_write_bw"] = {"tool": "ib_write_bw", "ib_write_bw_mbps": None,
                                "error": "not run: no rdma transport"}
        if rdma:
            point["ib_write_bw"] = ib_write_bw(lab, SRC, DST, dst_ip, path.source.rxe,
                                               path.destination.rxe, spec.baseline_seconds)
        progress(f"{spec.name}: RTT {rtt:g} ms (p50 {point['ping'].get('rtt_p50_ms')}), loss "
                 f"{loss:g} %: iperf3 {point['iperf3']['iperf3_mbps']} Mbit/s, ib_write_bw "
                 f"{_baseline_text(point['ib_write_bw'])}; lab up "
                 f"{time.monotonic() - t0:.0f} s ago")
        for i, transport in enumerate(spec.transports):
            mig = _migration(spec, lab, point, transport, dst_ip, 7800 + i, devs)
            migrations.append(mig)
            progress(f"{spec.name}: {mig['case']}: "
                     f"{'FAILED: ' + str(mig.get('error')) if failed(mig) else 'ok'}, "
                     f"{cell(mig, 'migration_time_s')} s, {mig.get('rounds')} rounds, "
                     f"goodput {cell(mig, 'goodput_mbps')} Mbit/s "
                     f"(/ {mig['baseline_tool']} {cell(mig, 'goodput_vs_baseline', '.2f')}), "
                     f"destination CPU {cell(mig, 'dst_user_s_per_gb')} user + "
                     f"{cell(mig, 'dst_system_s_per_gb')} system s/GB")
        point["qdisc_drops"] = lab.emulator_drops()
        point["links"] = lab.links_readback()
    return point


def _baseline_text(b: dict[str, Any]) -> str:
    mbps = b.get("ib_write_bw_mbps")
    return f"{mbps} Mbit/s" if mbps is not None else f"failed ({b.get('error')})"


def _migration(spec: RdmaSpec, lab: Lab, point: dict[str, Any], transport: str,
               dst_ip: str, port: int, devs: dict[str, str]) -> dict[str, Any]:
    """One migration by ``transport`` and its figures against the point's baselines."""
    both = ("--encryption", "disabled", "--idle-timeout", f"{spec.idle_timeout_s:g}")
    src_args, dst_args = both, both
    if transport == "rdma":
        rxe = point["rdma_path"]
        src_args, dst_args = (*both, "--rdma", rxe["source"]), \
            (*both, "--rdma", rxe["destination"])
    job = job_from(spec.migration, SRC, DST, dst_ip, port=port, label=transport,
                   extra_args=src_args, destination_args=dst_args)
    c0 = _counters(lab, devs)
    k0 = cpustat.machine_cpu_s()
    run_ = migrate(lab, job)
    machine = cpustat.since(k0, cpustat.machine_cpu_s())
    c = {k: v - c0[k] for k, v in _counters(lab, devs).items()}
    res = dict(run_.result)
    dst = next((d for d in reversed(run_.destination) if "cpu_migration_s" in d), {})
    cs, cd = res.get("cpu_migration_s") or {}, dst.get("cpu_migration_s") or {}
    ccs, ccd = res.get("cpu_copy_s") or {}, dst.get("cpu_copy_s") or {}
    cpu = {"src_user": cs.get("user"), "src_system": cs.get("system"),
           "dst_user": cd.get("user"), "dst_system": cd.get("system"),
           "src_copy_user": ccs.get("user"), "src_copy_system": ccs.get("system"),
           "dst_copy_user": ccd.get("user"), "dst_copy_system": ccd.get("system"),
           "dst_verify": dst.get("cpu_verify_s"),
           "dst_setup": _sum(dst.get("cpu_setup_s")), "dst_commit": _sum(dst.get("cpu_commit_s")),
           "machine_user": machine["user"], "machine_system": machine["system"],
           "machine_softirq": machine["softirq"]}
    tool, key = BASELINE[transport]
    base = point[tool].get(key)
    ok = bool(res.get("completed")) and bool(res.get("integrity_ok"))
    gb = (res.get("bytes_on_wire") or 0) / 1e9
    mig = res | {
        "case": f"{transport} @ {point['rtt_ms']:g} ms, {point['loss_pct']:g} %",
        "transport_choice": transport, "hypervisor": "agents",
        "rtt_ms": point["rtt_ms"], "loss_pct": point["loss_pct"],
        "rtt_measured_ms": point["ping"].get("rtt_p50_ms"),
        "iperf3_mbps": point["iperf3"]["iperf3_mbps"],
        "ib_write_bw_mbps": point["ib_write_bw"].get("ib_write_bw_mbps"),
        "baseline_tool": tool, "baseline_mbps": base,
        "goodput_vs_baseline": round(res["goodput_mbps"] / base, 3)
        if ok and base and res.get("goodput_mbps") is not None else None,
        "dirty_rate_mbs": spec.migration.dirty_rate_mbs,
        "destination_outcome": {k: v for k, v in dst.items() if not k.startswith("cpu_")},
        "cpu_s": cpu, "link_rx_bytes": c["rx_bytes"], "bottleneck_drops": c["drops"],
        "bottleneck_drop_pct": round(100 * c["drops"] / (c["drops"] + c["tx_packets"]), 3)
        if c["tx_packets"] else None, "row_extra": list(ROW_EXTRA)}
    for k, v in cpu.items():  # per GB on the wire; none for a failed migration
        mig[f"{k}_s_per_gb"] = round(v / gb, 3) if ok and gb and v is not None else None
    if transport == "rdma" and base:
        mig["fair_share_mbps"] = base  # the rate the model holds it to: RDMA's own baseline
    return mig


def _sum(cpu: dict[str, float] | None) -> float | None:
    """User + system of one phase's reading (None: not measured)."""
    return round(cpu["user"] + cpu["system"], 4) if cpu else None


def _counters(lab: Lab, devs: dict[str, str]) -> dict[str, int]:
    """So far: bytes the destination received on its link (RoCE and TCP alike), packets the
    source's link sent and its qdisc dropped (the configured loss and any overflow)."""
    def stats(node: str) -> dict[str, Any]:
        out = lab.run(node, ["ip", "-s", "-j", "link", "show", "dev", devs[node]]).stdout
        return json.loads(out)[0]["stats64"]

    return {"rx_bytes": int(stats(DST)["rx"]["bytes"]),
            "tx_packets": int(stats(SRC)["tx"]["packets"]),
            "drops": qdisc_drops(devs[SRC], lab.pid(SRC))}

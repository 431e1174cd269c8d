"""cloud-encrypted: on-prem -> WAN -> cloud gateway, plaintext vs encrypted migration.

The destination agent runs on a cloud host behind the gateway, reachable only through the
gateway's published port; credentials (a per-migration ephemeral CA, mutual TLS) are handed to
both agents through the management plane (here: a directory both can read). For each mode:
goodput, CPU seconds per GB (both agents), downtime; a capture on the WAN link searched for the
guest's plaintext markers; and the management-plane isolation check (on-prem management must
not reach the cloud's management network).
"""

from __future__ import annotations

import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from ...lab.lab import Lab
from ...measure import wirecheck
from ...measure.migration import migrate
from ...measure.path import iperf3_median
from .. import qemu_jobs
from ..jobs import baseline_of, job_from
from ..spec import CloudSpec
from ..topology import network_of
from . import Progress

SRC, DST, GW_ROUTER, WAN_DEV = "a-h1", "c-h1", "a-r", "a-r-cloud"
MARKERS = 64


def run(spec: CloudSpec, progress: Progress) -> dict[str, Any]:
    net = network_of(spec)  # one on-prem host, the WAN, the gateway, one cloud host
    gw = net.gateways[0]
    pub = gw.published[0]
    src_mig = net.stacks_of(SRC)["migration"]
    dst_mig = net.stacks_of(DST)["migration"]
    out: dict[str, Any] = {"public": f"{gw.public_addr}:{pub.port}", "modes": [],
                           "migrations": [], "hypervisors": spec.migration.hypervisors}
    if "qemu" in spec.migration.hypervisors:
        out["qemu_mapping"] = qemu_jobs.mapping()
    t0 = time.monotonic()
    with Lab(net) as lab, tempfile.TemporaryDirectory(prefix="tb-cloud-") as tmp:
        progress(f"{spec.name}: cloud path up in {time.monotonic() - t0:.1f} s "
                 f"(published {gw.public_addr}:{pub.port})")
        out["isolation"] = isolation_check(lab, net)
        progress(f"{spec.name}: management isolation "
                 f"{'holds' if out['isolation']['isolated'] else 'BROKEN'}")
        # the path's baseline through the gateway's published port: the median of three runs
        out["iperf3"] = iperf3_median(lab, SRC, DST, gw.public_addr, seconds=4,
                                      bind=src_mig.ip, port=pub.port, server_bind=dst_mig.ip,
                                      server_port=pub.to_port)
        creds = Path(tmp) / "credentials"
        subprocess.run([sys.executable, "-m", "agents", "credentials", "--out", str(creds),
                        "--identity", "c-h1.cloud.test", "--ip", gw.public_addr,
                        "--ip", dst_mig.ip], check=True, capture_output=True, timeout=60)
        for mode in spec.modes if "agents" in spec.migration.hypervisors else ():
            enc = ["--encryption", "required", "--credentials", str(creds)] \
                if mode == "encrypted" else ["--encryption", "disabled"]
            m = spec.migration.for_agents()
            job = job_from(m, SRC, DST, dst_mig.ip, port=pub.to_port,
                           connect_addr=gw.public_addr, connect_port=pub.port, bind=src_mig.ip,
                           label=mode, extra_args=(*enc, "--markers", str(MARKERS)),
                           destination_args=tuple(enc))
            pcap = Path(tmp) / f"{mode}.pcap"
            if spec.wire_check:
                with wirecheck.capture(lab.pid(GW_ROUTER), WAN_DEV, pcap):
                    run_ = migrate(lab, job)
                wire = wirecheck.inspect(pcap)
                seen = {"packets": wire.packets, "payload_bytes": wire.payload_bytes,
                        "markers_found": len(wire.markers), "markers_planted": MARKERS}
            else:
                run_ = migrate(lab, job)
                seen = None
            res = dict(run_.result)
            dst_cpu = next((d.get("cpu_s") for d in reversed(run_.destination)
                            if "cpu_s" in d), None)
            cpu = (res.get("cpu_s") or 0) + (dst_cpu or 0)
            gb = (res.get("bytes_on_wire") or 0) / 1e9
            mig = res | baseline_of(out["iperf3"]) | {"case": mode, "mode": mode,
                         "rtt_ms": spec.rtt_ms, "hypervisor": "agents", "compare_at": mode,
                         "dirty_rate_mbs": m.dirty_rate_mbs, "wire": seen,
                         "cpu_s_total": cpu if res.get("cpu_s") is not None else None,
                         "cpu_s_per_gb": round(cpu / gb, 2) if gb and res.get("cpu_s")
                         else None}
            out["migrations"].append(mig)
            progress(f"{spec.name}: {mode}: {'ok' if mig.get('integrity_ok') else 'FAILED'}, "
                     f"goodput {mig.get('goodput_mbps') or 0:.0f} Mbit/s, downtime "
                     f"{mig.get('downtime_ms') or 0:.0f} ms, encrypted {mig.get('encrypted')}"
                     + (f", markers on the wire {seen['markers_found']}/{MARKERS}" if seen
                        else ""))
        if "qemu" in spec.migration.hypervisors:
            for mode in spec.modes:  # the one published port, as the agents
                mig = _qemu_mode(spec, lab, mode, gw.public_addr, pub.port, pub.to_port,
                                 Path(tmp), out["iperf3"])
                out["migrations"].append(mig)
                seen = mig.get("wire")
                verdict = "ok" if mig.get("integrity_ok") else f"FAILED: {mig.get('error')}"
                progress(f"{spec.name}: QEMU {mode}: {verdict}"
                         f", goodput {mig.get('goodput_mbps') or 0:.0f} Mbit/s, downtime "
                         f"{mig.get('downtime_ms') or 0:.0f} ms, encrypted {mig.get('encrypted')}"
                         + (f", markers on the wire {seen['markers_found']}/{MARKERS}" if seen
                            else ""))
        out["modes"] = [m["mode"] for m in out["migrations"]]
    return out


def _qemu_mode(spec: CloudSpec, lab: Lab, mode: str, public: str, port: int, listen: int,
               tmp: Path, baseline: dict[str, Any]) -> dict[str, Any]:
    """One QEMU migration through the gateway's published port: the source connects to the
    public address, the destination QEMU listens on its migration stack behind the NAT; TLS
    (x509, the certificate naming the cloud host and the public address) when encrypted."""
    m = spec.migration
    enc = mode == "encrypted"
    job = qemu_jobs.job_of(m, SRC, DST, f"qemu-{mode}", port=listen, tls=enc,
                           markers=MARKERS if spec.wire_check else 0, connect_addr=public,
                           connect_port=port, tls_identity="c-h1.cloud.test",
                           tls_ips=(public,))
    extra = {"case": f"qemu {mode}", "mode": mode, **baseline_of(baseline),
             "compare_at": mode, "cpu_s_per_gb": None}
    if not spec.wire_check:
        return qemu_jobs.run(lab, job, m, wire=None, **extra)
    pcap = tmp / f"qemu-{mode}.pcap"
    with wirecheck.capture(lab.pid(GW_ROUTER), WAN_DEV, pcap):
        mig = qemu_jobs.run(lab, job, m, **extra)
    wire = wirecheck.inspect(pcap)
    mig["wire"] = {"packets": wire.packets, "payload_bytes": wire.payload_bytes,
                   "markers_found": len(wire.markers), "markers_planted": MARKERS}
    return mig


def isolation_check(lab: Lab, net: Any) -> dict[str, Any]:
    """From the on-prem host's management stack, try to reach the cloud's management plane."""
    src = net.stacks_of(SRC)["management"].ip
    target = net.stacks_of(DST)["management"].ip
    ping = lab.run(SRC, ["ping", "-c", "3", "-i", "0.2", "-W", "1", "-I", src, target],
                   check=False, timeout=30)
    tcp = lab.run(SRC, ["timeout", "3", "bash", "-c",
                        f"exec 3<>/dev/tcp/{target}/22"], check=False, timeout=30)
    return {"from": src, "to": target, "ping_rc": ping.returncode, "tcp22_rc": tcp.returncode,
            "isolated": ping.returncode != 0 and tcp.returncode != 0}



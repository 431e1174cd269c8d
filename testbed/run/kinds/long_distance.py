"""long-distance: one migration across a WAN at growing RTT, per transport choice.

For each RTT: the path's measured RTT (ping) and iperf3 throughput beside the configured
values, then a migration with the OS's default socket buffers, with buffers sized from the
bandwidth-delay product, and with several streams. The 150 ms line (vMotion's supported
limit for long-distance migration) is marked.
"""

from __future__ import annotations

import time
from typing import Any

from topologies.guests import add_guests

from ...lab.lab import Lab
from ...measure.migration import MigrationJob, migrate
from ...measure.path import iperf3, ping
from ...results.figures import cell, client_outage, failed
from .. import qemu_jobs
from ..jobs import baseline_of, job_from
from ..spec import LongDistanceSpec
from ..topology import network_of
from . import Progress

SRC, DST = "a-h1", "b-h1"


def run(spec: LongDistanceSpec, progress: Progress) -> dict[str, Any]:
    out: dict[str, Any] = {"points": [], "migrations": [],
                           "hypervisors": spec.migration.hypervisors}
    if "qemu" in spec.migration.hypervisors:
        out["qemu_mapping"] = qemu_jobs.mapping()
    for rtt in spec.rtt_ms:
        out["points"].append(_point(spec, rtt, progress, out["migrations"]))
    return out


def _job(spec: LongDistanceSpec, transport: str, dst_ip: str, port: int,
         guest: str | None) -> MigrationJob:
    m = spec.migration.for_agents()
    streams = spec.streams if transport == "streams" else m.streams
    extra = ("--socket-buffers", "default" if transport == "default-buffers" else "bdp")
    return job_from(m, SRC, DST, dst_ip, port=port, streams=streams, extra_args=extra,
                    label=transport, guest=guest)


def _point(spec: LongDistanceSpec, rtt: float, progress: Progress,
           all_migrations: list[dict[str, Any]]) -> dict[str, Any]:
    net = network_of(spec, rtt_ms=rtt)  # wan, or the [topology] chosen, at this RTT
    agents = spec.migration.for_agents()
    point: dict[str, Any] = {"rtt_ms": rtt, "bw_mbps": spec.bw_mbps, "migrations": [],
                             "guest_network": agents.guest_network}
    chosen = spec.migration.hypervisors
    transports = spec.transports if spec.compare_transports_at is None or \
        rtt in spec.compare_transports_at else spec.transports[:1]
    if not qemu_jobs.runs_here(chosen, "agents", rtt, spec.compare_hypervisors_at):
        transports = []
    guests = [None] * len(transports)
    if agents.guest_network != "none" and transports:  # a guest per migration; client at b
        guests = [f"g{i + 1}" for i in range(len(transports))]
        add_guests(net, agents.guest_network, dict.fromkeys(guests, SRC), [DST],
                   client_on=DST)
    t0 = time.monotonic()
    with Lab(net) as lab:
        dst_ip = net.address(DST)
        lab.run(SRC, ["ping", "-c", "2", "-i", "0.2", "-W", "3", dst_ip], check=False)
        point["ping"] = ping(lab, SRC, dst_ip, count=10, interval_s=0.2)
        path_rtt = max(rtt, point["ping"].get("rtt_p50_ms") or 0.0, 5.0)  # what TCP sees
        bdp = spec.bw_mbps * 1e6 / 8 * path_rtt / 1000
        point["iperf3"] = iperf3(lab, SRC, DST, dst_ip, spec.iperf_seconds,
                                 window=f"{int(2 * bdp) + 65536}",
                                 omit_s=spec.iperf_omit_s)
        progress(f"{spec.name}: RTT {rtt:g} ms (measured p50 {point['ping'].get('rtt_p50_ms')}"
                 f"), iperf3 {point['iperf3']['iperf3_mbps']} Mbit/s from a cold start, "
                 f"{point['iperf3']['steady_mbps']} steady; lab up "
                 f"{time.monotonic() - t0:.0f} s ago")
        for i, transport in enumerate(transports):
            run = migrate(lab, _job(spec, transport, dst_ip, 7800 + i, guests[i]))
            mig = dict(run.result) | {
                "hypervisor": "agents", "compare_at": f"RTT {rtt:g} ms",
                "case": f"{transport} @ {rtt:g} ms", "transport_choice": transport,
                "rtt_ms": rtt, "rtt_measured_ms": point["ping"].get("rtt_p50_ms"),
                **baseline_of(point["iperf3"]),
                "dirty_rate_mbs": spec.migration.dirty_rate_mbs,
                "converged": _converged(run.result),
                "beyond_150ms": rtt > spec.mark_rtt_ms}
            point["migrations"].append(mig)
            all_migrations.append(mig)
            _said(progress, spec.name, mig)
        if qemu_jobs.runs_here(chosen, "qemu", rtt, spec.compare_hypervisors_at):
            m = spec.migration
            mig = qemu_jobs.run(lab, qemu_jobs.job_of(m, SRC, DST, f"qemu-{rtt:g}ms"), m,
                                case=f"qemu @ {rtt:g} ms", transport_choice="qemu",
                                compare_at=f"RTT {rtt:g} ms",
                                rtt_ms=rtt, rtt_measured_ms=point["ping"].get("rtt_p50_ms"),
                                **baseline_of(point["iperf3"]),
                                beyond_150ms=rtt > spec.mark_rtt_ms)
            mig["converged"] = _converged(mig)
            point["migrations"].append(mig)
            all_migrations.append(mig)
            _said(progress, spec.name, mig)
        point["qdisc_drops"] = lab.emulator_drops()
        point["links"] = lab.links_readback()
    return point


def _said(progress: Progress, name: str, mig: dict[str, Any]) -> None:
    progress(f"{name}: {mig['case']}: "
             f"{'FAILED: ' + str(mig.get('error')) if failed(mig) else 'ok'}, "
             f"{cell(mig, 'migration_time_s')} s, {mig.get('rounds')} rounds, "
             f"downtime {cell(mig, 'downtime_ms', '.0f')} ms, client outage "
             f"{client_outage(mig)}, goodput {cell(mig, 'goodput_mbps', '.0f')} Mbit/s")


def _converged(result: dict[str, Any]) -> bool:
    """Switched over because the rest fit the downtime target (not forced by a limit)."""
    reason = str(result.get("switchover_reason", ""))
    return bool(result.get("completed")) and reason.startswith("converged")



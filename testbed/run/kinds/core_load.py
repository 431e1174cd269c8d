"""core-load: DRS-like bursts of concurrent migrations across a spine-leaf fabric.

For each path (migration on its own stack, sharing the management stack, or on its own stack
with a rate cap) and each burst size, migrations run from hosts on leaf 1 to hosts on the
last leaf. Measured: every spine's load over time (interface counters at ``sample_hz``),
ECMP balance across spines, the management plane's RTT and loss (a ping between management
stacks on different leaves) idle vs during the burst, and a background flow's throughput.
"""

from __future__ import annotations

import time
from typing import Any

from topologies.guests import add_guests

from ...lab import routing
from ...lab.lab import Lab
from ...measure.migration import migrate_concurrently
from ...measure.path import iperf3
from ...measure.probes import PingProbe
from ...measure.samplers import CounterSampler, utilisation_summary
from ...results.kinds.core_load import jain, spine_load
from .. import qemu_jobs
from ..jobs import job_from
from ..spec import CoreLoadSpec
from ..topology import network_of
from . import Progress

IDLE_S = 3.0
BASE_PORT = 7800


def run(spec: CoreLoadSpec, progress: Progress) -> dict[str, Any]:
    """Every path on one fabric (brought up once): the capped path runs last, its caps stay."""
    out: dict[str, Any] = {"paths": [], "migrations": [],
                           "hypervisors": spec.migration.hypervisors}
    if "qemu" in spec.migration.hypervisors:
        out["qemu_mapping"] = qemu_jobs.mapping()
    paths = sorted(spec.paths, key=lambda p: p == "capped")
    net = network_of(spec)  # the spine-leaf fabric of the spec's keys, with stacks
    src_hosts = [f"h1-{i}" for i in range(1, spec.hosts_per_leaf + 1)]
    dst_hosts = [f"h{spec.leaves}-{i}" for i in range(1, spec.hosts_per_leaf + 1)]
    sizes = {path: spec.concurrency if k == 0 or spec.compare_paths_at is None
             else [c for c in spec.concurrency if c in spec.compare_paths_at]
             for k, path in enumerate(paths)}
    m = spec.migration.for_agents()
    if m.guest_network != "none":  # a fresh guest per migration, a client on leaf 1
        names = [(_guest(path, c, i), i) for path in paths for who, c in
                 bursts(spec, path, sizes[path]) if who == "agents" for i in range(c)]
        add_guests(net, m.guest_network, {g: src_hosts[i % len(src_hosts)] for g, i in names},
                   {g: [dst_hosts[i % len(dst_hosts)]] for g, i in names},
                   client_on=src_hosts[0])
    t0 = time.monotonic()
    with Lab(net) as lab:
        progress(f"{spec.name}: fabric up ({len(net.nodes)} nodes, stacks by "
                 f"{lab.stack_mode}, {len(net.guests.slots) if net.guests else 0} guest "
                 f"slots) in {time.monotonic() - t0:.1f} s")
        for path in paths:
            if path == "capped":
                routing.cap_function(lab, "migration", spec.migration_cap_mbps)
            out["paths"].append(_run_path(spec, lab, path, sizes[path], src_hosts, dst_hosts,
                                          progress, out["migrations"]))
    return out


def bursts(spec: CoreLoadSpec, path: str, sizes: list[int]) -> list[tuple[str, int]]:
    """(hypervisor, burst size) on ``path`` in run order: the first hypervisor at the
    path's sizes, the others at ``compare_hypervisors_at`` on ``compare_hypervisors_on``."""
    chosen = spec.migration.hypervisors
    out = []
    for who in chosen:
        if chosen.index(who) == 0:
            out += [(who, c) for c in sizes]
        elif spec.compare_hypervisors_on is None or path in spec.compare_hypervisors_on:
            out += [(who, c) for c in (spec.compare_hypervisors_at or sizes)]
    order = {c: k for k, c in enumerate(sorted({c for _, c in out}))}
    return sorted(out, key=lambda wc: (order[wc[1]], chosen.index(wc[0])))


def _guest(path: str, c: int, i: int) -> str:
    return f"{path[:3]}{c}-{i + 1}"


def _run_path(spec: CoreLoadSpec, lab: Lab, path: str, sizes: list[int],
              src_hosts: list[str], dst_hosts: list[str], progress: Progress,
              all_migrations: list[dict[str, Any]]) -> dict[str, Any]:
    net = lab.network
    func = "management" if path == "shared-management" else "migration"
    spines = [f"s{i}" for i in range(1, spec.spines + 1)]
    m = spec.migration.for_agents()
    result: dict[str, Any] = {"path": path, "function": func, "bursts": [],
                              "stack_mode": lab.stack_mode, "guest_network": m.guest_network}
    sampler = CounterSampler(spec.sample_hz)
    for spine in spines:
        for end in net.interfaces(spine):
            sampler.watch(spine, end.name, lab.pid(spine), spec.fabric_link_mbps,
                          f"{spine}:{end.name}")
    mgmt = {h: net.stacks_of(h)["management"] for h in (src_hosts[0], dst_hosts[0])}
    bg_src, bg_dst = src_hosts[-1], dst_hosts[-1]
    bg_dev = net.stacks_of(bg_src)["replication"].dev
    if spec.background_flow:
        sampler.watch(bg_src, bg_dev, lab.pid(bg_src), spec.host_link_mbps, "background")
    # the path's baseline: iperf3 between the first pair's stacks of this path
    a, b = (net.stacks_of(src_hosts[0])[func], net.stacks_of(dst_hosts[0])[func])
    base = iperf3(lab, src_hosts[0], dst_hosts[0], b.ip, seconds=3, bind=a.ip)
    result["iperf3"] = base
    probe = PingProbe(lab, src_hosts[0], mgmt[src_hosts[0]].ip, mgmt[dst_hosts[0]].ip,
                      spec.probe_interval_ms / 1000).start()
    bg: list[Any] = []
    if spec.background_flow:
        rb, ra = (net.stacks_of(bg_dst)["replication"], net.stacks_of(bg_src)["replication"])
        bg = _start_background(lab, bg_src, bg_dst, ra.ip, rb.ip, spec.background_mbps)
    sampler.start()
    base_t = time.monotonic()
    try:
        for who, c in bursts(spec, path, sizes):
            time.sleep(IDLE_S)  # idle window before each burst
            idle = (time.monotonic() - IDLE_S, time.monotonic())
            if who == "qemu":
                result["bursts"].append(_qemu_burst(
                    spec, lab, path, func, c, src_hosts, dst_hosts, sampler, probe, bool(bg),
                    idle, base_t, base["iperf3_mbps"], progress, all_migrations))
                continue
            jobs = []
            for i in range(c):
                s, d = src_hosts[i % len(src_hosts)], dst_hosts[i % len(dst_hosts)]
                ss, ds = net.stacks_of(s)[func], net.stacks_of(d)[func]
                jobs.append(job_from(
                    m, s, d, ds.ip, port=BASE_PORT + i, bind=ss.ip,
                    label=f"{path} x{c} #{i + 1}",
                    guest=_guest(path, c, i) if m.guest_network != "none" else None))
            progress(f"{spec.name}/{path}: burst of {c} migration(s) over the {func} stack")
            start = time.monotonic()
            runs = migrate_concurrently(lab, jobs)
            end = time.monotonic()
            burst = _burst_summary(spec, c, runs, sampler, probe, bool(bg),
                                   (start - base_t, end - base_t), idle, (start, end),
                                   base_t)
            share = fair_share_mbps(spec, path, c, base["iperf3_mbps"])
            burst["hypervisor"] = "agents"
            for r in runs:
                mig = dict(r.result) | {
                    "hypervisor": "agents", "compare_at": f"{path} x{c}",
                    "case": r.job.label, "iperf3_mbps": base["iperf3_mbps"],
                    "fair_share_mbps": share,
                    "dirty_rate_mbs": r.job.dirty_rate_mbs, "path": path,
                    "concurrency": c, "t_start_s": round(r.started_s, 3)}
                burst["migrations"].append(mig)
                all_migrations.append(mig)
            result["bursts"].append(burst)
            ok = sum(bool(m.get("integrity_ok")) for m in burst["migrations"])
            progress(f"{spec.name}/{path} x{c}: {ok}/{c} verified, spines peak "
                     + ", ".join(f"{s} {v['peak_util'] or 0:.0%}"
                                 for s, v in burst["spines"].items()))
    finally:
        sampler.stop()
        probe.stop()
        for proc in bg:  # client and server: the next path starts its own
            if proc.poll() is None:
                proc.kill()
    # the probe's windows can only be read after it stopped
    for burst in result["bursts"]:
        w = burst.pop("_windows")
        burst["management"] = {"idle": probe.window(*w["idle"]),
                               "burst": probe.window(*w["burst"])}
    result["series"] = sampler.series()
    result["sampler_error"] = sampler.error
    result["sampler_dropped_samples"] = sampler.dropped
    return result


def _qemu_burst(spec: CoreLoadSpec, lab: Lab, path: str, func: str, c: int,
                src_hosts: list[str], dst_hosts: list[str], sampler: CounterSampler,
                probe: PingProbe, background: bool, idle: tuple[float, float], base_t: float,
                iperf3_mbps: float, progress: Progress,
                all_migrations: list[dict[str, Any]]) -> dict[str, Any]:
    """A burst of ``c`` QEMU guests over ``func``'s stacks, measured like the agents'."""
    m = spec.migration
    jobs = [qemu_jobs.job_of(m, src_hosts[i % len(src_hosts)], dst_hosts[i % len(dst_hosts)],
                             f"{path} qemu x{c} #{i + 1}", port=qemu_jobs.BASE_PORT + i,
                             function=func) for i in range(c)]
    progress(f"{spec.name}/{path}: burst of {c} QEMU guest(s) over the {func} stack")
    start = time.monotonic()
    share = fair_share_mbps(spec, path, c, iperf3_mbps)
    migs = qemu_jobs.run_burst(lab, jobs, m, [
        {"case": j.label, "iperf3_mbps": iperf3_mbps, "fair_share_mbps": share, "path": path,
         "concurrency": c, "compare_at": f"{path} x{c}"} for j in jobs])
    end = time.monotonic()
    burst = _burst_summary(spec, c, [], sampler, probe, background,
                           (start - base_t, end - base_t), idle, (start, end), base_t)
    burst["hypervisor"] = "qemu"
    burst["migrations"] = migs
    all_migrations.extend(migs)
    ok = sum(bool(x.get("integrity_ok")) for x in migs)
    progress(f"{spec.name}/{path} QEMU x{c}: {ok}/{c} ran on, spines peak "
             + ", ".join(f"{s} {v['peak_util'] or 0:.0%}" for s, v in burst["spines"].items()))
    return burst


def fair_share_mbps(spec: CoreLoadSpec, path: str, c: int, iperf3_mbps: float) -> float:
    """What one of ``c`` concurrent migrations can expect: the path's iperf3 shared by the
    migrations from one host (its link, or its stack's cap) and by the whole burst on the
    source leaf's uplinks (ECMP assumed even), at iperf3's efficiency."""
    per_host = -(-c // spec.hosts_per_leaf)
    link = min(spec.host_link_mbps, spec.fabric_link_mbps,
               spec.migration_cap_mbps if path == "capped" else float("inf"))
    efficiency = iperf3_mbps / link
    uplinks = spec.spines * spec.fabric_link_mbps * efficiency / c
    return round(min(iperf3_mbps / per_host, uplinks), 3)


def _start_background(lab: Lab, src: str, dst: str, src_ip: str, dst_ip: str,
                      mbps: float) -> list[Any]:
    """A tenant-like TCP flow at ``mbps`` between the replication stacks, for the whole path:
    its server and its client."""
    import subprocess

    server = lab.popen(dst, ["iperf3", "-s", "-p", "5301"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    client = lab.popen(src, ["iperf3", "-c", dst_ip, "-B", src_ip, "-p", "5301", "-t", "3600",
                             "-b", f"{mbps}M"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [server, client]


def _burst_summary(spec: CoreLoadSpec, c: int, runs: list[Any], sampler: CounterSampler,
                   probe: PingProbe, background: bool, rel: tuple[float, float],
                   idle: tuple[float, float], burst: tuple[float, float],
                   base_t: float) -> dict[str, Any]:
    series = sampler.series()
    spines = spine_load(series, rel)
    dt = 1.0 / spec.sample_hz
    per_spine_bytes = {sp: sum(v["bytes_s"]) * dt for sp, v in spines.items()}
    spine_summary = {}
    for spine, v in spines.items():
        util, total = v["util"], v["bytes_s"]
        spine_summary[spine] = {
            "peak_bytes_s": max(total, default=0.0),
            "mean_bytes_s": sum(total) / len(total) if total else 0.0,
            "peak_util": max(util, default=0.0),
            "mean_util": sum(util) / len(util) if util else 0.0,
            "bytes": per_spine_bytes[spine]}
    bg = {}
    if background:
        s = next(x for x in series if x["label"] == "background")
        bg = {"idle_mbps": (utilisation_summary(s, idle[0] - base_t, idle[1] - base_t)
                            ["mean_bytes_s"] or 0) * 8 / 1e6,
              "burst_mbps": (utilisation_summary(s, rel[0], rel[1])["mean_bytes_s"] or 0)
              * 8 / 1e6}
    return {"concurrency": c, "t_from_s": rel[0], "t_to_s": rel[1],
            "duration_s": rel[1] - rel[0], "spines": spine_summary,
            "ecmp_jain": jain(list(per_spine_bytes.values())),
            "background": bg, "migrations": [],
            "_windows": {"idle": idle, "burst": burst}}



"""core-load: DRS-like bursts of concurrent migrations across a spine-leaf fabric.

For each path (migration on its own stack, sharing the management stack, or on its own stack
with a rate cap) and each burst size, migrations run from hosts on leaf 1 to hosts on the
last leaf. Measured: every spine's load over time (interface counters at ``sample_hz``),
ECMP balance across spines, the management plane's RTT and loss (a ping between management
stacks on different leaves) idle vs during the burst, and a background flow's throughput.
"""

from __future__ import annotations

import math
import time
from typing import Any

from topologies.guests import add_guests

from ...lab import routing
from ...lab.lab import Lab
from ...measure.migration import migrate_concurrently
from ...measure.path import BulkFlow, bulk_burst, iperf3_median
from ...measure.portcount import PortCounters, carrier
from ...measure.probes import PingProbe
from ...measure.samplers import CounterSampler, utilisation_summary
from ...results.kinds.core_load import jain, spine_load
from ...results.sharing import Flow, endings, max_min
from .. import qemu_jobs
from ..jobs import job_from
from ..spec import CoreLoadSpec
from ..topology import network_of
from . import Progress

IDLE_S = 3.0
BASE_PORT = 7800
TCP_BASE_PORT = 7900  # the iperf3 flows of a burst's TCP baseline
BACKGROUND_PORT = 5301


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
    """Every burst of ``path`` under one set of instruments (spine counters, the management
    probe, the tenant flow); the path's result."""
    run = _PathRun(spec, lab, path, src_hosts, dst_hosts, progress, all_migrations)
    run.start()
    try:
        for who, c in bursts(spec, path, sizes):
            time.sleep(IDLE_S)  # idle window before each burst
            idle = (time.monotonic() - IDLE_S, time.monotonic())
            if who == "qemu":
                run.qemu_burst(c, idle)
            else:
                run.agents_burst(c, idle)
                if spec.tcp_baseline and c > 1:
                    run.tcp_burst(c)
    finally:
        run.stop()
    return run.finish()


class _PathRun:
    """One path's instruments and bursts."""

    def __init__(self, spec: CoreLoadSpec, lab: Lab, path: str, src_hosts: list[str],
                 dst_hosts: list[str], progress: Progress,
                 all_migrations: list[dict[str, Any]]) -> None:
        self.spec, self.lab, self.path, self.progress = spec, lab, path, progress
        self.src_hosts, self.dst_hosts, self.all = src_hosts, dst_hosts, all_migrations
        self.func = "management" if path == "shared-management" else "migration"
        self.m = spec.migration.for_agents()
        self.result: dict[str, Any] = {"path": path, "function": self.func, "bursts": [],
                                       "stack_mode": lab.stack_mode,
                                       "guest_network": self.m.guest_network}
        self.windows: list[tuple[dict[str, Any], tuple[float, float], tuple[float, float]]] = []
        self.background: list[Any] = []

    def start(self) -> None:
        spec, lab, net = self.spec, self.lab, self.lab.network
        self.sampler = CounterSampler(spec.sample_hz)
        for spine in (f"s{i}" for i in range(1, spec.spines + 1)):
            for end in net.interfaces(spine):
                self.sampler.watch(spine, end.name, lab.pid(spine), spec.fabric_link_mbps,
                                   f"{spine}:{end.name}")
        src0, dst0 = self.src_hosts[0], self.dst_hosts[0]
        bg_src, bg_dst = self.src_hosts[-1], self.dst_hosts[-1]
        if spec.background_flow:
            self.sampler.watch(bg_src, net.stacks_of(bg_src)["replication"].dev,
                               lab.pid(bg_src), spec.host_link_mbps, "background")
        # the path's baseline: iperf3 between the first pair's stacks of this path (median of 3)
        a, b = net.stacks_of(src0)[self.func], net.stacks_of(dst0)[self.func]
        self.base = self.result["iperf3"] = iperf3_median(lab, src0, dst0, b.ip, seconds=3,
                                                          bind=a.ip)
        self.probe = PingProbe(lab, src0, net.stacks_of(src0)["management"].ip,
                               net.stacks_of(dst0)["management"].ip,
                               spec.probe_interval_ms / 1000).start()
        if spec.background_flow:
            rb, ra = net.stacks_of(bg_dst)["replication"], net.stacks_of(bg_src)["replication"]
            self.background = _start_background(lab, bg_src, bg_dst, ra.ip, rb.ip,
                                                spec.background_mbps)
        self.sampler.start()
        # which spine each burst's connections crossed: a counter per port in every spine
        most = max(spec.concurrency + (spec.compare_hypervisors_at or []), default=1)
        ports = [BASE_PORT + i for i in range(most)] + \
            [qemu_jobs.BASE_PORT + i for i in range(most)] + \
            [TCP_BASE_PORT + i for i in range(most)] + [BACKGROUND_PORT]
        self.spines = [f"s{i}" for i in range(1, spec.spines + 1)]
        self.ports = PortCounters(lab, self.spines, ports).start()
        self.base_t = time.monotonic()

    def pair(self, i: int) -> tuple[str, str]:
        """The source and destination host of a burst's ``i``-th migration (or flow)."""
        return self.src_hosts[i % len(self.src_hosts)], self.dst_hosts[i % len(self.dst_hosts)]

    def agents_burst(self, c: int, idle: tuple[float, float]) -> None:
        spec, net, m, path, func = self.spec, self.lab.network, self.m, self.path, self.func
        jobs = []
        for i in range(c):
            s, d = self.pair(i)
            ss, ds = net.stacks_of(s)[func], net.stacks_of(d)[func]
            jobs.append(job_from(
                m, s, d, ds.ip, port=BASE_PORT + i, bind=ss.ip, label=f"{path} x{c} #{i + 1}",
                guest=_guest(path, c, i) if m.guest_network != "none" else None))
        self.progress(f"{spec.name}/{path}: burst of {c} migration(s) over the {func} stack")
        start, before = time.monotonic(), self.ports.read()
        runs = migrate_concurrently(self.lab, jobs)
        burst = self._summary(c, idle, (start, time.monotonic()), "agents")
        share = fair_share_mbps(spec, path, c, self.base["iperf3_mbps"])
        migs = [dict(r.result) | {
            "hypervisor": "agents", "compare_at": f"{path} x{c}", "case": r.job.label,
            "iperf3_mbps": self.base["iperf3_mbps"], "even_share_mbps": share,
            "fair_share_mbps": share, "dirty_rate_mbs": r.job.dirty_rate_mbs, "path": path,
            "concurrency": c, "t_start_s": round(r.started_s, 3), "src": r.job.src,
            "dst": r.job.dst, "port": r.job.port} for r in runs]
        self._shared(migs, before, burst)
        for mig in migs:
            burst["migrations"].append(mig)
            self.all.append(mig)
        ok = sum(bool(x.get("integrity_ok")) for x in burst["migrations"])
        self._said(f"{path} x{c}: {ok}/{c} verified", burst)

    def tcp_burst(self, c: int) -> None:
        """The agents' burst of ``c`` again as iperf3 flows (same hosts, stacks and bytes as
        the guests' images, all at once), each against the fluid model of the spines it
        took: the last agents' burst gets ``tcp_baseline``."""
        spec, net, func = self.spec, self.lab.network, self.func
        flows = []
        for i in range(c):
            s, d = self.pair(i)
            flows.append(BulkFlow(s, d, net.stacks_of(d)[func].ip, TCP_BASE_PORT + i,
                                  net.stacks_of(s)[func].ip))
        nbytes = self.m.workload_mib << 20
        self.progress(f"{spec.name}/{self.path}: TCP alone, {c} iperf3 flow(s) of "
                      f"{self.m.workload_mib} MiB")
        burst = self.result["bursts"][-1]
        start, before = time.monotonic(), self.ports.read()
        try:
            got = bulk_burst(self.lab, flows, nbytes)
        except RuntimeError as exc:  # a comparison only: the burst's own results stand
            burst["tcp_baseline"] = {"error": str(exc), "bytes": nbytes}
            self.progress(f"{spec.name}/{self.path}: TCP alone failed: {exc}")
            return
        after = self.ports.read()
        for g in got:
            g["spine"] = carrier(before, after, g["port"])[0]
        shares = path_shares(self.spec, self.path, [
            {"case": str(g["port"]), "src": g["client"], "dst": g["server"],
             "spine": g["spine"], "bytes_on_wire": nbytes,
             "monotonic_s": {"round0": g["start_s"], "pause": g["end_s"],
                             "decided": g["end_s"]}} for g in got],
            burst.get("background_spine"), self.base["iperf3_mbps"])
        for g in got:
            g["fair_share_mbps"] = shares[str(g["port"])][0]
            g["predicted_s"] = round(nbytes * 8 / 1e6 / g["fair_share_mbps"], 4)
        rel = (start - self.base_t, time.monotonic() - self.base_t)
        burst["tcp_baseline"] = {"flows": got, "bytes": nbytes, "t_from_s": rel[0],
                                 "t_to_s": rel[1]}

    def qemu_burst(self, c: int, idle: tuple[float, float]) -> None:
        """A burst of ``c`` QEMU guests over the path's stacks, measured like the agents'."""
        spec, path, m = self.spec, self.path, self.spec.migration
        jobs = [qemu_jobs.job_of(m, *self.pair(i), f"{path} qemu x{c} #{i + 1}",
                                 port=qemu_jobs.BASE_PORT + i, function=self.func)
                for i in range(c)]
        self.progress(f"{spec.name}/{path}: burst of {c} QEMU guest(s) over the {self.func} "
                      "stack")
        start, before = time.monotonic(), self.ports.read()
        share = fair_share_mbps(spec, path, c, self.base["iperf3_mbps"])
        migs = qemu_jobs.run_burst(self.lab, jobs, m, [
            {"case": j.label, "iperf3_mbps": self.base["iperf3_mbps"], "fair_share_mbps": share,
             "even_share_mbps": share, "path": path, "concurrency": c,
             "compare_at": f"{path} x{c}", "port": j.port} for j in jobs])
        burst = self._summary(c, idle, (start, time.monotonic()), "qemu")
        self._shared(migs, before, burst)
        burst["migrations"] = migs
        self.all.extend(migs)
        ok = sum(bool(x.get("integrity_ok")) for x in migs)
        self._said(f"{path} QEMU x{c}: {ok}/{c} ran on", burst)

    def _shared(self, migs: list[dict[str, Any]], before: dict[str, dict[int, int]],
                burst: dict[str, Any]) -> None:
        """Each migration's spine (the counters since ``before``) and its rate under max-min
        sharing of the paths they really took (``testbed.results.sharing``): the model's R."""
        after = self.ports.read()
        for mig in migs:
            mig["spine"], mig["spine_bytes"] = carrier(before, after, mig["port"])
        burst["background_spine"] = carrier(before, after, BACKGROUND_PORT)[0] \
            if self.background else None
        done = [m for m in migs if m.get("completed") and m.get("bytes_on_wire")]
        if done:
            shares = path_shares(self.spec, self.path, done, burst["background_spine"],
                                 self.base["iperf3_mbps"])
            for mig in done:
                mig["fair_share_mbps"], mig["final_share_mbps"] = shares[mig["case"]]
                mig["fair_share_by"] = "max-min over the measured paths"

    def _summary(self, c: int, idle: tuple[float, float], span: tuple[float, float],
                 who: str) -> dict[str, Any]:
        rel = (span[0] - self.base_t, span[1] - self.base_t)
        burst = _burst_summary(self.spec, c, self.sampler, bool(self.background), rel, idle,
                               self.base_t) | {"hypervisor": who}
        self.result["bursts"].append(burst)
        self.windows.append((burst, idle, span))  # the probe's, read once it stopped
        return burst

    def _said(self, what: str, burst: dict[str, Any]) -> None:
        self.progress(f"{self.spec.name}/{what}, spines peak " + ", ".join(
            f"{s} {v['peak_util'] or 0:.0%}" for s, v in burst["spines"].items()))

    def stop(self) -> None:
        self.sampler.stop()
        self.probe.stop()
        self.ports.stop()
        for proc in self.background:  # client and server: the next path starts its own
            if proc.poll() is None:
                proc.kill()

    def finish(self) -> dict[str, Any]:
        for burst, idle, span in self.windows:
            burst["management"] = {"idle": self.probe.window(*idle),
                                   "burst": self.probe.window(*span)}
        self.result["series"] = self.sampler.series()
        self.result["sampler_error"] = self.sampler.error
        self.result["sampler_dropped_samples"] = self.sampler.dropped
        return self.result


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


def path_shares(spec: CoreLoadSpec, path: str, migs: list[dict[str, Any]],
                background_spine: str | None, iperf3_mbps: float
                ) -> dict[str, tuple[float, float]]:
    """Mbit/s per migration (by case), on average and at its end, when the burst's flows
    share their links max-min fairly: on average over its own transfer, each starting when
    its round 0 really began (its agent's start-up varies by up to a second in a burst on
    this machine, so the members overlap only in part) and the rates shared again as flows
    start and end; at its end among the flows still sending when it paused
    (:func:`at_pause`; else as the fluid model ends them). The links: the source host's
    stack link (or its cap), the source leaf's uplink to the spine it took, that spine's
    downlink to the last leaf, the destination's stack link; beside them the tenant flow at
    its offered rate. Links in iperf3's goodput units (the path's iperf3 over its link's
    rate)."""
    host = min(spec.host_link_mbps, spec.migration_cap_mbps) if path == "capped" \
        else spec.host_link_mbps
    eff = iperf3_mbps / min(host, spec.fabric_link_mbps) * 1e6 / 8
    times = _timeline(migs)
    capacity: dict[str, float] = {}
    flows = []
    for m in migs:
        links = [f"up:{m['src']}", f"down:{m['dst']}"]
        capacity[links[0]] = host * eff
        capacity[links[1]] = spec.host_link_mbps * eff
        if m.get("spine"):
            links += [f"uplink:{m['spine']}", f"downlink:{m['spine']}"]
        start = times[m["case"]][0] if times else 0.0
        flows.append(Flow(m["case"], tuple(links), float(m["bytes_on_wire"]), start=start))
    for s in range(1, spec.spines + 1):
        capacity[f"uplink:s{s}"] = capacity[f"downlink:s{s}"] = spec.fabric_link_mbps * eff
    if spec.background_flow and background_spine:
        flows.append(Flow("background", (f"uplink:{background_spine}",
                                         f"downlink:{background_spine}"),
                          math.inf, spec.background_mbps * 1e6 / 8))
    ends = endings(flows, capacity)
    last = at_pause(times, flows, capacity) if times else {}
    out = {}
    for f in flows[:len(migs)]:
        avg = f.volume / max(ends[f.name].seconds - f.start, 1e-9)
        out[f.name] = (round(avg * 8 / 1e6, 3),
                       round(last.get(f.name, ends[f.name].final_rate) * 8 / 1e6, 3))
    return out


def _timeline(migs: list[dict[str, Any]]) -> dict[str, tuple[float, float, float]]:
    """Each migration's round 0, pause and decision in seconds after the burst's first
    round 0, from the sources' CLOCK_MONOTONIC stamps (empty unless every one has them)."""
    stamps = {m["case"]: m.get("monotonic_s") or {} for m in migs}
    if not all({"round0", "pause", "decided"} <= set(v) for v in stamps.values()):
        return {}
    origin = min(v["round0"] for v in stamps.values())
    return {c: (v["round0"] - origin, v["pause"] - origin, v["decided"] - origin)
            for c, v in stamps.items()}


def at_pause(times: dict[str, tuple[float, float, float]], flows: list[Flow],
             capacity: dict[str, float]) -> dict[str, float]:
    """Each migration's max-min rate (bytes/s) among the flows still sending when it paused:
    what its last dirty set got. Who still sends is measured (the others' round 0 and
    decision around its pause), not the fluid model's order of endings: TCP shares
    unevenly, so the migration the model has end last may well have paused first."""
    rates = {}
    for case, (_, pause, _) in times.items():
        running = [f for f in flows if f.name == case or f.name not in times or
                   times[f.name][0] <= pause < times[f.name][2]]
        rates[case] = max_min(running, capacity)[case]
    return rates


def _start_background(lab: Lab, src: str, dst: str, src_ip: str, dst_ip: str,
                      mbps: float) -> list[Any]:
    """A tenant-like TCP flow at ``mbps`` between the replication stacks, for the whole path:
    its server and its client."""
    import subprocess

    port = str(BACKGROUND_PORT)
    server = lab.popen(dst, ["iperf3", "-s", "-p", port], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    client = lab.popen(src, ["iperf3", "-c", dst_ip, "-B", src_ip, "-p", port, "-t", "3600",
                             "-b", f"{mbps}M"],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return [server, client]


def _burst_summary(spec: CoreLoadSpec, c: int, sampler: CounterSampler, background: bool,
                   rel: tuple[float, float], idle: tuple[float, float],
                   base_t: float) -> dict[str, Any]:
    """Spine load, ECMP balance and the tenant flow's rate over one burst (``rel``: seconds
    since the path's start; ``idle``: the window before it)."""
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
            "background": bg, "migrations": []}



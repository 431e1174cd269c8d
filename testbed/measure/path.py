"""Path measurements between two lab nodes: ping RTT and an iperf3 baseline."""

from __future__ import annotations

import json
import re
import statistics
import subprocess
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..lab.lab import Lab

IPERF_PORT = 5201


def ping(lab: Lab, src: str, dst_ip: str, count: int = 20,
         interval_s: float = 0.2) -> dict[str, Any]:
    """RTT percentiles (ms) and loss of ``count`` pings from ``src`` to ``dst_ip``."""
    proc = lab.run(src, ["ping", "-n", "-c", str(count), "-i",
                         str(interval_s), "-W", "2", dst_ip], check=False,
                   timeout=count * interval_s + 30)
    rtts = [float(m) for m in re.findall(r"time=([\d.]+) ms", proc.stdout)]
    sent = count
    received = len(rtts)
    if not rtts:
        return {"sent": sent, "received": 0, "loss_pct": 100.0, "error": proc.stdout[-300:]}
    q = statistics.quantiles(rtts, n=100, method="inclusive") if len(rtts) > 1 else rtts * 99
    return {
        "sent": sent, "received": received,
        "loss_pct": round(100.0 * (sent - received) / sent, 2),
        "rtt_min_ms": min(rtts), "rtt_mean_ms": round(statistics.fmean(rtts), 3),
        "rtt_p50_ms": round(q[49], 3), "rtt_p99_ms": round(q[98], 3), "rtt_max_ms": max(rtts),
        "rtts_ms": rtts,
    }


def iperf3(lab: Lab, client: str, server: str, server_ip: str, seconds: float = 5.0,
           streams: int = 1, window: str | None = None, bind: str | None = None,
           port: int = IPERF_PORT, server_bind: str | None = None,
           server_port: int | None = None, omit_s: float = 0.0,
           tool: str = "auto") -> dict[str, Any]:
    """Throughput (Mbit/s) of an iperf3 TCP test from ``client`` to ``server``.

    ``tool``: ``lib`` runs the client through libiperf (``testbed.measure.iperf3_client``,
    forked into the node by the fork server), ``cli`` the ``iperf3`` command; ``auto`` the
    library unless the run's JSON would not fit its pipe (long runs, many streams). The result
    says which (``tool``).

    ``iperf3_mbps`` is the whole run's rate from a cold start, as a migration starts;
    ``delivered`` the receiver's cumulative bytes per second of it (how long any number of
    bytes takes on this path from a cold start: ``testbed.results.model``'s path curve);
    ``steady_mbps`` leaves the first ``omit_s`` seconds (slow start on a long path) out: the
    median of the receiver's whole one-second intervals after it. A median, not a mean: when
    slow start overshoots the bottleneck queue, the receiver holds everything behind the
    lost segments until their retransmissions arrive, then hands it to the application at
    once, so one interval after the loss shows more than the link carried in it (measured
    through the appliance at 150 ms and 100 Mbit/s: 112 Mbit/s in the second after the
    overshoot, 95.7 in the next ones, 95.7 being what the link carries).

    ``server_ip``/``port``: where the client connects; ``server_bind``/``server_port``: where
    the server listens (they differ behind a NAT gateway's published port).
    """
    listen = server_port or port
    if window:  # iperf3 refuses a -w beyond the kernel's maxima (net.core.[rw]mem_max, not
        # per namespace): raise them as the agents do for a BDP-sized buffer
        from agents.wire.transport import raise_buffer_sysctls

        raise_buffer_sysctls(_bytes(window))
    srv = lab.popen(server, ["iperf3", "-s", "-1", "-J", "-p", str(listen),
                             *(["-B", server_bind] if server_bind else [])],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        _wait_listening(lab, server, listen)
        use = _choose_tool(tool, seconds, streams)
        if use == "libiperf":
            args = ["--server", server_ip, "--port", str(port), "--seconds", str(seconds),
                    "--streams", str(streams), *(["--window", str(_bytes(window))]
                                                 if window else []),
                    *(["--bind", bind] if bind else [])]
            child = lab.spawn_agent(client, args, stdout=subprocess.PIPE,
                                    stderr=subprocess.PIPE, text=True, entry="iperf3")
            try:
                out, err = child.communicate(timeout=seconds + 60)
            except subprocess.TimeoutExpired:
                child.kill()
                raise RuntimeError(f"iperf3 (libiperf) {client}->{server_ip}: no result "
                                   f"after {seconds + 60:.0f} s") from None
            rc = child.returncode
        else:
            cmd = ["iperf3", "-c", server_ip, "-p", str(port), "-J", "-t", str(seconds),
                   "-P", str(streams), "--get-server-output"]
            if window:
                cmd += ["-w", window]
            if bind:
                cmd += ["-B", bind]
            proc = lab.run(client, cmd, check=False, timeout=seconds + 60)
            out, err, rc = proc.stdout, proc.stderr, proc.returncode
        try:
            doc = json.loads(out or "{}")
        except ValueError:
            doc = {"error": f"not JSON: {out[-300:]!r}"}
        if "error" in doc or rc != 0:
            raise RuntimeError(f"iperf3 ({use}) {client}->{server_ip} failed: "
                               f"{doc.get('error', (err or '').strip()[-500:])}")
        end = doc["end"]
        # the receiver's intervals (the sender's count what its socket took, queues included)
        received = (doc.get("server_output_json") or {}).get("intervals") or []
        late = [i["sum"] for i in received
                if i["sum"]["start"] >= omit_s and i["sum"]["seconds"] >= 0.9]
        steady = statistics.median(i["bytes"] * 8 / i["seconds"] for i in late) if late else 0
        delivered, total = [], 0
        for i in received:  # the receiver's cumulative bytes: the path's curve from cold
            total += i["sum"]["bytes"]
            delivered.append([round(i["sum"]["end"], 3), total])
        return {
            "iperf3_mbps": round(end["sum_received"]["bits_per_second"] / 1e6, 3),
            "steady_mbps": round(steady / 1e6, 3) if late else None,
            "delivered": delivered,  # [seconds since the start, bytes received by then]
            "sender_mbps": round(end["sum_sent"]["bits_per_second"] / 1e6, 3),
            "retransmits": end["sum_sent"].get("retransmits"),
            "seconds": seconds, "omit_s": omit_s, "streams": streams, "tool": use,
        }
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()


BASELINE_RUNS = 3  # iperf3 runs whose median is a path's baseline


def iperf3_median(lab: Lab, client: str, server: str, server_ip: str,
                  runs: int = BASELINE_RUNS, **kwargs: Any) -> dict[str, Any]:
    """:func:`iperf3` ``runs`` times one after the other: the run with the median rate, and
    every run's rate (``runs_mbps``). A baseline every migration on the path is judged by must
    not be one run at the mercy of whatever else this 2-core machine (or the TCG appliance)
    does then: measured, 817 Mbit/s with 419 retransmissions once on a 1 Gbit/s fabric path
    where six other runs gave 945-957 and none, and 57.8 Mbit/s without a retransmission on
    the 250 Mbit/s cloud path, its slow start taking 4 s, right after the previous kind's
    QEMU guests had run through the appliance (the migrations then got 208-214)."""
    got = [iperf3(lab, client, server, server_ip, **kwargs) for _ in range(max(1, runs))]
    chosen = sorted(got, key=lambda r: r["iperf3_mbps"])[len(got) // 2]
    return chosen | {"runs_mbps": [r["iperf3_mbps"] for r in got]}


def _choose_tool(tool: str, seconds: float, streams: int) -> str:
    from .iperf3_client import fits

    if tool not in ("auto", "lib", "cli"):
        raise ValueError(f"iperf3 tool {tool!r}: expected auto, lib or cli")
    if tool == "cli" or (tool == "auto" and not fits(seconds, streams)):
        return "cli"
    return "libiperf"


def _bytes(size: str) -> int:
    """iperf3's -w size ("262144", "256K", "4M") in bytes."""
    units = {"k": 1 << 10, "m": 1 << 20, "g": 1 << 30}
    s = size.strip().lower()
    return int(float(s[:-1]) * units[s[-1]]) if s and s[-1] in units else int(s)


def _wait_listening(lab: Lab, node: str, port: int, limit_s: float = 15.0) -> None:
    """Wait until a TCP socket listens on ``port`` in ``node`` (without connecting to it)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        out = lab.run(node, ["ss", "-Hltn", f"sport = :{port}"], check=False).stdout
        if out.strip():
            return
        time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} in {node} after {limit_s} s")


@dataclass(frozen=True)
class BulkFlow:
    """One flow of a :func:`bulk_burst`: ``client`` sends to ``server_ip`` (on ``server``)
    at ``port``, from its address ``bind``."""

    client: str
    server: str
    server_ip: str
    port: int
    bind: str | None = None


def bulk_burst(lab: Lab, flows: list[BulkFlow], nbytes: int,
               timeout_s: float = 120.0) -> list[dict[str, Any]]:
    """``flows`` each send ``nbytes`` at once (one iperf3 process per flow, ``-n``): per flow,
    the seconds it took from its own start and when it started and ended on one clock
    (seconds after the first client was started; a client's start is when it was launched,
    a few ms before its first byte). What TCP alone makes of a burst's sharing: no memory to
    read, nothing dirtied, the same bytes over the same links."""
    servers = [lab.popen(f.server, ["iperf3", "-s", "-1", "-p", str(f.port)],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) for f in flows]
    clients: list[subprocess.Popen[str]] = []
    launched: list[float] = []
    try:
        for f in flows:
            _wait_listening(lab, f.server, f.port)
        for f in flows:
            launched.append(time.monotonic())
            clients.append(lab.popen(
                f.client, ["iperf3", "-c", f.server_ip, "-p", str(f.port), "-n", str(nbytes),
                           "-J", *(["-B", f.bind] if f.bind else [])],
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
        docs = []
        for f, c in zip(flows, clients, strict=True):
            try:
                out, err = c.communicate(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                raise RuntimeError(f"iperf3 {f.client}->{f.server_ip}:{f.port}: no result "
                                   f"after {timeout_s:.0f} s") from None
            doc = json.loads(out or "{}") if (out or "").lstrip().startswith("{") else \
                {"error": (err or out or "").strip()[-300:]}
            if "error" in doc or c.returncode != 0:
                raise RuntimeError(f"iperf3 {f.client}->{f.server_ip}:{f.port} failed: "
                                   f"{doc.get('error')}")
            docs.append(doc)
    finally:
        for p in [*clients, *servers]:
            if p.poll() is None:
                p.kill()
            p.wait()
    origin = min(launched)
    out = []
    for f, d, t0 in zip(flows, docs, launched, strict=True):
        secs = d["end"]["sum_sent"]["seconds"]
        out.append({"client": f.client, "server": f.server, "port": f.port,
                    "seconds": round(secs, 4), "start_s": round(t0 - origin, 4),
                    "end_s": round(t0 - origin + secs, 4),
                    "retransmits": d["end"]["sum_sent"].get("retransmits")})
    return out

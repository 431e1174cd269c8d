"""The pre-copy model for a QEMU migration, with QEMU's own stop rule.

QEMU 7.2 (migration/migration.c, ``migration_update_counters``) measures its bandwidth over
windows of 100 ms (``BUFFER_DELAY``) and sets ``threshold_size = bandwidth * downtime_limit``.
``migration_iteration_run`` asks for the pending bytes; ram.c's ``ram_save_pending`` syncs the
dirty bitmap only once what is left of the current pass is below that threshold, and if the
pending bytes after the sync are still below it, QEMU stops the guest and sends them. Between
checks ``ram_save_iterate`` sends for up to 50 ms (``MAX_WAIT``): one *step*. So QEMU stops
with up to a threshold's worth of the current pass still unsent (on average
``threshold - step / 2``): its stop-and-copy, and its downtime, sit just under the limit
however little the guest dirties. (On a long path QEMU's writes block on its full socket and
a step is the burst it writes when the kernel wakes it, 7.5-15 MB at 100-200 ms here, more than
the threshold: its stop-and-copy is then anything from 0 to the threshold, and the guest
waits for all its socket had not had acknowledged at the stop, which no forecast input
gives; the forecast keeps the short-path step.) With V the full pages of the first pass, R
iperf3 on the same path (as for the agents), B the bandwidth QEMU measured itself (its
``mbps``), D the dirty rate QEMU measured (``dirty-pages-rate``), thr = B x limit,
u = thr - R x 50 ms / 2:

    pass 1 sends V in T1 = C(V); d = D x T1 is dirty at the first check
    while u + d >= thr: a short pass re-sends d (at least one step), d = D x its length
    T_mig  = setup + C(V + the re-sent bytes + d) + RTT / 2
    T_down = (Q + u + d) / R + RTT / 2    (vCPUs stop at the source -> run at the destination)

C(x) is the time x bytes take on the path from a cold start, as iperf3 delivered them
(``testbed.results.model.PathCurve``; V / R where the document has no curve), R iperf3's
steady rate. The half round trip is the last byte's way to the destination: the measured
times end when the destination's guest runs (``agents.qemu.stats.end_to_end``); for
documents with QEMU's own times (``timing`` "qemu-source": the source's last write) it is
left out. Q is what QEMU had written into its sockets and the network had not taken yet when
it stopped the guest (measured: ``socket_backlog_at_stop``, the larger of the unsent bytes and
the unacknowledged ones beyond one round trip in flight): the stop-and-copy queues behind it.
QEMU sets no TCP_NOTSENT_LOWAT, so the kernel's autotuned send buffer (up to tcp_wmem's max)
holds megabytes on a long path, and a guest that QEMU reports down for a few ms stays paused
until they have crossed.

QEMU's ``dirty_sync_count`` is the passes plus two (the setup's sync and the stop's); the
forecast's ``rounds`` is in that unit. No round trip per pass: plain pre-copy streams
without acknowledgements.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from typing import Any

from . import model as predict


@dataclass(frozen=True)
class QemuInputs:
    volume_bytes: float  # V: full pages of the first pass (zero pages travel as flags)
    rate_bytes_s: float  # R: iperf3 on the same path, shared by the migrations beside it
    dirty_bytes_s: float  # D: QEMU's dirty-pages-rate x page size
    qemu_bandwidth_bytes_s: float  # B_qemu: QEMU's own measured bandwidth (its stop rule)
    downtime_limit_ms: float
    max_rounds: int  # the forced stop (dirty-sync-count), see agents.qemu.driver
    setup_s: float = 0.0
    one_way_s: float = 0.0  # the last byte's way to the destination (RTT / 2)
    backlog_bytes: float = 0.0  # Q: queued in the source's sockets when the guest stopped
    curve: predict.PathCurve | None = None  # C: the path from a cold start (else V / R)

    def cold(self, nbytes: float) -> float:
        """Seconds ``nbytes`` take from a cold start on the path."""
        return self.curve.time_for(nbytes) if self.curve else nbytes / self.rate_bytes_s


STEP_S = 0.05  # ram_save_iterate's MAX_WAIT: how long QEMU sends between two checks


def forecast(inp: QemuInputs) -> predict.Forecast:
    """Syncs, total time and downtime by QEMU 7.2's rule (module docstring)."""
    r = inp.rate_bytes_s
    thr = inp.qemu_bandwidth_bytes_s * inp.downtime_limit_ms / 1000.0
    lam = inp.dirty_bytes_s / r
    way, queued = inp.one_way_s, inp.backlog_bytes / r
    if inp.volume_bytes < thr:  # all of it fits the limit: stop at the first check
        return predict.Forecast(2, inp.setup_s + inp.cold(inp.volume_bytes) + way,
                                (queued + inp.volume_bytes / r + way) * 1000.0, lam)
    u = max(0.0, thr - r * STEP_S / 2)
    d = inp.dirty_bytes_s * inp.cold(inp.volume_bytes)
    resent, short = 0.0, 0
    while u + d >= thr and short + 3 < inp.max_rounds:
        resent += d
        d = inp.dirty_bytes_s * max(STEP_S, d / r)
        short += 1
    if u + d >= thr:  # forced at the round limit: the rest goes in the downtime
        u = thr
    total = inp.setup_s + inp.cold(inp.volume_bytes + resent + d) + way
    return predict.Forecast(3 + short, total, (queued + (u + d) / r + way) * 1000.0, lam)


def inputs_from(m: dict[str, Any]) -> QemuInputs | None:
    """The model's inputs from one QEMU result (None: too little was measured)."""
    curve = None if m.get("fair_share_mbps") else predict.PathCurve.of(m)
    rate_mbps = m.get("fair_share_mbps") or (m.get("iperf3_steady_mbps") if curve else
                                             m.get("iperf3_mbps"))
    sent = m.get("pages_sent_per_round") or []
    iters = m.get("iterations") or []
    if not rate_mbps or not sent or not sent[0]:
        return None
    ps = m.get("page_size") or 4096
    rates = [it["dirty_pages_rate"] for it in iters[1:] if it.get("dirty_pages_rate")]
    dirty = statistics.mean(rates) * ps if rates else 0.0
    bws = [it["mbps"] for it in iters if it.get("mbps")] + \
        ([m["qemu_mbps"]] if m.get("qemu_mbps") else [])
    qemu_bw = statistics.median(bws) * 1e6 / 8 if bws else rate_mbps * 1e6 / 8
    rtt_ms = m.get("rtt_measured_ms") or m.get("rtt_ms") or 0.0
    lived = m.get("timing") == "guest-resumed-at-destination"
    rate = rate_mbps * 1e6 / 8
    return QemuInputs(sent[0] * ps, rate, dirty, qemu_bw,
                      m.get("downtime_limit_ms") or m.get("downtime_target_ms") or 300.0,
                      m.get("max_iterations") or m.get("max_rounds") or 30,
                      (m.get("setup_time_ms") or 0.0) / 1000.0,
                      rtt_ms / 2000.0 if lived else 0.0,
                      backlog(m.get("socket_backlog_at_stop"), rate, rtt_ms / 1000.0)
                      if lived else 0.0, curve)


def backlog(at_stop: dict[str, Any] | None, rate_bytes_s: float, rtt_s: float) -> float:
    """Bytes the stop-and-copy queued behind at the source: unsent, or unacknowledged beyond
    what one round trip keeps in flight at the path's rate (those are on their way)."""
    if not at_stop:
        return 0.0
    beyond_flight = at_stop.get("send_q_bytes", 0) - rate_bytes_s * rtt_s
    return float(max(at_stop.get("notsent_bytes", 0), beyond_flight, 0))


def written_after_last_poll(m: dict[str, Any]) -> tuple[float, bool] | None:
    """Bytes QEMU wrote into its socket after its last ``query-migrate`` poll before the STOP
    (its final count less that poll's: the driver's ``polls``), and whether its count stood
    still at that poll. Where the path is short QEMU writes without pause and these bytes are
    the stop-and-copy plus at most one poll interval of the pass before. Where its socket is
    full QEMU's writes block and its count stands still (at 100-200 ms here it advances in
    bursts of about a third of the send buffer, 7.5-15 MB, every 250-510 ms: the kernel wakes a
    blocked writer once a third of the buffer is free); QEMU checks its stop rule after each
    burst, so these bytes are then the burst it wrote on waking plus the stop-and-copy. None
    without polls."""
    stop = m.get("source_stopped_at_unix")
    before = [p for p in m.get("polls") or () if stop and p[0] <= stop]
    if not before or not m.get("bytes_on_wire"):
        return None
    still = len(before) > 1 and before[-1][1] == before[-2][1]
    return float(max(0, m["bytes_on_wire"] - before[-1][1])), still


def prediction(m: dict[str, Any]) -> dict[str, Any] | None:
    """Beside the measured QEMU migration: the same keys as ``report.prediction_for``."""
    if not m.get("completed"):
        return None
    inp = inputs_from(m)
    if inp is None:
        return None
    f = forecast(inp)
    # not a forecast: how long what QEMU had not yet put on the wire at its last poll (the
    # socket's backlog sampled then, plus what it wrote after) took at iperf3's rate, i.e.
    # whether the path carried the drain at that rate: the forecast cannot know the backlog
    # at the stop (a full socket after QEMU's last burst) nor its stop-and-copy (up to thr)
    after = written_after_last_poll(m)
    drained = None if after is None else \
        ((inp.backlog_bytes + after[0]) / inp.rate_bytes_s + inp.one_way_s) * 1000.0
    dev_t = predict.deviation(m.get("migration_time_s") or 0.0, f.migration_time_s)
    dev_d = predict.deviation(m.get("downtime_ms") or 0.0, f.downtime_ms)
    return {"lambda": f.ratio, "rounds": f.rounds, "migration_time_s": f.migration_time_s,
            "downtime_ms": f.downtime_ms, "deviation_time": dev_t, "deviation_downtime": dev_d,
            "rate_mbps": inp.rate_bytes_s * 8 / 1e6, "dirty_mbs": inp.dirty_bytes_s / 1e6,
            "volume_mib": inp.volume_bytes / 2**20,
            "qemu_bandwidth_mbps": inp.qemu_bandwidth_bytes_s * 8 / 1e6,
            "threshold_mib": inp.qemu_bandwidth_bytes_s * inp.downtime_limit_ms / 1000 / 2**20,
            "stop_rule": "QEMU 7.2: pending after a sync < its measured bandwidth x limit",
            "written_after_last_poll_mib": None if after is None else after[0] / 2**20,
            "count_still_at_last_poll": None if after is None else after[1],
            "downtime_given_drain_ms": drained,
            "flag": predict.flagged(dev_t) or predict.flagged(dev_d)}

"""QEMU's own figures, from the ``query-migrate`` replies the driver polled: per-iteration
samples and the one result document (field names shared with the agents' result)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Iterations:
    """One entry per dirty-bitmap sync seen: the state at the start of that iteration.

    The driver polls; iterations shorter than its poll interval merge into the next one
    (``missed_syncs`` counts the sync numbers never seen)."""

    items: list[dict[str, Any]] = field(default_factory=list)
    missed_syncs: int = 0
    # every poll: [unix time, transferred, remaining, QEMU's mbps, dirty-sync-count]
    polls: list[list[float]] = field(default_factory=list)
    _last_sync: int = 0

    def observe(self, t_s: float, info: dict[str, Any], at_unix: float = 0.0) -> None:
        ram = info.get("ram") or {}
        sync = int(ram.get("dirty-sync-count", 0))
        self.polls.append([round(at_unix, 4), ram.get("transferred", 0),
                           ram.get("remaining", 0), round(ram.get("mbps", 0.0), 1), sync])
        if sync <= self._last_sync:
            return
        self.missed_syncs += max(0, sync - self._last_sync - 1)
        self._last_sync = sync
        self.items.append({
            "iteration": sync, "at_s": round(t_s, 3),
            "transferred_bytes": ram.get("transferred", 0),
            "remaining_bytes": ram.get("remaining", 0),
            "normal_pages": ram.get("normal", 0), "zero_pages": ram.get("duplicate", 0),
            "dirty_pages_rate": ram.get("dirty-pages-rate", 0),
            "pages_per_second": ram.get("pages-per-second", 0),
            "mbps": ram.get("mbps", 0.0), "status": info.get("status")})


def pages_per_round(iterations: list[dict[str, Any]], final: dict[str, Any]) -> list[int]:
    """Full pages sent in each observed iteration (the last closes at the final count)."""
    marks = [it["normal_pages"] for it in iterations] + [final.get("normal", 0)]
    return [max(0, b - a) for a, b in zip(marks, marks[1:], strict=False)]


def event_time(event: dict[str, Any]) -> float:
    """A QMP event's timestamp (QEMU's host clock: the same realtime as ``time.time()``)."""
    ts = event.get("timestamp") or {}
    return float(ts.get("seconds", 0)) + float(ts.get("microseconds", 0)) / 1e6


def end_to_end(issued_at: float, source_events: list[dict[str, Any]],
               destination_events: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The migration as the guest lives it, from both QEMUs' event timestamps (one host
    clock): ``migrate`` issued -> the destination has it all (its MIGRATION "completed", or
    its RESUME if later), and the downtime: the source's last STOP (vCPUs stopped for the
    stop-and-copy) -> the destination's RESUME (its vCPUs run; with postcopy that is the
    switch to postcopy, the rest following while the guest runs there). None without the
    destination's events.

    QEMU's own ``total-time`` and ``downtime`` end when the source has *written* the last
    byte into its socket; on a long path with an autotuned send buffer that is up to a
    buffer's worth before the destination has it (measured: QEMU's goodput 1.6-1.7x iperf3's
    at 150-200 ms). These end where the agents' do: the guest running at the destination.
    """
    resumed = [event_time(e) for e in destination_events if e.get("event") == "RESUME"]
    stopped = [event_time(e) for e in source_events if e.get("event") == "STOP"]
    if not resumed:
        return None
    resume = resumed[-1]
    done = [event_time(e) for e in destination_events if e.get("event") == "MIGRATION"
            and (e.get("data") or {}).get("status") == "completed"]
    stop = max((t for t in stopped if t <= resume), default=None)
    return {"migration_time_s": round(max([resume, *done]) - issued_at, 3),
            "downtime_ms": round((resume - stop) * 1e3, 1) if stop is not None else None,
            "source_stopped_at_unix": stop}


def result(info: dict[str, Any], iterations: Iterations, *, wall_s: float,
           guest_check: dict[str, Any], settings: dict[str, Any],
           lived: dict[str, Any] | None = None) -> dict[str, Any]:
    """The result document of one QEMU migration (``info``: the last ``query-migrate``;
    ``lived``: :func:`end_to_end`'s times, which the result's times and goodput use when
    there: the guest running at the destination, as for the agents)."""
    ram = info.get("ram") or {}
    status = info.get("status", "unknown")
    completed = status == "completed"
    total_ms = info.get("total-time")
    transferred = int(ram.get("transferred", 0))
    qemu_time_s = (total_ms / 1000.0) if total_ms else wall_s
    lived = lived if completed and lived else None
    time_s = lived["migration_time_s"] if lived else qemu_time_s
    downtime = lived.get("downtime_ms") if lived else None
    stopped_at = lived.get("source_stopped_at_unix") if lived else None
    return {
        "hypervisor": "qemu",
        "completed": completed,
        "status": status,
        "image_bytes": int(ram.get("total", 0)),
        "bytes_on_wire": transferred,  # QEMU's migration-stream bytes (before TLS framing)
        "rounds": int(ram.get("dirty-sync-count", 0)),
        "pages_sent_per_round": pages_per_round(iterations.items, ram),
        "zero_pages": int(ram.get("duplicate", 0)),
        "page_size": int(ram.get("page-size") or 4096),
        "migration_time_s": round(time_s, 3),
        "downtime_ms": (downtime if downtime is not None else info.get("downtime"))
        if completed else None,
        # which clock the two above are: the guest's (source STOP / destination RESUME
        # events) or QEMU's own (the source's last write)
        "timing": "guest-resumed-at-destination" if lived else "qemu-source",
        "qemu_total_time_ms": total_ms,
        "qemu_downtime_ms": info.get("downtime") if completed else None,
        "qemu_goodput_mbps": round(transferred * 8 / qemu_time_s / 1e6, 3)
        if qemu_time_s else 0.0,
        "source_stopped_at_unix": stopped_at,
        "setup_time_ms": info.get("setup-time"),
        "expected_downtime_ms": info.get("expected-downtime"),
        "goodput_mbps": round(transferred * 8 / time_s / 1e6, 3) if time_s else 0.0,
        "qemu_mbps": ram.get("mbps"),  # QEMU's own throughput of the last iteration
        "pages_per_second": ram.get("pages-per-second"),
        "dirty_sync_count": int(ram.get("dirty-sync-count", 0)),
        "postcopy_requests": ram.get("postcopy-requests"),
        "multifd_bytes": ram.get("multifd-bytes"),
        "iterations": iterations.items,
        "missed_syncs": iterations.missed_syncs,
        "polls": iterations.polls,
        "cpu_throttle_percentage": info.get("cpu-throttle-percentage"),
        # QEMU reported completion AND the guest ran on at the destination, its heartbeat
        # counter carrying on from the source's (its memory came across); no page compare
        "integrity_ok": bool(completed and guest_check.get("destination_running")
                             and guest_check.get("heartbeat_continued")),
        "guest": guest_check,
        "error": info.get("error-desc"),
        **settings,
    }

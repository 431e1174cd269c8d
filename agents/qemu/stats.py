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
    _last_sync: int = 0

    def observe(self, t_s: float, info: dict[str, Any]) -> None:
        ram = info.get("ram") or {}
        sync = int(ram.get("dirty-sync-count", 0))
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


def result(info: dict[str, Any], iterations: Iterations, *, wall_s: float,
           guest_check: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
    """The result document of one QEMU migration (``info``: the last ``query-migrate``)."""
    ram = info.get("ram") or {}
    status = info.get("status", "unknown")
    completed = status == "completed"
    total_ms = info.get("total-time")
    transferred = int(ram.get("transferred", 0))
    time_s = (total_ms / 1000.0) if total_ms else wall_s
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
        "downtime_ms": info.get("downtime") if completed else None,
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
        "cpu_throttle_percentage": info.get("cpu-throttle-percentage"),
        # QEMU reported completion AND the guest ran on at the destination, its heartbeat
        # counter carrying on from the source's (its memory came across); no page compare
        "integrity_ok": bool(completed and guest_check.get("destination_running")
                             and guest_check.get("heartbeat_continued")),
        "guest": guest_check,
        "error": info.get("error-desc"),
        **settings,
    }

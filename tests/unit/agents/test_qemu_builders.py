"""The QEMU package's pure parts: command lines, QMP settings, the cpio writer, the result."""

from __future__ import annotations

import json
import socket
import threading
from pathlib import Path

import pytest

from agents.qemu import stats
from agents.qemu.command import (
    TLS_ID,
    UNLIMITED_BPS,
    Guest,
    Options,
    Paths,
    capabilities,
    parameters,
    qemu_argv,
    uri,
)
from agents.qemu.image import cpio_archive
from agents.qemu.qmp import QMP, QMPError

KERNEL, INITRD = Path("/boot/vmlinuz-x"), Path("/cache/initramfs.cpio")


def test_destination_argv_is_the_source_argv_plus_incoming():
    g = Guest(ram_mib=256, dirty_mib=64)
    src = qemu_argv(g, KERNEL, INITRD, Paths(Path("/r"), "source"))
    dst = qemu_argv(g, KERNEL, INITRD, Paths(Path("/r"), "destination"))
    assert dst[-2:] == ["-incoming", "defer"]
    strip = [a.replace("destination", "source") for a in dst[:-2]]
    assert strip == src  # same machine: only the sockets' and console's names differ
    assert "tb.size=64" in src[src.index("-append") + 1]
    assert not any("9p" in a or "virtfs" in a or "virtiofs" in a for a in src)


def test_tls_object_endpoints_and_accel():
    src = qemu_argv(Guest(), KERNEL, INITRD, Paths(Path("/r"), "source"), accel="kvm", tls=True)
    dst = qemu_argv(Guest(), KERNEL, INITRD, Paths(Path("/r"), "destination"), tls=True)
    obj = src[src.index("-object") + 1]
    assert f"id={TLS_ID}" in obj and "endpoint=client" in obj and "dir=/r/tls-source" in obj
    assert "endpoint=server" in dst[dst.index("-object") + 1]
    assert src[src.index("-accel") + 1] == "kvm" and "max" in src


def test_settings_from_options():
    opts = Options(multifd_channels=4, compression="zstd", downtime_limit_ms=300,
                   max_bandwidth_mbps=250, auto_converge=True, tls=True)
    caps = {c["capability"]: c["state"] for c in capabilities(opts)}
    assert caps["multifd"] and caps["auto-converge"] and not caps["postcopy-ram"]
    assert "postcopy-preempt" not in caps
    src = parameters(opts, "source", "10.0.0.2")
    assert src["max-bandwidth"] == 250_000_000 // 8 and src["downtime-limit"] == 300
    assert src["multifd-compression"] == "zstd" and src["tls-hostname"] == "10.0.0.2"
    dst = parameters(opts, "destination")
    assert "downtime-limit" not in dst and dst["multifd-channels"] == 4
    assert parameters(Options(), "source")["max-bandwidth"] == UNLIMITED_BPS
    assert uri("fd00::2", 4444) == "tcp:[fd00::2]:4444"


@pytest.mark.parametrize("bad", [dict(compression="zstd"), dict(postcopy_preempt=True)])
def test_inconsistent_options_refused(bad):
    with pytest.raises(ValueError):
        Options(**bad)


def test_guest_needs_room_for_its_kernel():
    with pytest.raises(ValueError, match="too little"):
        Guest(ram_mib=64, dirty_mib=64)


def test_cpio_newc_layout():
    blob = cpio_archive([(".", 0o40755, b""), ("init", 0o100755, b"#!/bin/sh\n")],
                        [("dev/console", 5, 1)])
    assert blob.startswith(b"070701") and len(blob) % 512 == 0
    assert b"TRAILER!!!\0" in blob and b"init\0" in blob
    # each header is 110 bytes; the file's size field (7th) says 10 bytes
    second = blob.index(b"070701", 6)
    assert int(blob[second + 6 + 6 * 8: second + 6 + 7 * 8], 16) == 10


def test_iterations_and_result_fields():
    it = stats.Iterations()
    for t, sync, normal in ((0.0, 1, 10), (1.0, 1, 500), (2.0, 2, 900), (2.5, 4, 950)):
        it.observe(t, {"status": "active", "ram": {"dirty-sync-count": sync, "normal": normal,
                                                   "transferred": normal * 4096}})
    assert [i["iteration"] for i in it.items] == [1, 2, 4] and it.missed_syncs == 1
    assert [p[4] for p in it.polls] == [1, 1, 2, 4] and it.polls[1][1] == 500 * 4096
    info = {"status": "completed", "total-time": 2000, "downtime": 40, "setup-time": 3,
            "ram": {"total": 1 << 28, "transferred": 8_000_000, "normal": 960,
                    "dirty-sync-count": 4}}
    res = stats.result(info, it, wall_s=9.0, settings={},
                       guest_check={"destination_running": True, "heartbeat_continued": True})
    assert res["pages_sent_per_round"] == [890, 50, 10] and len(res["polls"]) == 4
    assert res["migration_time_s"] == 2.0 and res["goodput_mbps"] == 32.0
    assert res["integrity_ok"] and res["downtime_ms"] == 40 and res["rounds"] == 4
    res = stats.result(info, it, wall_s=9.0, settings={},
                       guest_check={"destination_running": True, "heartbeat_continued": False})
    assert not res["integrity_ok"]  # completion alone is not enough


def _ev(name: str, at: float, **data) -> dict:
    sec = int(at)
    return {"event": name, "timestamp": {"seconds": sec, "microseconds": round((at - sec) * 1e6)},
            **({"data": data} if data else {})}


def test_times_end_where_the_guest_runs_at_the_destination():
    # QEMU's own figures end at the source's last write (2.0 s, 40 ms); the guest was paused
    # at 101.9 and ran at the destination at 102.3: the result says so
    src_events = [_ev("MIGRATION", 100.0, status="active"), _ev("STOP", 101.9)]
    dst_events = [_ev("RESUME", 102.3), _ev("MIGRATION", 102.301, status="completed")]
    lived = stats.end_to_end(100.0, src_events, dst_events)
    assert lived == {"migration_time_s": 2.301, "downtime_ms": 400.0,
                     "source_stopped_at_unix": 101.9}
    info = {"status": "completed", "total-time": 2000, "downtime": 40,
            "ram": {"total": 1 << 28, "transferred": 8_000_000, "dirty-sync-count": 3}}
    res = stats.result(info, stats.Iterations(), wall_s=9.0, settings={}, lived=lived,
                       guest_check={})
    assert res["timing"] == "guest-resumed-at-destination"
    assert res["migration_time_s"] == 2.301 and res["downtime_ms"] == 400.0
    assert res["qemu_total_time_ms"] == 2000 and res["qemu_downtime_ms"] == 40
    assert res["goodput_mbps"] == round(64 / 2.301, 3) and res["qemu_goodput_mbps"] == 32.0
    # no RESUME seen (or a failed migration): QEMU's own figures, said so
    assert stats.end_to_end(100.0, src_events, []) is None
    res = stats.result(info, stats.Iterations(), wall_s=9.0, settings={}, lived=None,
                       guest_check={})
    assert res["timing"] == "qemu-source" and res["downtime_ms"] == 40
    # postcopy: the guest runs at the destination at the switch, the rest follows
    post = stats.end_to_end(100.0, src_events, [_ev("RESUME", 102.0),
                                                _ev("MIGRATION", 104.5, status="completed")])
    assert post == {"migration_time_s": 4.5, "downtime_ms": 100.0,
                    "source_stopped_at_unix": 101.9}


def test_qmp_client_against_a_scripted_server(tmp_path):
    path = str(tmp_path / "q.sock")
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(path)
    srv.listen(1)
    seen = []

    def serve():
        conn, _ = srv.accept()
        f = conn.makefile("rwb")
        f.write(b'{"QMP": {"version": {}, "capabilities": []}}\n')
        f.flush()
        for reply in (b'{"return": {}}\n',
                      b'{"event": "MIGRATION", "data": {"status": "active"}}\n'
                      b'{"return": {"status": "running"}}\n',
                      b'{"error": {"class": "GenericError", "desc": "nope"}}\n'):
            seen.append(json.loads(f.readline()))
            f.write(reply)
            f.flush()
        conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    with QMP.connect(path, wait_s=5) as q:
        assert q.execute("query-status") == {"status": "running"}
        assert q.event_names() == ["MIGRATION"]
        with pytest.raises(QMPError, match="GenericError: nope"):
            q.execute("migrate", uri="tcp:1.2.3.4:1")
    assert [m["execute"] for m in seen] == ["qmp_capabilities", "query-status", "migrate"]
    assert seen[2]["arguments"] == {"uri": "tcp:1.2.3.4:1"}
    srv.close()

"""Real migrations of real processes over loopback and between test-made namespaces."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
import uuid
from pathlib import Path

import pytest

import agents.source
from agents.memory.process import ProcessMemory, process_state
from agents.wire.sender import Sender
from tests.helpers import (
    PY,
    assert_runs_on,
    counter_of,
    destination,
    kill,
    migrate_in_process,
    run_source,
    workload,
)

pytestmark = pytest.mark.integration
def test_workload_live_migration_resumes_at_destination():
    with destination("--listen", "127.0.0.1:0") as (dproc, port):
        rc, res = run_source("--workload", "48M", "--dirty-rate", "40", "--to",
                             f"127.0.0.1:{port}", "--streams", "2", "--downtime-ms", "200")
        try:
            assert rc == 0, res["error"]
            assert res["completed"] and res["integrity_ok"] and res["resumed"]
            assert res["outcome"] == "completed" and res["decision"] == "committed"
            assert res["source_verified"] is True
            assert res["rounds"] >= 2 and len(res["pages_sent_per_round"]) == res["rounds"]
            assert res["pages_sent_per_round"][0] == 48 * 256
            assert res["dirty_tracking"] in ("uffd-wp-async+pagemap-scan", "soft-dirty",
                                             "page-hash")
            assert res["memory_reader"] == "shared-arena"  # the guest's memfd, mapped
            assert 0 < res["downtime_ms"] < 5000 and res["client_downtime_ms"] is not None
            assert res["counter_continuity_ok"] is True
            assert res["counter_first_at_destination"] >= res["counter_at_switchover"]
            assert res["bytes_on_wire"] < res["image_bytes"] * 1.5  # zero pages elided
            time.sleep(0.2)
            with pytest.raises(ProcessLookupError):
                os.kill(res["source_pid"], 0)  # the original ended only after the ACK
            c1 = counter_of(res["destination_service"])
            time.sleep(0.2)
            c2 = counter_of(res["destination_service"])
            assert c1 is not None and c2 > c1 >= res["counter_at_switchover"]
            assert dproc.wait(timeout=10) == 0
        finally:
            kill(res.get("destination_pid"))
            kill(res.get("source_pid"))


def test_destination_killed_midway_leaves_workload_running():
    with workload("--size", "64M", "--dirty-rate", "20") as (wproc, info), \
            destination("--listen", "127.0.0.1:0") as (dproc, port):
        src = subprocess.Popen([*PY, "source", "--pid", str(info["pid"]), "--to",
                                f"127.0.0.1:{port}", "--bandwidth-cap", "80",
                                "--preflight", "off", "--idle-timeout", "5"],
                               stdout=subprocess.PIPE, text=True)
        time.sleep(1.5)
        dproc.kill()
        out, _ = src.communicate(timeout=30)
        res = json.loads(out)
        assert src.returncode != 0 and not res["completed"] and res["error"]
        assert res["outcome"] == "rolled-back"
        time.sleep(0.2)
        assert_runs_on(info)


def test_preflight_refuses_a_migration_capped_below_the_floor_and_the_guest_runs_on():
    """A real probe on loopback: the path is fast, but a 50 Mbit/s cap is below vMotion's
    250 Mbit/s floor whatever held the probe back; with --preflight refuse nothing moves."""
    with workload("--size", "16M", "--dirty-rate", "8") as (wproc, info), \
            destination("--listen", "127.0.0.1:0") as (dproc, port):
        src = subprocess.run([*PY, "source", "--pid", str(info["pid"]), "--to",
                              f"127.0.0.1:{port}", "--bandwidth-cap", "50",
                              "--preflight", "refuse", "--json"],
                             capture_output=True, text=True, timeout=60)
        res = json.loads(src.stdout)
        assert src.returncode != 0 and not res["completed"]
        assert "preflight refused" in res["error"] and "the migration's cap" in res["error"]
        pre = res["preflight"]
        assert pre["verdict"] == "refuse" and pre["bandwidth_limited_by"] == "cap"
        assert pre["bandwidth_mbps"] <= 50.0 and res["pages_sent_per_round"] == []
        assert_runs_on(info)
    with destination("--listen", "127.0.0.1:0") as (dproc, port):  # uncapped: judged, ok
        rc, res = run_source("--workload", "16M", "--to", f"127.0.0.1:{port}",
                             "--preflight", "refuse")
        try:
            assert rc == 0, res["error"]
            assert res["preflight"]["verdict"] == "ok"
            assert res["preflight"]["bandwidth_mbps"] >= 225.0
        finally:
            kill(res.get("destination_pid"))
            kill(res.get("source_pid"))


class MiscountingSender(Sender):
    """A sender whose record of one page disagrees with what it put on the wire (each batch
    still passes its checksum): only the whole-image digest check can catch it."""

    def build(self, round_no, chunk, scratch):
        out = super().build(round_no, chunk, scratch)
        if self.space == 0 and 5 in chunk:
            self.hashes[5] ^= 1
        return out


@pytest.mark.parametrize("table", [False, True])
def test_mismatched_digest_is_refused_and_source_keeps_running(monkeypatch, table):
    monkeypatch.setattr(agents.source, "Sender", MiscountingSender)
    with workload("--size", "16M", "--dirty-rate", "20") as (wproc, info):
        src = ProcessMemory(info["pid"])

        res, outcomes = migrate_in_process(src, commit_table=table)
        src.close()
        assert not res.completed and not res.integrity_ok
        # the digest alone catches it; the page table (asked for) names the page
        assert ("image digest mismatch: 1 pages differ, first 5" if table else
                "image digest mismatch (the source sent no page table") in res.error
        assert outcomes[0]["ok"] is False and "resumed" not in outcomes[0]
        assert_runs_on(info)


def _rss(pid: int) -> int:
    with contextlib.suppress(OSError, ValueError):
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    return 0


def _biggest_descendant(root: int, min_rss: int) -> int | None:
    """stress-ng forks its memory-touching worker under another process: find it."""
    todo, found = [root], []
    while todo:
        pid = todo.pop()
        kids = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
        for k in map(int, kids.stdout.split()):
            todo.append(k)
            found.append((_rss(k), k))
    best = max(found, default=(0, None))
    return best[1] if best[0] >= min_rss else None


def _wait_stable_layout(pid: int, quiet_s: float = 1.0, within_s: float = 10.0) -> None:
    """Wait until /proc/PID/maps has not changed for ``quiet_s`` (start-up mappings gone)."""
    deadline = time.monotonic() + within_s
    last, since = None, time.monotonic()
    while time.monotonic() < deadline:
        maps = Path(f"/proc/{pid}/maps").read_text()
        if maps != last:
            last, since = maps, time.monotonic()
        elif time.monotonic() - since >= quiet_s:
            return
        time.sleep(0.1)


def test_foreign_stress_ng_image_verified_without_resume():
    # --vm-keep: without it stress-ng unmaps and remaps its buffer on every pass; even so it
    # now and then maps an 8 MiB region for a moment, and a mapping that appears during the
    # migration refuses it (nothing silently left out): one more try is allowed for that
    ng = subprocess.Popen(["stress-ng", "--vm", "1", "--vm-bytes", "64M", "--vm-keep",
                           "--vm-method", "write64", "--quiet"], start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        worker = None
        while worker is None and time.monotonic() < deadline:
            time.sleep(0.2)
            worker = _biggest_descendant(ng.pid, 60 << 20)
        assert worker, "stress-ng started no worker"
        _wait_stable_layout(worker)  # a mapping that changes mid-migration refuses it
        for attempt in range(2):
            with destination("--listen", "127.0.0.1:0", "--no-resume") as (dproc, port):
                rc, res = run_source("--pid", str(worker), "--to", f"127.0.0.1:{port}",
                                     "--max-rounds", "4", "--streams", "2")
            if rc == 0 or attempt or "mappings changed" not in (res["error"] or ""):
                break
            assert res["outcome"] == "rolled-back" and process_state(worker) not in "tTZ"
        assert rc == 0, res["error"]
        assert res["integrity_ok"] and not res["resumed"]
        assert res["image_bytes"] >= 64 << 20
        assert res["dirty_tracking"] in ("soft-dirty", "page-hash")
        assert res["memory_reader"] == "process_vm_readv"
        assert res["switchover_reason"] in ("converged", "max-rounds", "max-bytes")
        time.sleep(0.2)
        assert process_state(worker) not in "tTZ"  # verified copy; original carries on
    finally:
        os.killpg(ng.pid, signal.SIGKILL)
        ng.wait()


def test_image_migration_between_namespaces_with_cap_and_streams(tmp_path):
    tag = uuid.uuid4().hex[:6]
    a, b = f"tbt-a{tag}", f"tbt-b{tag}"
    img = tmp_path / "mem.img"
    img.write_bytes(os.urandom(24 << 20) + bytes(8 << 20))

    def ip(*args):
        subprocess.run(["ip", *args], check=True, capture_output=True)

    try:
        ip("netns", "add", a)
        ip("netns", "add", b)
        ip("link", "add", f"tbt{tag}a", "netns", a, "type", "veth", "peer", "name",
           f"tbt{tag}b", "netns", b)
        ip("-n", a, "addr", "add", "10.77.0.1/24", "dev", f"tbt{tag}a")
        ip("-n", b, "addr", "add", "10.77.0.2/24", "dev", f"tbt{tag}b")
        for ns, dev in ((a, f"tbt{tag}a"), (b, f"tbt{tag}b")):
            ip("-n", ns, "link", "set", dev, "up")
            ip("-n", ns, "link", "set", "lo", "up")
        saved = tmp_path / "out.img"
        with destination("--listen", "10.77.0.2:0", "--save-image", str(saved),
                         netns=b) as (dproc, port):
            out = subprocess.run(["ip", "netns", "exec", a, *PY, "source", "--image", str(img),
                                  "--dirty-rate", "5", "--to", f"10.77.0.2:{port}",
                                  "--streams", "3", "--bandwidth-cap", "300", "--json"],
                                 capture_output=True, text=True, timeout=50)
            res = json.loads(out.stdout)
            assert out.returncode == 0, res
            assert res["integrity_ok"] and res["streams"] == 3
            assert 100 < res["goodput_mbps"] <= 300 * 1.1
            assert res["pages_sent_per_round"][0] == 8192
            assert res["zero_pages_per_round"][0] == 2048
            assert dproc.wait(timeout=10) == 0
            assert saved.stat().st_size == img.stat().st_size
    finally:
        for ns in (a, b):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


class BlindTracker(ProcessMemory):
    """Sees no dirty page after round 0: the writes of a running guest are missed."""

    def dirty(self):
        super().dirty()
        return []


def test_tracker_that_misses_writes_is_caught_by_the_source_check():
    with workload("--size", "16M", "--dirty-rate", "20") as (wproc, info):
        src = BlindTracker(info["pid"])

        res, _ = migrate_in_process(src)
        src.close()
        try:
            # the destination holds exactly what was sent, but that was not the guest's memory
            assert res.source_verified is False and not res.integrity_ok
            assert not res.completed and res.outcome == "rolled-back"
            assert any("missed writes" in w for w in res.warnings)
            assert res.destination_pid is None  # checked before GO: no copy ever ran there
            assert_runs_on(info)  # the good original carries on
        finally:
            kill(res.destination_pid)


@pytest.mark.parametrize("acked", [False, True])
def test_rounds_on_one_stream_follow_each_other_unless_acknowledged(acked):
    """One TCP data stream: a page's later copy cannot overtake its earlier one, so rounds
    follow each other without the destination's acknowledgement (the rate the switchover
    decides on is what TCP says was delivered); the image is whole either way."""
    with destination("--listen", "127.0.0.1:0") as (dproc, port):
        rc, res = run_source("--workload", "48M", "--dirty-rate", "40", "--to",
                             f"127.0.0.1:{port}", "--bandwidth-cap", "400",
                             "--downtime-ms", "50", *(["--acked-rounds"] if acked else []))
        try:
            assert rc == 0, res["error"]
            assert res["pipelined"] is (not acked)
            assert (res["drain_ms"] is None) is acked
            assert res["rounds"] >= 3, res["pages_sent_per_round"]  # later rounds rewrite
            assert res["completed"] and res["integrity_ok"] and res["source_verified"]
            assert res["counter_continuity_ok"] is True
            # the best round's rate: what went over the 400 Mbit/s cap, not the socket's take
            assert 100 < res["stream_rate_mbps"] <= 400 * 1.15, res["stream_rate_mbps"]
            assert dproc.wait(timeout=10) == 0
        finally:
            kill(res.get("destination_pid"))
            kill(res.get("source_pid"))

"""Convergence assist with a cgroup CPU quota: it slows the guest, and leaves no cgroup."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agents.guest.throttle import CgroupThrottle, make_throttle
from agents.memory.source import MemorySource
from tests.helpers import destination, kill, run_source

pytestmark = pytest.mark.integration


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def cpu_share(pid: int, seconds: float = 1.0) -> float:
    c0, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - c0) / (time.monotonic() - t0)


class Proc(MemorySource):
    def __init__(self, pid: int) -> None:
        self.pid = pid


def test_cgroup_quota_slows_a_busy_process_and_is_removed():
    spin = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.2)
        home = Path(f"/proc/{spin.pid}/cgroup").read_text()
        free = cpu_share(spin.pid)
        thr = make_throttle(Proc(spin.pid), "cgroup")
        assert isinstance(thr, CgroupThrottle)
        assert thr.mechanism in ("cgroup2-cpu.max", "cgroup1-cfs-quota")
        assert thr.path.is_dir() and str(spin.pid) in (thr.path / "cgroup.procs").read_text()
        thr.set(0.8)  # 20 % of one CPU at most
        slowed = cpu_share(spin.pid)
        t0 = time.perf_counter()
        thr.release()  # the switchover's: quota lifted at once, the cgroup left until stop
        released_ms = (time.perf_counter() - t0) * 1e3
        assert str(spin.pid) in (thr.path / "cgroup.procs").read_text()
        freed = cpu_share(spin.pid)
        print(f"cpu share free {free:.2f}, throttled {slowed:.2f}, released {freed:.2f} "
              f"(release took {released_ms:.2f} ms)")
        thr.stop()
        assert slowed < 0.3 and slowed < 0.6 * free, (slowed, free)
        assert freed > 0.6 * free, (freed, free)
        assert not thr.path.exists()
        assert Path(f"/proc/{spin.pid}/cgroup").read_text() == home
        thr.stop()  # idempotent
    finally:
        spin.kill()
        spin.wait()


def test_migration_names_the_cgroup_throttle_and_cleans_up():
    def ours() -> set[str]:
        return {str(p) for p in Path("/sys/fs/cgroup").glob("**/agents-throttle-*")}

    before = ours()
    # 60 MB/s of dirtying over a 100 Mbit/s cap cannot converge without throttling
    with destination("--listen", "127.0.0.1:0") as (dproc, port):
        rc, res = run_source("--workload", "24M", "--dirty-rate", "60", "--to",
                             f"127.0.0.1:{port}", "--bandwidth-cap", "100", "--max-rounds", "6",
                             "--preflight", "off", "--downtime-ms", "50", timeout=90)
        try:
            assert rc == 0, res["error"]
            assert res["throttle_mechanism"] == "cgroup1-cfs-quota" or \
                res["throttle_mechanism"] == "cgroup2-cpu.max"
            assert res["throttle_max"] > 0
        finally:
            kill(res.get("destination_pid"))
            kill(res.get("source_pid"))
    assert ours() == before

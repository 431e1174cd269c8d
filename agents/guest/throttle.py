"""Convergence assist: slow the guest down by a fraction ``level`` of its CPU time.

Two mechanisms, like QEMU's auto-converge / vMotion's SDPS: a CPU quota on a cgroup made for
the guest (cgroup v2 ``cpu.max``, or v1 ``cpu.cfs_quota_us`` where the cpu controller is
only on a v1 hierarchy), or SIGSTOP/SIGCONT duty cycles when no cgroup is writable (or the
source is not a process). The cgroup is removed and the guest put back where it was when
the throttle stops.
"""

from __future__ import annotations

import contextlib
import time
import uuid
from pathlib import Path

import trio

from agents.memory.source import MemorySource

CGROUP_ROOT = Path("/sys/fs/cgroup")


class Throttle:
    """Base: ``set(level)`` while pre-copy runs, ``release()`` in the switchover's pause,
    ``stop()`` (idempotent) once the migration is over."""

    mechanism = "none"

    def __init__(self) -> None:
        self.level = 0.0
        self.max_level = 0.0

    def set(self, level: float) -> None:
        self.level = level
        self.max_level = max(self.max_level, level)
        self._apply()

    def _apply(self) -> None: ...

    def release(self) -> None:
        """Throttle no more, at once: the switchover calls it with the guest paused, where
        every millisecond is downtime (``stop`` may take longer)."""
        self.stop()

    def stop(self) -> None: ...

    async def run(self) -> None:
        """Background task (a duty cycle needs one); returns once stopped."""


class DutyCycleThrottle(Throttle):
    """Stop the guest for ``level`` of every ``period_s``."""

    mechanism = "sigstop-duty-cycle"

    def __init__(self, source: MemorySource, period_s: float = 0.05) -> None:
        super().__init__()
        self.source, self.period = source, period_s
        self._running = True

    def stop(self) -> None:
        self._running = False

    async def run(self) -> None:
        try:
            while self._running:
                if self.level <= 0:
                    await trio.sleep(self.period)
                    continue
                self.source.pause()
                try:
                    await trio.sleep(self.period * self.level)
                finally:
                    if self._running:
                        self.source.cont()
                await trio.sleep(self.period * (1 - self.level))
        finally:
            with contextlib.suppress(Exception):
                if self._running:
                    self.source.cont()


def _cpu_hierarchy(pid: int, root: Path) -> tuple[Path, Path, int] | None:
    """(hierarchy mount, the pid's cgroup in it, cgroup version) with a cpu controller."""
    lines = Path(f"/proc/{pid}/cgroup").read_text().splitlines()
    for line in lines:  # v2: "0::/path", usable when the cpu controller is enabled there
        hid, ctrls, path = line.split(":", 2)
        if hid == "0" and ctrls == "":
            for mount in (root, root / "unified"):
                ctl = mount / "cgroup.controllers"
                if ctl.exists() and "cpu" in ctl.read_text().split():
                    return mount, mount / path.lstrip("/"), 2
    for line in lines:  # v1: "N:cpu,cpuacct:/path"
        hid, ctrls, path = line.split(":", 2)
        if "cpu" in ctrls.split(","):
            for name in (ctrls, "cpu", "cpu,cpuacct"):
                mount = root / name
                if (mount / "cpu.cfs_quota_us").exists():
                    return mount, mount / path.lstrip("/"), 1
    return None


class CgroupThrottle(Throttle):
    """A child cgroup holding only the guest, its CPU quota lowered to 1 - level."""

    def __init__(self, pid: int, root: Path = CGROUP_ROOT, period_us: int = 100_000) -> None:
        super().__init__()
        found = _cpu_hierarchy(pid, root)
        if found is None:
            raise OSError("no cgroup hierarchy with a cpu controller")
        self.pid, self.period_us = pid, period_us
        mount, self.home, self.version = found
        self.mechanism = "cgroup2-cpu.max" if self.version == 2 else "cgroup1-cfs-quota"
        parent = self.home
        if self.version == 2:
            # a v2 child gets the cpu controller only from its parent's subtree_control
            with contextlib.suppress(OSError):
                (parent / "cgroup.subtree_control").write_text("+cpu")
        self.path = parent / f"agents-throttle-{uuid.uuid4().hex[:8]}"
        self.path.mkdir()
        try:
            if self.version == 1:
                (self.path / "cpu.cfs_period_us").write_text(str(period_us))
            elif not (self.path / "cpu.max").exists():
                raise OSError("cpu controller not delegated to the new cgroup")
            (self.path / "cgroup.procs").write_text(str(pid))
        except OSError:
            with contextlib.suppress(OSError):
                self.path.rmdir()
            raise
        self._stopped = False

    def _apply(self) -> None:
        if self._stopped:
            return
        quota = max(1000, int(self.period_us * (1 - self.level)))
        if self.version == 2:
            text = "max" if self.level <= 0 else f"{quota} {self.period_us}"
            (self.path / "cpu.max").write_text(text)
        else:
            (self.path / "cpu.cfs_quota_us").write_text("-1" if self.level <= 0 else str(quota))

    def release(self) -> None:
        """Lift the quota; the guest stays in the cgroup until ``stop``: moving a process
        between cgroups took 6 ms here (measured in the switchover's pause)."""
        if self.level > 0:
            self.level = 0.0
            with contextlib.suppress(OSError):
                self._apply()

    def stop(self) -> None:
        """Put the guest back in its own cgroup (if it still lives) and remove ours."""
        if self._stopped:
            return
        self._stopped = True
        with contextlib.suppress(OSError):
            (self.home / "cgroup.procs").write_text(str(self.pid))
        for _ in range(100):
            try:
                self.path.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.01)  # an ended guest can take a moment to leave the cgroup


def make_throttle(source: MemorySource, mode: str = "auto", root: Path = CGROUP_ROOT
                  ) -> Throttle:
    """``auto``: a cgroup quota when the source is a process and a cgroup is writable, else
    duty cycles; ``cgroup`` fails when no cgroup can be made; ``duty-cycle`` never tries."""
    pid = getattr(source, "pid", None)
    if mode in ("auto", "cgroup") and pid is not None:
        try:
            return CgroupThrottle(pid, root)
        except OSError:
            if mode == "cgroup":
                raise
    elif mode == "cgroup":
        raise OSError("cgroup throttling needs a process source")
    return DutyCycleThrottle(source)


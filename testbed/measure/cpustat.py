"""The whole machine's CPU time by kind (``/proc/stat``), and whether this machine is emulated.

A process's own CPU time (getrusage) misses work the kernel does for it in softirq context:
Soft-RoCE's responder places RDMA WRITEs into the destination's memory there, charged to no
process. The machine's system and softirq seconds over an interval show that work.

:class:`MachineCpuSampler` reads the same line in the background, so that any interval of a
run (one migration from its round 0 to its decision, a burst of them) can later be told how
busy the whole machine was: a migration that ran while the machine had no idle CPU measured
this machine as much as the network.
"""

from __future__ import annotations

import bisect
import os
import shutil
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

STAT = Path("/proc/stat")


def machine_cpu_s(stat: str | None = None) -> dict[str, float]:
    """CPU seconds so far over all CPUs: ``user`` (with nice), ``system``, ``softirq`` (with
    hard irq), ``idle`` (with iowait); ``stat``: a /proc/stat text (default: this kernel's)."""
    fields = (stat if stat is not None else STAT.read_text()).splitlines()[0].split()
    if fields[0] != "cpu":
        raise ValueError(f"not /proc/stat's total line: {fields[:3]}")
    user, nice, system, idle, iowait, irq, softirq = (int(x) for x in fields[1:8])
    hz = os.sysconf("SC_CLK_TCK")
    return {"user": (user + nice) / hz, "system": system / hz,
            "softirq": (softirq + irq) / hz, "idle": (idle + iowait) / hz}


def since(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    """Seconds of each kind between two :func:`machine_cpu_s` readings."""
    return {k: round(after[k] - before[k], 3) for k in before}


SATURATED = 0.9  # busy share of all CPUs from which a window's figures may be the machine's


class MachineCpuSampler:
    """``/proc/stat``'s total line every ``period_s`` in a background thread (start/stop),
    stamped with CLOCK_MONOTONIC like the agents' ``monotonic_s``."""

    def __init__(self, period_s: float = 0.05, stat: Path = STAT) -> None:
        self.period_s, self.stat = period_s, stat
        self.t: list[float] = []
        self.cpu: list[dict[str, float]] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> MachineCpuSampler:
        self._thread = threading.Thread(target=self._run, name="cpu-sampler", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while True:
            self.add(time.monotonic(), machine_cpu_s(self.stat.read_text()))
            if self._stop.wait(self.period_s):
                return

    def add(self, t: float, cpu: dict[str, float]) -> None:
        self.t.append(t)
        self.cpu.append(cpu)

    def window(self, t_from: float, t_to: float) -> dict[str, Any] | None:
        """How busy all CPUs were from ``t_from`` to ``t_to`` (monotonic seconds), as shares
        of their time: ``busy`` and its parts ``user``, ``system``, ``softirq``; from the
        samples just outside the window (None: not sampled over it)."""
        i = bisect.bisect_right(self.t, t_from) - 1
        j = bisect.bisect_left(self.t, t_to)
        if i < 0 or j >= len(self.t) or j <= i:
            return None
        d = since(self.cpu[i], self.cpu[j])
        total = sum(d.values())
        if total <= 0:
            return None
        share = {k: round(d[k] / total, 3) for k in ("user", "system", "softirq")}
        busy = round(1 - d["idle"] / total, 3)
        return {"busy": busy, **share, "seconds": round(self.t[j] - self.t[i], 3),
                "saturated": busy >= SATURATED, "saturated_at": SATURATED}


def virtualization() -> str | None:
    """The virtual machine this kernel runs in, as ``systemd-detect-virt --vm`` says (containers
    left aside): ``none`` (bare metal), ``kvm``, ``qemu`` (QEMU without KVM: TCG, every CPU
    figure the emulator's), ...; None when it cannot tell."""
    tool = shutil.which("systemd-detect-virt")
    if tool is None:
        return None
    try:
        out = subprocess.run([tool, "--vm"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout.strip() or None

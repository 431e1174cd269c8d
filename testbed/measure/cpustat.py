"""The whole machine's CPU time by kind (``/proc/stat``), and whether this machine is emulated.

A process's own CPU time (getrusage) misses work the kernel does for it in softirq context:
Soft-RoCE's responder places RDMA WRITEs into the destination's memory there, charged to no
process. The machine's system and softirq seconds over an interval show that work.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

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

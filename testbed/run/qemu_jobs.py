"""QEMU guests in the experiment kinds: a spec's ``[migration]`` table as QEMU jobs, run one
at a time or as a burst, their results tagged like the agents' (``hypervisor``, the case,
what the model needs).

The mapping of each key is :data:`testbed.hypervisor_spec.QEMU_MAPPING`; the guests here are
TCG guests wherever doctor saw no KVM guest boot, so the emulator's CPU, not only the network,
shapes their dirtying and QEMU's send path (results say ``accel``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from agents.qemu.command import KERNEL_MIB, Guest, Options

from ..measure.migration import all_at_once
from ..measure.qemu_migration import QemuJob, migrate_qemu
from .hypervisor import QEMU_MAPPING, QemuParams

if TYPE_CHECKING:
    from ..lab.lab import Lab
    from .spec import MigrationParams

BASE_PORT = 4444


def guest_of(m: MigrationParams, markers: int = 0) -> Guest:
    """The QEMU guest for ``m``: its dirtier holds ``workload_mib`` of random pages."""
    q = m.qemu or QemuParams()
    ram = q.ram_mib or max(192, m.workload_mib + KERNEL_MIB)
    return Guest(ram_mib=ram, vcpus=q.vcpus, dirty_mib=m.workload_mib,
                 dirty_rate_mbs=m.dirty_rate_mbs,
                 hot_mib=q.hot_mib or max(1, m.workload_mib // 10), markers=markers)


def options_of(m: MigrationParams, tls: bool = False) -> Options:
    """QEMU's migration options for ``m`` (see ``QEMU_MAPPING``)."""
    q = m.qemu or QemuParams()
    channels = m.streams if m.streams > 1 else (1 if m.compress else 0)
    return Options(multifd_channels=channels, compression="zstd" if m.compress else "none",
                   downtime_limit_ms=int(m.downtime_ms),
                   max_bandwidth_mbps=m.bandwidth_cap_mbps, auto_converge=q.auto_converge,
                   postcopy=q.postcopy, postcopy_preempt=q.postcopy_preempt, tls=tls,
                   max_iterations=m.max_rounds)


def job_of(m: MigrationParams, src: str, dst: str, label: str, port: int = BASE_PORT,
           tls: bool = False, markers: int = 0, **kw: Any) -> QemuJob:
    """One QEMU job from ``[migration]`` (``kw``: connect address, TLS identity, ...)."""
    q = m.qemu or QemuParams()
    return QemuJob(src, dst, port=port, guest=guest_of(m, markers), options=options_of(m, tls),
                   warmup_s=q.warmup_s, timeout_s=m.timeout_s, boot_timeout_s=q.boot_timeout_s,
                   label=label, **kw)


def tagged(res: dict[str, Any], m: MigrationParams, **extra: Any) -> dict[str, Any]:
    """A QEMU result as an experiment's migration entry: what was asked, for the model and
    the report (the agents' entries get the same keys from ``testbed.migration``)."""
    return dict(res) | {
        "hypervisor": "qemu", "downtime_target_ms": float(int(m.downtime_ms)),
        "max_rounds": m.max_rounds, "dirty_rate_mbs": m.dirty_rate_mbs,
        "workload_mib": m.workload_mib} | extra


def mapping() -> dict[str, str]:
    """How the ``[migration]`` keys reached QEMU (for a variant's result)."""
    return dict(QEMU_MAPPING)


def runs_here(chosen: list[str], who: str, here: Any, compare_at: list[Any] | None) -> bool:
    """Does hypervisor ``who`` run at point ``here``? The first one always, the others at
    ``compare_at`` (None: everywhere)."""
    if who not in chosen:
        return False
    return chosen.index(who) == 0 or compare_at is None or here in compare_at


def run(lab: Lab, job: QemuJob, m: MigrationParams, **extra: Any) -> dict[str, Any]:
    """One QEMU migration in ``lab``, tagged."""
    t0 = time.monotonic()
    res = migrate_qemu(lab, job)
    return tagged(res, m, wall_s=round(time.monotonic() - t0, 3), **extra)


def run_burst(lab: Lab, jobs: list[QemuJob], m: MigrationParams,
              extra: list[dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Every job at once (a burst of QEMU guests): results in job order, ``t_start_s`` each."""
    base = time.monotonic()
    extras = extra or [{}] * len(jobs)
    index = {id(j): i for i, j in enumerate(jobs)}

    def one(job: QemuJob) -> dict[str, Any]:
        return run(lab, job, m, t_start_s=round(time.monotonic() - base, 3),
                   **extras[index[id(job)]])

    return all_at_once(jobs, one)

"""Run a QEMU live migration (``agents.qemu``) between two lab nodes' migration stacks.

Both QEMUs are started through :meth:`Lab.popen` in their nodes' namespaces (tracked, killed
at lab stop, recorded for ``testbed clean``); their QMP sockets, consoles and TLS files live in
a per-migration directory under ``/run/testbed/qemu/<run>/`` that is recorded in the run
registry too and removed afterwards. QEMU 7.2 cannot bind its outgoing migration socket to a
source address, so for the migration the source node gets one policy rule, ``to <dst> lookup
<the migration stack's table>``: the connection leaves through the migration stack exactly as
a bound agent's does (the result says which local address it really used).
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agents.qemu.command import Guest, Options, Role
from agents.qemu.driver import Hook, Launcher, Plan, Process, QemuError, migrate

from ..host import state
from .sendq import SendQueueSampler

if TYPE_CHECKING:
    from ..lab.lab import Lab

QEMU_RUN_DIR = state.STATE_DIR / "qemu"
PIN_RULE_PREF = 99  # before the stacks' own rules (100 + ...)


@dataclass(frozen=True)
class QemuJob:
    """One QEMU guest moved from ``src`` to ``dst`` (their migration stacks when they have
    them, else their first addresses)."""

    src: str
    dst: str
    port: int = 4444
    guest: Guest = field(default_factory=Guest)
    options: Options = field(default_factory=Options)
    accel: str | None = None  # None: what doctor says (kvm only where a KVM guest boots)
    warmup_s: float = 1.0
    timeout_s: float = 300.0
    boot_timeout_s: float = 90.0  # the source guest's boot (minutes under nested emulation)
    label: str = ""
    iperf3_s: float = 0.0  # > 0: an iperf3 baseline on the same path first
    connect_addr: str | None = None  # where the source connects (e.g. a gateway's public
    connect_port: int | None = None  # address and port); default: the destination's own
    tls_identity: str | None = None  # the destination certificate's name, which the source
    #                                  checks (default: "<dst>.migration")
    tls_ips: tuple[str, ...] = ()  # further addresses in that certificate
    function: str = "migration"  # which of the hosts' stacks carries it (e.g. management)


def accelerator() -> str:
    """``kvm`` only where doctor's probe saw a KVM guest boot, else ``tcg``."""
    from ..host.doctor import find_full_kernel, kvm_can_boot, probe_tools

    tools = probe_tools()
    ok, _ = kvm_can_boot(find_full_kernel(), tools.get("vng"))
    return "kvm" if ok else "tcg"


def _addresses(lab: Lab, job: QemuJob) -> tuple[str, str | None, int | None]:
    """(destination address, source stack address, source stack table)."""
    net = lab.network
    dst = net.stacks_of(job.dst).get(job.function)
    src = net.stacks_of(job.src).get(job.function)
    return (dst.ip if dst else net.address(job.dst), src.ip if src else None,
            src.table if src else None)


def lab_launcher(lab: Lab, job: QemuJob) -> Launcher:
    """Start each QEMU in its node's namespace through the lab (tracked and recorded)."""
    nodes: dict[Role, str] = {"source": job.src, "destination": job.dst}

    def launch(role: Role, argv: list[str], stderr: Path) -> Process:
        with open(stderr, "wb") as err:
            return lab.popen(nodes[role], argv, stdin=subprocess.DEVNULL,
                             stdout=subprocess.DEVNULL, stderr=err)
    return launch


def _connections(lab: Lab, node: str, dst_ip: str, port: int) -> list[str]:
    """Local addresses of ``node``'s TCP connections to ``dst_ip:port`` right now."""
    out = lab.run(node, ["ss", "-Htn", "state", "established", "dst", f"{dst_ip}:{port}"],
                  check=False).stdout
    return sorted({line.split()[-2].rsplit(":", 1)[0] for line in out.splitlines()
                   if len(line.split()) >= 2})


_PINS: dict[tuple[str, str, tuple[str, ...]], int] = {}
_PINS_LOCK = threading.Lock()


def _pin(lab: Lab, node: str, rule: list[str], delta: int) -> None:
    """Add the source's rule for the first of concurrent migrations to one destination,
    remove it after the last (the kernel refuses an identical second rule)."""
    key = (lab.run_id, node, tuple(rule))
    with _PINS_LOCK:
        users = _PINS.get(key, 0) + delta
        if delta > 0 and users == 1:
            lab.run(node, ["ip", "rule", "add", *rule])
        elif delta < 0 and users == 0:
            lab.run(node, ["ip", "rule", "del", *rule], check=False)
        if users:
            _PINS[key] = users
        else:
            _PINS.pop(key, None)


def migrate_qemu(lab: Lab, job: QemuJob, on_active: Hook | None = None) -> dict[str, Any]:
    """Run one QEMU migration in ``lab``; the result document of ``agents.qemu`` plus
    ``iperf3_mbps`` (when asked), ``source_address`` and the nodes."""
    dst_ip, src_ip, table = _addresses(lab, job)
    extra: dict[str, Any] = {"src": job.src, "dst": job.dst, "label": job.label,
                             "source_address": src_ip}
    if job.iperf3_s > 0:
        from .path import iperf3

        extra.update({k: v for k, v in iperf3(lab, job.src, job.dst, dst_ip,
                                               seconds=job.iperf3_s, bind=src_ip).items()
                      if k in ("iperf3_mbps", "retransmits")})
    run_dir = QEMU_RUN_DIR / lab.run_id / (job.label or f"{job.src}-{job.dst}-{job.port}")
    lab.state.paths.append(str(run_dir))
    lab.state.save()  # recorded before anything is made there
    to_ip, to_port = job.connect_addr or dst_ip, job.connect_port or job.port
    pin = ["to", f"{to_ip}/32", "lookup", str(table), "pref", str(PIN_RULE_PREF)]
    if table is not None:
        _pin(lab, job.src, pin, +1)
    seen: list[str] = []
    queue = SendQueueSampler(lab, job.src, to_ip, to_port)

    def active(procs: dict[Role, Process]) -> None:
        seen.extend(_connections(lab, job.src, to_ip, to_port))
        queue.start()
        if on_active is not None:
            on_active(procs)

    plan = Plan(dst_ip, run_dir, job.port, job.guest, job.options,
                job.accel or accelerator(),
                tls_identity=job.tls_identity or f"{job.dst}.migration",
                boot_timeout_s=job.boot_timeout_s, warmup_s=job.warmup_s,
                timeout_s=job.timeout_s, connect_addr=job.connect_addr,
                connect_port=job.connect_port, tls_hostname=job.tls_identity,
                tls_ips=job.tls_ips)
    t0 = time.monotonic()
    try:
        res = migrate(plan, lab_launcher(lab, job), on_active=active)
    except QemuError as exc:
        res = {"hypervisor": "qemu", "completed": False, "integrity_ok": False,
               "error": str(exc), "migration_time_s": round(time.monotonic() - t0, 3)}
    finally:
        queue.stop()
        if table is not None:
            _pin(lab, job.src, pin, -1)
        shutil.rmtree(run_dir, ignore_errors=True)
        with contextlib.suppress(OSError):  # the run's directory, once its last one is gone
            run_dir.parent.rmdir()
        with contextlib.suppress(ValueError):
            lab.state.paths.remove(str(run_dir))
        lab.state.save()
    res.update(extra)
    res["source_addresses_seen"] = seen
    res["socket_backlog_at_stop"] = _backlog_at_stop(queue, res.get("source_stopped_at_unix"))
    return res


def _backlog_at_stop(queue: SendQueueSampler, stopped_at: float | None) -> dict[str, Any] | None:
    """What the source's sockets held when its vCPUs stopped (the stop-and-copy queues
    behind it): the last sample before the STOP event, and how long before it was taken."""
    sample = queue.before(stopped_at) if stopped_at else None
    if sample is None:
        return None
    return {"send_q_bytes": sample.send_q_bytes, "notsent_bytes": sample.notsent_bytes,
            "sampled_before_stop_ms": round((stopped_at - sample.at_unix) * 1e3, 1)}

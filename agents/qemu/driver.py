"""One QEMU live migration, driven over QMP: start both QEMUs, set the options, migrate,
poll ``query-migrate``, then check the guest (at the destination after a move, at the source
after a failure: QEMU's own rollback).

Processes are started by a *launcher* the caller gives (a lab starts them in its nodes'
namespaces and tracks them); :func:`local_launcher` starts them here, optionally in a named
network namespace.
"""

from __future__ import annotations

import contextlib
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

from . import console, stats
from .command import Guest, Options, Paths, Role, capabilities, parameters, qemu_argv, uri
from .image import guest_image
from .qmp import QMP, QMPClosed, QMPError
from .tlsdir import make_tls_dirs


class QemuError(RuntimeError):
    """A QEMU did not start, its guest did not boot, or QEMU refused the migration."""


class Process(Protocol):
    pid: int

    def poll(self) -> int | None: ...
    def kill(self) -> None: ...
    def wait(self, timeout: float | None = None) -> int: ...


Launcher = Callable[[Role, list[str], Path], Process]
QEMU_MAX_DOWNTIME_MS = 2_000_000  # QEMU's bound on downtime-limit (2000 s)
Hook = Callable[[dict[Role, Process]], None]


@dataclass(frozen=True)
class Plan:
    """What to migrate, where to, and how long to wait for each step."""

    dst_addr: str  # the destination's migration-stack address (QEMU listens there)
    run_dir: Path
    port: int = 4444
    guest: Guest = field(default_factory=Guest)
    options: Options = field(default_factory=Options)
    accel: str = "tcg"
    tls_identity: str = "qemu-destination"
    boot_timeout_s: float = 90.0
    warmup_s: float = 1.0  # the guest dirties this long before the migration starts
    timeout_s: float = 300.0
    poll_s: float = 0.05
    connect_addr: str | None = None  # where the source connects (e.g. a gateway's public
    connect_port: int | None = None  # address and port); default: dst_addr and port
    tls_hostname: str | None = None  # the name the source checks (default: dst_addr)
    tls_ips: tuple[str, ...] = ()  # further addresses in the destination's certificate


def local_launcher(netns: dict[Role, str | None] | None = None) -> Launcher:
    """Start QEMU as a child of this process (in ``netns[role]``, a /run/netns path, if
    given); it gets SIGKILL if this process dies, so a killed driver leaves no guest."""
    import ctypes

    def die_with_parent() -> None:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG

    def launch(role: Role, argv: list[str], stderr: Path) -> Process:
        ns = (netns or {}).get(role)
        prefix = ["nsenter", f"--net={ns}", "--"] if ns else []
        with open(stderr, "wb") as err:
            return subprocess.Popen(prefix + argv, stdin=subprocess.DEVNULL,
                                    stdout=subprocess.DEVNULL, stderr=err,
                                    preexec_fn=die_with_parent)
    return launch


def _stderr(paths: Paths) -> str:
    try:
        return paths.stderr.read_text(errors="replace").strip()[-800:]
    except OSError:
        return ""


def _connect(proc: Process, paths: Paths, wait_s: float = 30.0) -> QMP:
    """QMP of a QEMU just started; a QEMU that exits first is reported with its stderr."""
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise QemuError(f"the {paths.role} QEMU exited ({proc.poll()}) before its QMP "
                            f"socket came up: {_stderr(paths) or '(no stderr)'}")
        if paths.qmp.exists():
            with contextlib.suppress(ConnectionRefusedError, QMPClosed):
                return QMP.connect(str(paths.qmp), wait_s=1.0)
        time.sleep(0.05)
    raise QemuError(f"the {paths.role} QEMU has no QMP socket after {wait_s:.0f} s: "
                    f"{_stderr(paths)}")


def _configure(q: QMP, opts: Options, role: Role, tls_hostname: str | None) -> None:
    try:
        q.execute("migrate-set-capabilities", capabilities=capabilities(opts))
        q.execute("migrate-set-parameters", **parameters(opts, role, tls_hostname))
    except QMPError as exc:
        raise QemuError(f"the {role} QEMU refused the migration settings: {exc}") from None


def _running(q: QMP | None) -> bool:
    if q is None:
        return False
    try:
        return q.execute("query-status").get("status") == "running"
    except (QMPClosed, QMPError):
        return False


def _guest_after(plan: Plan, paths: dict[Role, Paths], qmps: dict[Role, QMP | None],
                 completed: bool, src_last: int) -> dict[str, Any]:
    """Did the guest run on (at the destination if it moved, else at the source)?"""
    check: dict[str, Any] = {"source_last_beat": src_last}
    if completed:
        first = console.wait_beat(paths["destination"].serial, 0, 15.0)
        later = console.wait_beat(paths["destination"].serial, first or 0, 5.0) if first \
            else None
        dst_beats = console.beats(paths["destination"].serial)
        check.update({
            "destination_running": _running(qmps["destination"]),
            "destination_first_beat": dst_beats[0] if dst_beats else None,
            "destination_last_beat": later,
            # a fresh boot would count from 1: carrying on from the source's counter shows
            # the guest's memory and CPU state came across
            "heartbeat_continued": bool(dst_beats and src_last < dst_beats[0] <= src_last + 3
                                        and later),
            "source_running": _running(qmps["source"])})
        if not check["heartbeat_continued"]:  # what the guest said instead (e.g. an oops)
            check["destination_console_tail"] = console.tail(paths["destination"].serial, 12)
    else:
        later = console.wait_beat(paths["source"].serial, src_last, 5.0)
        check.update({"source_running": _running(qmps["source"]),
                      "source_beat_advanced": later is not None, "source_last_beat_after": later})
        check["source_ran_on"] = bool(check["source_running"] and later is not None)
    return check


def migrate(plan: Plan, launch: Launcher, on_active: Hook | None = None) -> dict[str, Any]:
    """Run one migration end to end and return its result document (never raises for a
    migration that fails: ``completed`` is False and ``error`` says why; raises
    :class:`QemuError` when QEMU cannot even start or refuses the settings)."""
    plan.run_dir.mkdir(parents=True, exist_ok=True)
    image = guest_image()
    opts = plan.options
    paths: dict[Role, Paths] = {r: Paths(plan.run_dir, r) for r in ("source", "destination")}
    if opts.tls:
        make_tls_dirs(plan.run_dir, plan.tls_identity, [plan.dst_addr, *plan.tls_ips])
    procs: dict[Role, Process] = {}
    qmps: dict[Role, QMP | None] = {"source": None, "destination": None}
    t_start = time.monotonic()
    try:
        for role in ("destination", "source"):
            argv = qemu_argv(plan.guest, image.kernel, image.initrd, paths[role], plan.accel,
                             tls=opts.tls)
            procs[role] = launch(role, argv, paths[role].stderr)
        for role in ("destination", "source"):
            qmps[role] = _connect(procs[role], paths[role])
        src, dst = qmps["source"], qmps["destination"]
        assert src is not None and dst is not None
        version = src.greeting["QMP"]["version"]["qemu"]
        # settings first: a refusal is reported at once, not after the guest's boot
        _configure(dst, opts, "destination", None)
        _configure(src, opts, "source", (plan.tls_hostname or plan.dst_addr) if opts.tls
                   else None)
        if console.wait_beat(paths["source"].serial, 0, plan.boot_timeout_s) is None:
            raise QemuError(f"the source guest did not boot within {plan.boot_timeout_s:.0f} s"
                            f": {console.tail(paths['source'].serial)}")
        boot_s = time.monotonic() - t_start
        time.sleep(plan.warmup_s)
        where = uri(plan.dst_addr, plan.port)
        try:
            dst.execute("migrate-incoming", uri=where)
        except QMPError as exc:
            raise QemuError(f"the destination QEMU cannot listen on {where}: {exc}") from None
        to = uri(plan.connect_addr or plan.dst_addr, plan.connect_port or plan.port)
        issued_at = time.time()  # the clock of QEMU's event timestamps
        span = {"round0": time.monotonic()}  # named like the agents' stamps (monotonic_s)
        try:
            src.execute("migrate", uri=to)
        except QMPError as exc:
            raise QemuError(f"the source QEMU refused to migrate to {to}: {exc}") from None
        info, iters, postcopy_at, forced_at = _poll(plan, src, procs, on_active)
        span["decided"] = time.monotonic()
        src_last = console.last_beat(paths["source"].serial) or 0
        guest = _guest_after(plan, paths, qmps, info.get("status") == "completed", src_last)
        settings = {
            "accel": plan.accel, "qemu_version": f"{version['major']}.{version['minor']}."
            f"{version['micro']}", "source_kind": "qemu-guest",
            "dirty_tracking": "qemu-dirty-bitmap", "transport": "tls" if opts.tls else "tcp",
            "encrypted": opts.tls, "streams": opts.multifd_channels or 1,
            "compression": opts.compression, "bandwidth_cap_mbps": opts.max_bandwidth_mbps,
            "downtime_limit_ms": opts.downtime_limit_ms, "options": asdict(opts),
            "guest_config": asdict(plan.guest), "boot_s": round(boot_s, 3),
            "postcopy_started_s": postcopy_at, "uri": where, "connect_uri": to,
            "tls_hostname": (plan.tls_hostname or plan.dst_addr) if opts.tls else None,
            "max_iterations": opts.max_iterations, "forced_switchover_s": forced_at,
            "switchover_reason": _reason(info, postcopy_at, forced_at), "monotonic_s": span}
        lived = stats.end_to_end(issued_at, src.events, dst.events)
        return stats.result(info, iters, wall_s=time.monotonic() - t_start,
                            guest_check=guest, settings=settings, lived=lived)
    finally:
        for q in qmps.values():
            if q is not None:
                with contextlib.suppress(QMPClosed, QMPError, OSError):
                    q.execute("quit")
                q.close()
        for proc in procs.values():
            try:
                proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=5)


def _settled(src: QMP, info: dict[str, Any], wait_s: float = 3.0) -> dict[str, Any]:
    """QEMU sets "completed" a moment before it computes total-time and downtime
    (migration_iteration_finish -> migration_calculate_complete): ask again until they are."""
    deadline = time.monotonic() + wait_s
    while not info.get("total-time") and time.monotonic() < deadline:
        time.sleep(0.02)
        info = src.execute("query-migrate")
    return info


def _reason(info: dict[str, Any], postcopy_at: float | None,
            forced_at: float | None) -> str | None:
    """Why QEMU switched over (None: it did not complete)."""
    if info.get("status") != "completed":
        return None
    if postcopy_at is not None:
        return "postcopy"
    if forced_at is not None:
        return "max-rounds (downtime-limit raised to force the stop-and-copy)"
    return "converged (pending <= bandwidth x downtime-limit)"


def _poll(plan: Plan, src: QMP, procs: dict[Role, Process], on_active: Hook | None
          ) -> tuple[dict[str, Any], stats.Iterations, float | None, float | None]:
    """Poll the source's ``query-migrate`` until the migration ends (or times out: then it
    is cancelled, and QEMU rolls back to the running source). At ``max_iterations`` - 2
    syncs the downtime limit goes to QEMU's maximum: the next pending check syncs once more
    and completes, whose stop-and-copy syncs the last time (``max_iterations`` in all)."""
    iters = stats.Iterations()
    t0 = time.monotonic()
    hooked, timed_out, postcopy_at = False, False, None
    forced_at: float | None = None
    cap = plan.options.max_iterations
    info: dict[str, Any] = {}
    last_ram: dict[str, Any] = {}
    while True:
        info = src.execute("query-migrate")
        if "ram" in info:
            last_ram = info["ram"]
        else:  # a failed or cancelled migration reports no counters: keep the last ones
            info["ram"] = last_ram
        now = time.monotonic() - t0
        iters.observe(now, info, time.time())
        status = info.get("status")
        if status in ("completed", "failed", "cancelled"):
            if status == "completed":
                info = _settled(src, info)
            if timed_out and not info.get("error-desc"):
                info["error-desc"] = f"cancelled after the {plan.timeout_s:.0f} s timeout"
            return info, iters, postcopy_at, forced_at
        if status == "active" and not hooked and on_active is not None:
            hooked = True
            on_active(procs)
        if (plan.options.postcopy and postcopy_at is None and status == "active"
                and (info.get("ram") or {}).get("dirty-sync-count", 0) >= 2):
            src.execute("migrate-start-postcopy")  # after one full pass, as users do
            postcopy_at = round(now, 3)
        syncs = (info.get("ram") or {}).get("dirty-sync-count", 0)
        if cap is not None and forced_at is None and status == "active" \
                and syncs >= max(1, cap - 2):  # + the pending check's and the final sync
            src.execute("migrate-set-parameters", **{"downtime-limit": QEMU_MAX_DOWNTIME_MS})
            forced_at = round(now, 3)
        if now > plan.timeout_s and status != "cancelling":
            with contextlib.suppress(QMPError):
                src.execute("migrate_cancel")
            timed_out = True
        time.sleep(plan.poll_s)


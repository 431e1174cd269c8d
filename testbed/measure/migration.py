"""Run migration agents inside lab nodes and read their JSON back.

The lab knows the agents only as commands (``python -m agents ...``) and the JSON they print:
the destination announces ``{"listening": [host, port]}`` and later its outcome; the source
prints one result document (see agents/result.py) and exits non-zero unless it completed.
"""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any

from ..host.procio import read_line

if TYPE_CHECKING:
    from ..lab.lab import Lab


@dataclass(frozen=True)
class MigrationJob:
    """One migration: a fresh guest of ``workload_mib`` on ``src`` moves to ``dst``."""

    src: str
    dst: str
    dst_addr: str
    port: int = 7800
    workload_mib: int = 64
    dirty_rate_mbs: float = 8.0
    streams: int = 1
    compress: bool = False
    downtime_ms: float = 300.0
    bandwidth_cap_mbps: float | None = None
    max_rounds: int = 30
    timeout_s: float = 600.0
    extra_args: tuple[str, ...] = ()
    bind: str | None = None
    label: str = ""
    keep_guest: bool = False  # leave the resumed guest running after the migration
    connect_addr: str | None = None  # where the source connects (e.g. a gateway's public
    connect_port: int | None = None  # address and port); default: dst_addr and port
    destination_args: tuple[str, ...] = ()
    guest: str | None = None  # a guest with a network identity (topologies.guests) moves
    client_probe_ms: float = 1.0  # the client's request interval, for such a guest
    route_move: str = "netlink"  # such a guest's L3 move: prepared netlink sockets | shell

    def source_command(self) -> list[str]:
        """The source agent's arguments (``python -m agents ...``)."""
        argv = ["source", "--workload", f"{self.workload_mib}M",
                "--to", f"{self.connect_addr or self.dst_addr}:{self.connect_port or self.port}",
                "--json",
                "--dirty-rate", str(self.dirty_rate_mbs), "--streams", str(self.streams),
                "--downtime-ms", str(self.downtime_ms), "--max-rounds", str(self.max_rounds),
                "--timeout", str(self.timeout_s)]
        if self.compress:
            argv.append("--compress")
        if self.bandwidth_cap_mbps:
            argv += ["--bandwidth-cap", str(self.bandwidth_cap_mbps)]
        if self.bind:
            argv += ["--bind", self.bind]
        return argv + list(self.extra_args)

    def destination_command(self) -> list[str]:
        """The destination agent's arguments (``python -m agents ...``)."""
        return ["destination", "--listen", f"{self.dst_addr}:{self.port}", "--json",
                *self.destination_args]


@dataclass
class MigrationRun:
    job: MigrationJob
    result: dict[str, Any] = field(default_factory=dict)
    destination: list[dict[str, Any]] = field(default_factory=list)
    started_s: float = 0.0
    ended_s: float = 0.0
    source_stderr: str = ""
    exit_code: int | None = None


def _json_lines(text: str) -> list[dict[str, Any]]:
    docs = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            with contextlib.suppress(ValueError):
                docs.append(json.loads(line))
    return docs


def start_destination(lab: Lab, job: MigrationJob,
                      wait_s: float = 180.0) -> Any:
    """Start the destination agent in ``job.dst`` and wait until it listens."""
    proc = lab.spawn_agent(job.dst, job.destination_command(), stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    ready = read_line(proc.stdout, wait_s)
    if not ready or "listening" not in ready:
        proc.kill()
        err = proc.stderr.read() if proc.stderr else ""
        said = "nothing" if ready is None else repr(ready)
        raise RuntimeError(f"destination agent on {job.dst} did not start listening on "
                           f"{job.dst_addr}:{job.port} within {wait_s:.0f} s (it said {said}) "
                           f"{err[-500:]}")
    return proc


class StartGate:
    """A burst's common start: each source, once connected and measured, says it is ready
    and waits (``--wait-go``); when every source of the burst is ready or has ended, the
    ready ones are told to go, so their round 0s begin together whatever each agent's
    start-up took (8 agents starting at once on this 2-core machine spread their round 0s
    over 1.6 s, the early ones short of CPU while the others started)."""

    def __init__(self, sources: int) -> None:
        self.sources = sources
        self._lock = threading.Lock()
        self._waiting: list[Any] = []
        self._settled: set[int] = set()
        self.opened_s: float | None = None  # monotonic

    def ready(self, job: MigrationJob, src: Any) -> None:
        with self._lock:
            self._waiting.append(src)
            self._settle(job)

    def ended(self, job: MigrationJob) -> None:
        """``job`` ends without its source saying ready (it failed before round 0); once
        per job however often it is said."""
        with self._lock:
            self._settle(job)

    def _settle(self, job: MigrationJob) -> None:
        if id(job) in self._settled:
            return
        self._settled.add(id(job))
        if len(self._settled) < self.sources:
            return
        self.opened_s = time.monotonic()
        for src in self._waiting:
            with contextlib.suppress(OSError, ValueError):  # it may have died meanwhile
                src.stdin.write("go\n")
                src.stdin.flush()


def migrate(lab: Lab, job: MigrationJob, t0: float | None = None,
            gate: StartGate | None = None) -> MigrationRun:
    """Run one migration to completion (or failure) and return both agents' JSON; with a
    ``gate``, its round 0 starts with the others of the gate's burst."""
    try:
        return _moved(lab, job, t0, gate)
    finally:
        if gate is not None:  # whatever happened, the others do not wait for this one
            gate.ended(job)


def _moved(lab: Lab, job: MigrationJob, t0: float | None, gate: StartGate | None
           ) -> MigrationRun:
    """The migration, the guest's network move around it where it has an identity."""
    with contextlib.ExitStack() as stack:
        src_args: list[str] = []
        if job.guest is not None:
            from ..lab.guestnet import moving

            src_args, dst_args, mover = stack.enter_context(
                moving(lab, job.guest, job.src, job.dst, job.route_move))
            run = _migrate(lab, replace(job, destination_args=(*job.destination_args,
                                                               *dst_args)),
                           src_args, t0, gate, key=job)
            if mover is not None:  # the netlink messages' own time, inside the hook's
                run.result["route_move"] = {"mode": "netlink", "applied_ms": mover.applied_ms,
                                            "error": mover.error}
            return run
        return _migrate(lab, job, src_args, t0, gate, key=job)


def _migrate(lab: Lab, job: MigrationJob, src_args: list[str], t0: float | None,
             gate: StartGate | None = None, key: MigrationJob | None = None) -> MigrationRun:
    """``key``: the job as the gate knows it (``job`` may be a copy with more arguments)."""
    run = MigrationRun(job)
    base = t0 if t0 is not None else time.monotonic()
    client = None
    dest = start_destination(lab, job)
    run.started_s = time.monotonic() - base
    src = lab.spawn_agent(job.src, [*job.source_command(), "--progress", *src_args,
                                    *(["--wait-go"] if gate else [])],
                          stdin=subprocess.PIPE if gate else None,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if job.guest is not None:  # the client asks from before the guest is up to the end
        from ..lab.guestnet import start_client_probe

        client = start_client_probe(lab, job.guest, job.client_probe_ms)
    out, err = _wait_source(src, job, gate, key or job)
    run.ended_s = time.monotonic() - base
    run.exit_code = src.returncode
    run.source_stderr = err[-2000:]
    docs = _json_lines(out)
    run.result = docs[-1] if docs else {"completed": False,
                                        "error": f"no JSON from the source: {err[-500:]}"}
    # what the migration was asked to do, for the model (testbed.results.model)
    run.result |= {"downtime_target_ms": job.downtime_ms, "max_rounds": job.max_rounds}
    try:
        dout, _ = dest.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        dest.kill()
        try:
            dout, _ = dest.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            dout = ""
    run.destination = _json_lines(dout)
    if client is not None:
        from ..lab.guestnet import PROBE_TAIL_S, stop_client_probe

        time.sleep(PROBE_TAIL_S)
        run.result["client"] = stop_client_probe(client)
        run.result["client_outage_ms"] = run.result["client"].get("outage_ms")
    guest = run.result.get("destination_pid")
    if guest and not job.keep_guest:
        # measured: stop the resumed guest, so bursts do not pile up running guests
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(int(guest), signal.SIGKILL)
    return run


ProgressSink = Callable[["MigrationJob", dict[str, Any]], None]
_sinks: list[ProgressSink] = []


@contextlib.contextmanager
def progress_to(sink: ProgressSink) -> Iterator[None]:
    """Send every migration's progress events (the source agent's ``--progress`` lines:
    phase, round, bytes sent, rate, what is left) to ``sink`` while in this block."""
    _sinks.append(sink)
    try:
        yield
    finally:
        _sinks.remove(sink)


def _wait_source(src: Any, job: MigrationJob, gate: StartGate | None = None,
                 key: MigrationJob | None = None) -> tuple[str, str]:
    """The source agent's stdout and stderr once it exits (killed after its timeout); its
    progress lines go to the sinks as they come, its readiness to the ``gate``."""
    out: list[str] = []
    err: collections.deque[str] = collections.deque(maxlen=400)

    def read_err() -> None:
        for line in src.stderr:
            if line.startswith('{"progress"'):
                with contextlib.suppress(ValueError, KeyError, TypeError):
                    event = json.loads(line)["progress"]
                    if event.get("phase") == "ready" and gate is not None:
                        gate.ready(key or job, src)
                    for sink in list(_sinks):
                        sink(job, event)
                    continue
            err.append(line)

    readers = [threading.Thread(target=lambda: out.append(src.stdout.read()), daemon=True),
               threading.Thread(target=read_err, daemon=True)]
    for r in readers:
        r.start()
    killed = ""
    try:
        src.wait(timeout=job.timeout_s + 60)
    except subprocess.TimeoutExpired:
        src.kill()
        killed = f"\nsource agent killed after {job.timeout_s + 60:.0f} s"
        with contextlib.suppress(subprocess.TimeoutExpired):
            src.wait(timeout=15)
    for r in readers:
        r.join(15)  # something else may hold its pipes
    if gate is not None:
        gate.ended(key or job)
    return "".join(out), "".join(err) + killed


def migrate_concurrently(lab: Lab, jobs: list[MigrationJob],
                         t0: float | None = None) -> list[MigrationRun]:
    """Start every job at once (a DRS-like burst), their round 0s together once every source
    is ready (:class:`StartGate`), and wait for all of them."""
    base = t0 if t0 is not None else time.monotonic()
    gate = StartGate(len(jobs)) if len(jobs) > 1 else None
    return all_at_once(jobs, lambda job: migrate(lab, job, base, gate))


def all_at_once(jobs: list[Any], run: Callable[[Any], Any]) -> list[Any]:
    """``run(job)`` for every job at once, each in a thread; their results in order. The first
    error is raised once all have ended, naming its job."""
    results: list[Any] = [None] * len(jobs)
    errors: list[BaseException] = []

    def one(i: int, job: Any) -> None:
        try:
            results[i] = run(job)
        except BaseException as exc:  # reported below, with the job named
            errors.append(RuntimeError(f"{job.label or job.src}->{job.dst}: {exc}"))

    threads = [threading.Thread(target=one, args=(i, j), daemon=True)
               for i, j in enumerate(jobs)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return [r for r in results if r is not None]

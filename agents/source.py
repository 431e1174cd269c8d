"""The source agent: preflight, pre-copy rounds over N streams, the switchover.

Switchover (two phases, the destination decides; see ``agents/switchover.py``): the guest is
paused, the last dirty set sent, COMMIT carries the digests; the destination answers PREPARED
(verified, its standby waits); the source checks its own side (layout unchanged, no page
unreadable, and, where the tracker is not trusted, the paused memory equals what was sent),
then sends GO and acts on the DECISION: the original ends only if the destination runs the
copy, and continues only if the destination will not run it. A lost answer is resolved by
asking again, never by guessing. A guard process (``agents/guard.py``) does the same if this
agent dies.
"""

from __future__ import annotations

import contextlib
import math
import statistics
import time
import uuid
from array import array
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import trio

from agents.client.gap import ProbeLog, probe
from agents.guest.guard import Guard
from agents.guest.identity import run_hook, set_link
from agents.guest.throttle import CgroupThrottle, make_throttle
from agents.guest.workload import read_header
from agents.memory.disk import DiskSource
from agents.memory.source import MemorySource, SourceRefused
from agents.precopy import PrecopyPolicy
from agents.preflight import judge_bandwidth
from agents.rdma.copy import RdmaSender, SourceRdma
from agents.resolve import settle
from agents.result import MigrationResult
from agents.runtime import faults
from agents.runtime.cputime import cpu_between, process_cpu
from agents.runtime.gcpause import gc_paused
from agents.switchover import Switchover
from agents.wire import protocol as P
from agents.wire.delivery import DeliveryMeter, TcpLosses, losses_between, path_signals, tcp_losses
from agents.wire.digest import image_digest, page_hashes
from agents.wire.sender import Sender
from agents.wire.transport import (
    FramedStream,
    RateLimiter,
    TcpTransport,
    Transport,
    buffer_for_bdp,
    raise_buffer_sysctls,
    tcp_socket_of,
)


class MigrationFailed(Exception):
    pass


@dataclass
class SourceConfig:
    host: str
    port: int
    streams: int = 1
    compress: bool = False
    bandwidth_cap_bps: float | None = None
    batch_pages: int = 256  # 1 MiB batches: each copy of a batch finds the last in cache
    policy: PrecopyPolicy = field(default_factory=PrecopyPolicy)
    preflight: str = "warn"  # off | warn | refuse
    preflight_bytes: int = 8 << 20
    min_bandwidth_bps: float = 250e6
    max_rtt_s: float = 0.150
    idle_timeout: float = 30.0
    commit_timeout: float = 60.0  # for each of PREPARED and DECISION
    timeout_s: float | None = None  # the whole migration up to GO (then: the decision rules)
    resolve_s: float = 30.0  # asking again after a lost DECISION, before "indeterminate"
    resolve_via: list[tuple[str, int]] = field(default_factory=list)  # more paths to ask
    resolve_records: str | None = None  # the destination's decision records, if reachable
    verify_source: str = "auto"  # auto (unless page-hash tracking) | always | off
    guard: bool = True  # a guard process outlives this agent (process sources)
    service: tuple[str, int] | None = None  # the guest's UDP service, for the client probe
    throttle: str = "auto"  # auto | cgroup | duty-cycle
    bind: str | None = None  # source address of every connection (the migration stack's)
    socket_buffers: str = "bdp"  # bdp: sized from the measured BDP | default: the OS's own
    guest_port: str | None = None  # the guest's vSwitch port: down once the original ended
    guest_netns: str | None = None  # the guest's namespace: re-announced there on a rollback
    guest_dev: str = "eth0"
    on_end: str | None = None  # hook run once the original has ended
    probe_interval_s: float = 0.005  # the agent's own probe of the guest's service (0: none)
    on_progress: Callable[[dict], None] | None = None  # after every round (and the stop)
    rdma: str | None = None  # RDMA device: memory pages by RDMA WRITE (agents.rdma)
    commit_table: bool = False  # COMMIT carries every page's hash (names a mismatch's pages)
    pace: bool = True  # the data streams paced by TCP at its own rate (SO_MAX_PACING_RATE)
    pipeline: bool = True  # one TCP data stream: rounds not acknowledged one by one
    start_gate: Callable[[], Awaitable[None]] | None = None  # awaited just before round 0


async def _expect(ctl: FramedStream, want: P.FrameType, what: str,
                  timeout: float | None = None) -> dict:
    if timeout is not None:
        old, ctl.idle_timeout = ctl.idle_timeout, timeout
    try:
        ftype, payload = await ctl.receive(what)
    finally:
        if timeout is not None:
            ctl.idle_timeout = old
    if ftype == P.FrameType.ERROR:
        raise MigrationFailed(f"destination refused: {P.decode_json(ftype, payload).get('error')}")
    if ftype != want:
        raise P.ProtocolError(f"expected {want.name} ({what}), got {ftype.name}")
    return P.decode_json(ftype, payload)


async def preflight(ctl: FramedStream, cfg: SourceConfig, res: MigrationResult) -> float:
    """Measure RTT and bandwidth on the control stream; warn or refuse by policy.

    The bandwidth probe sends ``preflight_bytes``, but at most a quarter of the image (at
    least 1 MiB): a small guest's migration is not mostly probe. Returns the bandwidth
    estimate in bit/s (the probe is capped like the migration; a lower bound where slow start
    or the receiver's window held the probe back: ``agents.preflight``)."""
    rtts = []
    for i in range(5):
        t0 = trio.current_time()
        await ctl.send(P.encode_json(P.FrameType.PING, {"seq": i}))
        await _expect(ctl, P.FrameType.PONG, "preflight PONG")
        rtts.append(trio.current_time() - t0)
    rtt = statistics.median(rtts)
    filler = P.encode_header(P.FrameType.FILLER, 1 << 20) + bytes(1 << 20)
    budget = min(cfg.preflight_bytes, max(1 << 20, res.image_bytes // 4))  # never the bulk
    sent = 0
    sock = tcp_socket_of(ctl.stream)
    # the most the probe delivered over any one round trip (at least 50 ms)
    meter = DeliveryMeter([sock], window_s=max(rtt, 0.05)) if sock is not None else None
    t0 = trio.current_time()
    async with trio.open_nursery() as probe:
        if meter is not None:
            probe.start_soon(meter.run, 0.005)
        while sent < budget:
            await ctl.send(filler)
            sent += len(filler)
        await ctl.send(P.encode_json(P.FrameType.PING, {"seq": "bw"}))
        await _expect(ctl, P.FrameType.PONG, "bandwidth-probe PONG")
        probe.cancel_scope.cancel()
    elapsed = max(trio.current_time() - t0 - rtt / 2, 1e-6)
    peak = meter.peak * 8 if meter is not None and meter.peak else None
    bw = judge_bandwidth(sent * 8 / elapsed, elapsed, peak,
                         path_signals(sock) if sock is not None else None,
                         cfg.min_bandwidth_bps, cfg.bandwidth_cap_bps)
    res.preflight_bytes = sent
    problems = [f"RTT {rtt * 1e3:.1f} ms above {cfg.max_rtt_s * 1e3:.0f} ms"] \
        if rtt > cfg.max_rtt_s else []
    problems += [bw.problem] if bw.problem else []
    verdict = ("refuse" if cfg.preflight == "refuse" else "warn") if problems else "ok"
    res.warnings.extend(problems)
    res.preflight = {"rtt_ms": round(rtt * 1e3, 3),
                     "bandwidth_mbps": round(bw.estimate_bps / 1e6, 1),
                     "probe_mbps": round(sent * 8 / elapsed / 1e6, 1),
                     "bandwidth_limited_by": bw.limited_by, "verdict": verdict,
                     "policy": cfg.preflight}
    if verdict == "refuse":
        raise MigrationFailed("preflight refused: " + "; ".join(problems))
    return bw.estimate_bps


async def migrate(src: MemorySource, cfg: SourceConfig, transport: Transport | None = None,
                  kind: str = "pid", disk: DiskSource | None = None) -> MigrationResult:
    """Run one migration (memory, and ``disk`` if given); never raises for a failed
    migration, the result says why."""
    res = MigrationResult(source_kind=kind, image_bytes=src.layout.nbytes,
                          dirty_tracking=src.mechanism, streams=cfg.streams,
                          memory_reader=src.reader,
                          compression="zstd" if cfg.compress else "none",
                          bandwidth_cap_mbps=(cfg.bandwidth_cap_bps / 1e6
                                              if cfg.bandwidth_cap_bps else None))
    transport = transport or TcpTransport(local_address=cfg.bind)
    res.transport, res.encrypted = transport.name, transport.encrypted
    if disk is not None:
        res.disk_bytes, res.disk_mode = disk.nbytes, disk.mode
    if cfg.policy.max_bytes is None:
        moved = src.layout.nbytes + (disk.nbytes if disk and disk.mode == "transfer" else 0)
        cfg.policy.max_bytes = 3 * moved
    log = ProbeLog()
    targets: list[tuple[str, int]] = [cfg.service] \
        if cfg.service and cfg.probe_interval_s > 0 else []
    mid = uuid.uuid4().hex
    sw = Switchover(mid, [(cfg.host, cfg.port), *cfg.resolve_via])
    res.migration = mid
    pid = getattr(src, "pid", None)
    if cfg.guard and pid is not None:
        sw.guard = Guard(pid, mid, sw.addrs, cfg.bind, cfg.resolve_s)
    try:
        with trio.move_on_after(cfg.timeout_s or float("inf")) as deadline:
            async with trio.open_nursery() as nursery:
                if targets:
                    nursery.start_soon(probe, targets, log, cfg.probe_interval_s)
                    await trio.sleep(0.05)
                try:
                    with gc_paused():
                        await _run(src, disk, cfg, transport, res, targets, nursery, sw)
                finally:
                    if targets and sw.destination_runs:
                        await trio.sleep(0.3)  # let the probe hear the resumed guest
                    nursery.cancel_scope.cancel()
        if deadline.cancelled_caught:
            raise MigrationFailed(f"timed out after {cfg.timeout_s} s")
    except (MigrationFailed, P.ProtocolError, ConnectionError, OSError,
            SourceRefused) as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    except BaseExceptionGroup as group:
        leaf = _first_leaf(group)
        if not isinstance(leaf, EXPECTED):
            raise
        res.error = f"{type(leaf).__name__}: {leaf}"
    finally:
        with trio.CancelScope(shield=True):
            await _conclude(src, cfg, res, sw)
    _client_side(res, log)
    res.completed = sw.committed and res.integrity_ok
    return res


async def _conclude(src: MemorySource, cfg: SourceConfig, res: MigrationResult,
                    sw: Switchover) -> None:
    """Act on the decision: ask again if it was lost; end the original only if the
    destination runs the copy, continue it only if the destination will not."""
    if sw.undecided:
        sw.lost = res.error or "no answer to GO"
        res.warnings.append(f"outcome indeterminate after GO ({sw.lost}): the guest stays "
                            f"paused while the destination is asked again")
        answer = await trio.to_thread.run_sync(settle, sw.addrs, sw.mid, cfg.resolve_s,
                                               cfg.resolve_records, cfg.bind)
        if answer is not None:
            sw.decided(answer, answer.get("via"))
            res.resolved_via = sw.resolved_via
    res.outcome = sw.outcome()
    res.decision = sw.answer.get("decision") if sw.answer else None
    if sw.undecided:  # nobody could say: exactly one copy must not become two
        res.error = (f"indeterminate: {sw.lost}; the guest stays paused; settle with "
                     f"python -m agents resolve --migration {sw.mid} --pid "
                     f"{getattr(src, 'pid', '?')} --to {cfg.host}:{cfg.port}")
    elif sw.destination_runs:
        _end_original(src, cfg, res)
        if sw.lost is not None:
            res.error = None  # resolved: the copy runs at the destination
    else:
        src.cont()
        if cfg.guest_netns and src.can_resume:
            _reannounce(cfg, res)
    if sw.committed and sw.answer:
        _record_decision(res, sw.answer)
    if sw.guard is not None:
        sw.guard.release()


def _end_original(src: MemorySource, cfg: SourceConfig, res: MigrationResult) -> None:
    src.end()  # the guest lives on at the destination
    if cfg.guest_port:
        try:
            set_link(cfg.guest_port, False)
        except OSError as exc:
            res.warnings.append(f"could not disconnect the original guest: {exc}")
    if cfg.on_end:
        res.hooks["on_end"] = run_hook(cfg.on_end)


def _record_decision(res: MigrationResult, answer: dict) -> None:
    res.resumed = bool(answer.get("resumed", answer.get("pid") is not None))
    res.destination_pid = answer.get("pid")
    res.destination_service = answer.get("service")
    res.resume_ms = answer.get("resume_ms")
    res.commit_ms = answer.get("commit_ms")
    if answer.get("on_resume"):
        res.hooks["on_resume"] = answer["on_resume"]


EXPECTED = (MigrationFailed, P.ProtocolError, ConnectionError, OSError, SourceRefused)


class _SourceCheck:
    """End-to-end check of the dirty tracking: the paused original must equal what was sent.

    The destination's digest proves it holds exactly what was sent; this proves that what was
    sent is the source's memory at the switchover (a tracker that missed a write fails here).
    The paused original is hashed in a thread from the pause on, while the last dirty set
    goes out and COMMIT travels, and compared with what was sent once PREPARED is in, before
    GO: a miss rolls back with the original intact. ``source_verify_ms`` is the hashing's
    time; what it adds to the downtime is what it outlasts the last round and the answer.
    """

    def __init__(self, src: MemorySource) -> None:
        self.src = src
        self.now: array | None = None

    def hash_paused(self, res: MigrationResult) -> None:
        t0 = time.perf_counter()
        self.now = page_hashes(self.src.read_all(), self.src.layout.page_size)
        res.source_verify_ms = round((time.perf_counter() - t0) * 1e3, 2)

    def compare(self, sent: array, res: MigrationResult) -> None:
        now = self.now
        assert now is not None, "the paused original was not hashed"
        differ = [] if now == sent else [i for i, (a, b) in enumerate(zip(now, sent, strict=True))
                                         if a != b]
        res.source_verified = not differ
        if differ:
            res.integrity_ok = False
            res.warnings.append(f"source memory at the switchover differs from what was sent "
                                f"in {len(differ)} page(s) (first {differ[0]}): the dirty "
                                f"tracking ({res.dirty_tracking}) missed writes")


def _reannounce(cfg: SourceConfig, res: MigrationResult) -> None:
    """The guest stays here after all: announce it again from its namespace (a destination
    may have announced it there already), like the destination would have, in a child."""
    from agents.guest.announce import announce_from
    from agents.runtime.forking import DEVNULL, fork_call, setns

    def announce() -> int:
        setns(cfg.guest_netns)
        thread = announce_from(cfg.guest_dev, "rounds=5,initial=50,max=550,step=100")
        thread.join()
        return 1 if thread.error else 0

    fork_call(announce, stdout=DEVNULL, stderr=DEVNULL, new_session=True)
    res.warnings.append("migration rolled back: the guest was announced again at the source")


def _first_leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups from the stream nurseries."""
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def _client_side(res: MigrationResult, log: ProbeLog) -> None:
    last_src = log.last_from(0)
    first_dst = log.first_from(1)
    if last_src and first_dst and first_dst[0] >= last_src[0]:
        res.client_downtime_ms = round((first_dst[0] - last_src[0]) * 1e3, 2)
        res.counter_first_at_destination = first_dst[1]
        if res.counter_at_switchover is not None:
            res.counter_continuity_ok = first_dst[1] >= res.counter_at_switchover


async def _run(src: MemorySource, disk: DiskSource | None, cfg: SourceConfig,
               transport: Transport, res: MigrationResult, targets: list,
               nursery: trio.Nursery, sw: Switchover) -> None:
    limiter = RateLimiter(cfg.bandwidth_cap_bps)
    mid = sw.mid
    refusals = src.refusals()
    if refusals:  # before anything is sent: the guest was never paused
        raise MigrationFailed("refused: " + "; ".join(refusals))
    ctl = FramedStream(await transport.connect(cfg.host, cfg.port), cfg.idle_timeout,
                       limiter=limiter)
    # opportunistic encryption is decided by the first connection
    res.transport, res.encrypted = transport.name, transport.encrypted
    res.cipher = getattr(transport, "cipher", None) if transport.encrypted else None
    data: list[FramedStream] = []
    rdma = None
    try:
        if cfg.rdma:
            if cfg.compress:
                raise MigrationFailed("--compress does not apply to RDMA WRITE")
            rdma = SourceRdma(cfg.rdma, cfg.streams, cfg.batch_pages * src.layout.page_size)
        await ctl.send(P.encode_json(P.FrameType.HELLO, {
            "version": P.VERSION, "migration": mid, "layout": src.layout.to_json(),
            "streams": cfg.streams, "can_resume": src.can_resume,
            "batch_pages": cfg.batch_pages,
            "disk": disk.describe() if disk is not None else None,
            "rdma": rdma.offer() if rdma else None}))
        ok = await _expect(ctl, P.FrameType.HELLO_OK, "HELLO_OK")
        if rdma:
            rdma.accept(ok.get("rdma"), src.layout.nbytes)
            res.transport = f"rdma+{res.transport}"  # pages by WRITE, frames over the streams
            if res.encrypted:
                res.warnings.append("RDMA WRITE carries the pages unencrypted; only the "
                                    "control and data streams are TLS")
                res.encrypted = False
        await faults.ahit("source", "hello")
        if ok.get("resume_service") and targets:
            targets.append(tuple(ok["resume_service"]))
        bw = 0.0
        if cfg.preflight != "off":
            bw = await preflight(ctl, cfg, res)
            rtt = res.preflight["rtt_ms"] / 1e3
            if cfg.socket_buffers == "bdp":
                size = buffer_for_bdp(bw, rtt)
                res.socket_buffer_bytes = size
                res.sysctls_raised = raise_buffer_sysctls(size)
                if isinstance(transport, TcpTransport) and 2 * bw / 8 * rtt > (4 << 20):
                    transport.sndbuf = size
        res.socket_buffers = cfg.socket_buffers
        for i in range(cfg.streams):
            s = FramedStream(await transport.connect(cfg.host, cfg.port), cfg.idle_timeout,
                             limiter=limiter)
            data.append(s)
            await s.send(P.encode_json(P.FrameType.DATA_HELLO, {"migration": mid, "index": i}))
        if cfg.start_gate is not None:  # connected and measured: wait for the common start
            await _gated(cfg, ctl)
        await _precopy(src, disk, cfg, res, ctl, data, nursery, sw, rdma)
    finally:
        for s in [*data, ctl]:
            await s.aclose()
        if rdma is not None:
            res.rdma = rdma.describe()
            rdma.close()


GATE_LIMIT_S = 300.0


async def _gated(cfg: SourceConfig, ctl: FramedStream) -> None:
    """Wait for ``cfg.start_gate`` (at most ``GATE_LIMIT_S``: the others' start-up, which
    takes many seconds in the emulated VM), the control stream kept alive for the
    destination meanwhile; a gate that fails fails the migration before anything was
    copied."""
    assert cfg.start_gate is not None
    failure = None
    async with _kept_alive(ctl, cfg.idle_timeout):
        try:
            with trio.fail_after(GATE_LIMIT_S):
                await cfg.start_gate()
        except trio.TooSlowError:
            failure = f"no start after {GATE_LIMIT_S} s at the gate"
        except (OSError, RuntimeError) as exc:
            failure = f"start gate: {exc}"
    if failure:
        raise MigrationFailed(failure)


async def _precopy(src: MemorySource, disk: DiskSource | None, cfg: SourceConfig,
                   res: MigrationResult, ctl: FramedStream, data: list[FramedStream],
                   nursery: trio.Nursery, sw: Switchover, rdma: SourceRdma | None = None
                   ) -> None:
    mem = RdmaSender(P.SPACE_MEMORY, src, data, rdma, cfg.batch_pages, cfg.idle_timeout) \
        if rdma else Sender(P.SPACE_MEMORY, src, data, cfg.batch_pages, cfg.compress)
    dsk = Sender(P.SPACE_DISK, disk, data, cfg.batch_pages, cfg.compress) \
        if disk is not None and disk.mode == "transfer" else None
    throttle = make_throttle(src, cfg.throttle)
    res.throttle_mechanism = throttle.mechanism
    if sw.guard is not None and isinstance(throttle, CgroupThrottle):
        sw.guard.tell(f"cgroup {throttle.home} {throttle.path}")
    nursery.start_soon(throttle.run)
    try:
        await _rounds(src, disk, mem, dsk, throttle, cfg, res, ctl, data, sw)
    finally:
        throttle.stop()
        if sw.guard is not None and isinstance(throttle, CgroupThrottle):
            sw.guard.tell("nocgroup")


KEEPALIVE = P.encode_header(P.FrameType.FILLER, 0)


async def _keepalive(ctl: FramedStream, period: float, stop: trio.Event) -> None:
    """An empty FILLER on the control stream every ``period`` s while a round's data goes
    over the data streams: a round longer than the destination's idle timeout (a slow link,
    a link flap) is not taken for a silent source."""
    while True:
        with trio.move_on_after(period):
            await stop.wait()
        if stop.is_set():
            return
        with trio.CancelScope(shield=True):  # a frame is sent whole or not at all
            await ctl.send(KEEPALIVE)


@contextlib.asynccontextmanager
async def _kept_alive(ctl: FramedStream, idle_timeout: float) -> AsyncIterator[None]:
    """The control stream kept alive (:func:`_keepalive`, thrice per idle timeout) while
    the block runs."""
    stop = trio.Event()
    async with trio.open_nursery() as keep:
        keep.start_soon(_keepalive, ctl, idle_timeout / 3, stop)
        try:
            yield
        finally:
            stop.set()


async def _send_round(mem: Sender, dsk: Sender | None, round_no: int, pages: Sequence[int],
                      blocks: list[int], res: MigrationResult, ctl: FramedStream,
                      idle_timeout: float) -> int:
    """Send one round of memory pages and disk blocks (the control stream kept alive);
    record it; return the batch count."""
    async with _kept_alive(ctl, idle_timeout):
        batches, ndata, nzero = await mem.send_round(round_no, pages)
        res.pages_sent_per_round.append(ndata + nzero)
        res.zero_pages_per_round.append(nzero)
        if dsk is not None:
            b, _, _ = await dsk.send_round(round_no, blocks)
            batches += b
            res.disk_blocks_per_round.append(len(blocks))
    return batches


async def _rounds(src: MemorySource, disk: DiskSource | None, mem: Sender, dsk: Sender | None,
                  throttle, cfg: SourceConfig, res: MigrationResult, ctl: FramedStream,
                  data: list[FramedStream], sw: Switchover) -> None:
    """Pre-copy rounds, then stop-and-copy, then the decision."""
    flow = _Flow(src, disk, mem, dsk, cfg, res, ctl, data)
    _pace(flow)
    flow.meter = _pipeline(flow)
    async with trio.open_nursery() as sampling:
        if flow.meter is not None:
            sampling.start_soon(flow.meter.run)
        pages, blocks, round_no, reason = await _precopy_rounds(flow, throttle)
        if flow.meter is not None:
            await _drain(flow, flow.meter)
        sampling.cancel_scope.cancel()
    t_pause = await _stop_and_copy(flow, throttle, sw, pages, blocks, round_no + 1, reason)
    await _decide(flow, sw, t_pause)


DRAINED = 64 << 10  # bytes still queued (unsent, or in flight beyond the path's BDP): drained
DRAIN_LIMIT_S = 2.0  # the guest runs on meanwhile: a stalled link is the pause's to meet


async def _drain(f: _Flow, meter: DeliveryMeter) -> None:
    """Let the queued bytes leave before the pause: the last dirty set must not wait
    behind the rest (``agents.wire.delivery``)."""
    f.res.drain_ms = round(await meter.drain(DRAINED, DRAIN_LIMIT_S) * 1e3, 2)
    if meter.undrained:
        rate, socks = meter.undrained
        f.res.warnings.append(f"still queued after {DRAIN_LIMIT_S} s at {rate:.0f} B/s: "
                              f"{[p._asdict() for p in socks]}")


def _pipeline(f: _Flow) -> DeliveryMeter | None:
    """Rounds that follow each other without the destination's acknowledgement: on one TCP
    data stream, whose order keeps a page's later copy behind its earlier one (batches of
    several streams may overtake each other, so their rounds are acknowledged); the meter
    of what the stream delivered, which then gives the rate the switchover decides on."""
    sock = tcp_socket_of(f.data[0].stream) if len(f.data) == 1 else None
    if not f.cfg.pipeline or f.cfg.rdma or sock is None:
        return None
    rtt = (f.res.preflight or {}).get("rtt_ms", 0.0) / 1e3
    meter = DeliveryMeter([sock], window_s=max(2 * rtt, 0.25))
    try:
        meter.sample()
    except OSError as exc:  # no TCP_INFO of that age: acknowledged rounds, as before
        f.res.warnings.append(f"rounds acknowledged one by one: {exc}")
        return None
    f.res.pipelined = True
    return meter


@dataclass
class _Flow:
    """What the three phases of a migration share: the spaces, their senders, the streams."""

    src: MemorySource
    disk: DiskSource | None
    mem: Sender
    dsk: Sender | None
    cfg: SourceConfig
    res: MigrationResult
    ctl: FramedStream
    data: list[FramedStream]
    wire_start: int = 0
    t_start: float = 0.0
    cpu_start: dict[str, float] | None = None  # this process's CPU when round 0 began
    meter: DeliveryMeter | None = None  # pipelined rounds: what the data stream delivered
    losses: dict[str, list[TcpLosses] | None] = field(default_factory=dict)  # by moment

    def wire(self) -> int:
        return sum(s.bytes_sent for s in [self.ctl, *self.data])

    def progress(self, phase: str, round_no: int, rate_Bps: float, remaining: int) -> None:
        if self.cfg.on_progress is not None:
            self.cfg.on_progress({
                "phase": phase, "round": round_no, "sent_bytes": self.wire() - self.wire_start,
                "image_bytes": self.res.image_bytes, "rate_mbps": round(rate_Bps * 8 / 1e6, 1),
                "remaining_bytes": remaining,
                "elapsed_s": round(trio.current_time() - self.t_start, 3)})


async def _precopy_rounds(f: _Flow, throttle) -> tuple[Sequence[int], list[int], int, str]:
    """Round 0 sends everything, each next round what was dirtied meanwhile, until the
    policy says switch over: the last dirty sets, the last round's number and the reason."""
    src, disk, cfg, res, ctl = f.src, f.disk, f.cfg, f.res, f.ctl
    policy = cfg.policy
    ps = src.layout.page_size
    f.wire_start, f.t_start, f.cpu_start = f.wire(), trio.current_time(), process_cpu()
    res.monotonic_s["round0"] = time.monotonic()
    f.losses["round0"] = _losses(f)
    src.start_tracking()
    pages: Sequence[int] = range(src.layout.npages)
    blocks: list[int] = []
    if f.dsk is not None:
        disk.start_tracking()
        blocks = list(range(disk.layout.npages))
    round_no = 0
    bw_Bps = 1.0
    rtt = (res.preflight or {}).get("rtt_ms", 0.0) / 1e3
    while True:
        t0, w0 = trio.current_time(), f.wire()
        batches = await _send_round(f.mem, f.dsk, round_no, pages, blocks, res, ctl,
                                    cfg.idle_timeout)
        await ctl.send(P.encode_json(P.FrameType.ROUND_END,
                                     {"round": round_no, "batches": batches}))
        if f.meter is None:
            await _expect(ctl, P.FrameType.ROUND_ACK, f"ROUND_ACK {round_no}")
        # else: read before PREPARED; the stream's order keeps this round ahead of the next
        dt = max(trio.current_time() - t0, 1e-6)
        sent = len(pages) + len(blocks)
        if f.meter is not None:  # what the peer acknowledged over the last window
            bw_Bps = f.meter.rate() or bw_Bps
            res.stream_rate_mbps = max(res.stream_rate_mbps, bw_Bps * 8 / 1e6)
        else:
            # the round's data rate, without the round trip its end waits for: on a long
            # path that wait is most of a small round (150 ms of 0.5 s), and a rate deflated
            # by it would keep a converging guest pre-copying and throttle it for the path
            bw_Bps = (f.wire() - w0) / max(dt - rtt, dt / 4) if sent > 64 else bw_Bps
            res.stream_rate_mbps = max(res.stream_rate_mbps, (f.wire() - w0) * 8 / dt / 1e6)
        res.round_seconds.append(round(dt, 4))
        res.decision_rate_mbps.append(round(bw_Bps * 8 / 1e6, 1))
        pages = src.dirty()
        blocks = disk.dirty() if f.dsk is not None else []
        res.dirty_pages_per_round.append(len(pages))
        remaining = len(pages) * ps + len(blocks) * (disk.layout.page_size if disk else 0)
        f.progress("precopy", round_no, bw_Bps, remaining)
        reason = policy.switchover(round_no, remaining, bw_Bps, f.wire() - f.wire_start)
        if round_no == 0:
            await faults.ahit("source", "precopy")
        if reason:
            return pages, blocks, round_no, reason
        throttle.set(policy.next_throttle(throttle.level, remaining / dt, bw_Bps))
        round_no += 1


def _pace(f: _Flow) -> None:
    """The data streams are paced by TCP itself, at its own rate (1.2x the window per round
    trip once out of slow start), never capped: a window leaves spread over the round trip.

    Where rounds are acknowledged the data streams wait between rounds, after which an
    unpaced sender puts a whole congestion window on the wire at once: measured at 100 ms
    RTT and 250 Mbit/s with cubic, the stop-and-copy's 3.8 MB overflowed the bottleneck's
    queue (one bandwidth-delay product), its whole tail was lost, and the retransmission
    timeout restarted the window at one segment: 2.4 s of downtime in 1 of 4 runs. A cap at
    the last round's rate avoided it too, but held a migration of a burst to its share
    after the others had ended (the capped burst of 8 took 20 % longer)."""
    if not f.cfg.pace or f.cfg.rdma:
        return
    paced = [s.pace(math.inf) for s in f.data]
    f.res.paced = "tcp" if paced and all(paced) else None


def _losses(f: _Flow) -> list[TcpLosses] | None:
    """The data streams' retransmissions so far (None: not TCP, or a kernel without)."""
    socks = [tcp_socket_of(s.stream) for s in f.data]
    if not socks or None in socks:
        return None
    try:
        return [tcp_losses(s) for s in socks if s is not None]
    except OSError:
        return None


def _record_losses(f: _Flow, prepared: list[TcpLosses] | None) -> None:
    """What the data streams retransmitted in pre-copy (round 0 to the pause) and in the
    switchover (the pause to PREPARED): a slow last round that lost its tail waited for a
    retransmission timeout, which the network caused, not the agents."""
    at = f.losses
    if at.get("round0") and at.get("pause"):
        f.res.tcp_losses["precopy"] = losses_between(at["round0"], at["pause"])
    if at.get("pause") and prepared:
        f.res.tcp_losses["switchover"] = losses_between(at["pause"], prepared)


async def _stop_and_copy(f: _Flow, throttle, sw: Switchover, pages: Sequence[int],
                         blocks: list[int], round_no: int, reason: str) -> float:
    """Pause the guest, send only the last dirty set, commit the image and wait for
    PREPARED (the source check of the paused original overlapping all three); the time the
    guest was paused."""
    src, disk, mem, dsk, cfg, res, ctl = f.src, f.disk, f.mem, f.dsk, f.cfg, f.res, f.ctl
    t_pause = trio.current_time()
    res.monotonic_s["pause"] = time.monotonic()
    f.losses["pause"] = _losses(f)
    sw.stopped()
    src.pause()
    throttle.release()  # the cgroup's removal waits for the end (agents.guest.throttle)
    await faults.ahit("source", "stopped")
    final = sorted(set(pages) | set(src.dirty()))
    final_blocks = sorted(set(blocks) | set(disk.dirty())) if dsk is not None else []
    res.counter_at_switchover = _guest_counter(src)
    res.stop_ms = round((trio.current_time() - t_pause) * 1e3, 2)
    # page-hash tracking: its last collect compared every page already
    check = _SourceCheck(src) if cfg.verify_source == "always" or (
        cfg.verify_source == "auto" and src.mechanism != "page-hash") else None
    async with trio.open_nursery() as checks:  # the source check overlaps the rest
        if check is not None:
            checks.start_soon(trio.to_thread.run_sync, check.hash_paused, res)
        f.progress("stop-and-copy", round_no, 0.0, len(final) * src.layout.page_size)
        batches = await _send_round(mem, dsk, round_no, final, final_blocks, res, ctl,
                                    cfg.idle_timeout)
        res.monotonic_s["final_written"] = time.monotonic()
        res.cpu_copy_s = cpu_between(f.cpu_start, process_cpu())
        res.dirty_pages_per_round.append(len(final))
        await ctl.send(P.encode_json(P.FrameType.ROUND_END,
                                     {"round": round_no, "batches": batches, "final": True}))
        refusals = src.refusals()  # while paused: what the image would silently leave out
        res.warnings.extend(src.warnings)
        if refusals:
            await _abort(ctl)
            raise MigrationFailed("refused: " + "; ".join(refusals))
        info = {"digest": image_digest(mem.hashes), "pages": len(mem.hashes)}
        if disk is not None:
            info["disk_digest"] = image_digest(dsk.hashes) if dsk else disk.digest_now()
        await ctl.send_parts(P.commit_parts(info, mem.hashes if cfg.commit_table else None))
        await faults.ahit("source", "commit")
        if f.meter is not None:  # pipelined: every pre-copy round's acknowledgement, long in
            for rnd in range(round_no):
                await _expect(ctl, P.FrameType.ROUND_ACK, f"ROUND_ACK {rnd}",
                              cfg.commit_timeout)
        prepared = await _expect(ctl, P.FrameType.PREPARED, "PREPARED", cfg.commit_timeout)
        res.monotonic_s["prepared"] = time.monotonic()
        _record_losses(f, _losses(f))
    if check is not None:
        check.compare(mem.hashes, res)
    res.rounds = round_no + 1
    res.switchover_reason = reason
    res.throttle_max = throttle.max_level
    res.verify_ms = prepared.get("verify_ms")
    res.prepare_ms = prepared.get("prepare_ms")
    if not prepared.get("ok"):
        res.integrity_ok = False
        raise MigrationFailed(f"destination rejected the image: {prepared.get('error')}")
    if check is not None and not res.source_verified:
        await _abort(ctl)
        raise MigrationFailed("the paused original differs from what was sent")
    res.integrity_ok = True
    return t_pause


async def _decide(f: _Flow, sw: Switchover, t_pause: float) -> None:
    """GO, then only the destination's answer counts; the result's times and rates."""
    res, ctl, cfg = f.res, f.ctl, f.cfg
    sw.pending()
    await faults.ahit("source", "go")
    if not faults.drops("source", "go"):
        await ctl.send(P.encode_json(P.FrameType.GO, {"migration": sw.mid}))
    answer = await _expect(ctl, P.FrameType.DECISION, "DECISION", cfg.commit_timeout)
    t_ack = trio.current_time()
    res.monotonic_s["decided"] = time.monotonic()
    sw.decided(answer)
    await faults.ahit("source", "decided")
    res.bytes_on_wire = f.wire() - f.wire_start
    res.disk_bytes_on_wire = f.dsk.bytes_sent if f.dsk else 0
    res.migration_time_s = round(t_ack - f.t_start, 4)
    res.goodput_mbps = round(res.bytes_on_wire * 8 / max(t_ack - f.t_start, 1e-6) / 1e6, 1)
    res.stream_rate_mbps = round(res.stream_rate_mbps, 1)
    if sw.committed:
        res.downtime_ms = round((t_ack - t_pause) * 1e3, 2)
    else:
        res.error = f"destination aborted at the decision: {answer.get('error')}"
    f.progress("decided" if sw.committed else "aborted", res.rounds or 0, 0.0, 0)
    with contextlib.suppress(P.ProtocolError, ConnectionError, OSError):
        await ctl.send(P.encode_json(P.FrameType.CONFIRM, {"migration": sw.mid}))


async def _abort(ctl: FramedStream) -> None:
    """Roll back before GO: the destination discards its standby (it would anyway once
    the connection is gone)."""
    with contextlib.suppress(P.ProtocolError, ConnectionError, OSError), \
            trio.move_on_after(2):
        await ctl.send(P.encode_json(P.FrameType.ABORT, {}))
        await ctl.receive("DECISION after ABORT")


def _guest_counter(src: MemorySource) -> int | None:
    if not src.can_resume:
        return None
    (_, _, view), = src.read_runs([0], bytearray(src.layout.page_size))
    with contextlib.suppress(ValueError):
        return read_header(bytes(view))[1]
    return None

"""The source agent: preflight, pre-copy rounds over N streams, switchover, commit.

Until the destination acknowledges a verified (and, for a guest, resumed) image, the guest at
the source is only ever stopped, never ended: every failure path lets it continue.
"""

from __future__ import annotations

import contextlib
import statistics
import uuid
from dataclasses import dataclass, field

import trio

from agents import protocol as P
from agents.digest import image_digest, page_hashes
from agents.memory.dirty import HashTracker
from agents.memory.source import MemorySource
from agents.precopy import PrecopyPolicy, Throttle
from agents.probe import ProbeLog, probe
from agents.result import MigrationResult
from agents.transport import (
    FramedStream,
    RateLimiter,
    TcpTransport,
    Transport,
    buffer_for_bdp,
    raise_buffer_sysctls,
)
from agents.workload import read_header


class MigrationFailed(Exception):
    pass


@dataclass
class SourceConfig:
    host: str
    port: int
    streams: int = 1
    compress: bool = False
    bandwidth_cap_bps: float | None = None
    batch_pages: int = 256
    policy: PrecopyPolicy = field(default_factory=PrecopyPolicy)
    preflight: str = "warn"  # off | warn | refuse
    preflight_bytes: int = 8 << 20
    min_bandwidth_bps: float = 250e6
    max_rtt_s: float = 0.150
    idle_timeout: float = 30.0
    commit_timeout: float = 60.0
    service: tuple[str, int] | None = None  # the guest's UDP service, for the client probe


class Sender:
    """Sends sets of pages as checked batches over the data streams, one round at a time."""

    def __init__(self, src: MemorySource, streams: list[FramedStream], cfg: SourceConfig):
        self.src, self.streams, self.cfg = src, streams, cfg
        self.ps = src.layout.page_size
        self.zero = bytes(self.ps)

    async def send_round(self, round_no: int, pages: list[int]) -> tuple[int, int, int]:
        """Send ``pages``; returns (batches, data pages, zero pages)."""
        bp = self.cfg.batch_pages
        chunks = [pages[i : i + bp] for i in range(0, len(pages), bp)]
        counts = [0, 0, 0]
        tracker = getattr(self.src, "tracker", None)
        note = tracker.note_sent if isinstance(tracker, HashTracker) else None
        send_ch, recv_ch = trio.open_memory_channel[list[int]](len(chunks) or 1)
        for c in chunks:
            send_ch.send_nowait(c)
        send_ch.close()

        async def worker(stream: FramedStream) -> None:
            async with recv_ch.clone() as ch:
                async for chunk in ch:
                    entries: list = []
                    for page, data in self.src.read_pages(chunk):
                        if note:
                            note(page, data)
                        if data == self.zero:
                            entries.append((page, None))
                            counts[2] += 1
                        else:
                            entries.append((page, data))
                            counts[1] += 1
                    frame = P.encode_batch(P.SPACE_MEMORY, round_no, entries, self.ps,
                                           self.cfg.compress)
                    await stream.send(frame)
                    counts[0] += 1

        async with recv_ch, trio.open_nursery() as nursery:
            for s in self.streams:
                nursery.start_soon(worker, s)
        return counts[0], counts[1], counts[2]


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

    Returns the bandwidth estimate in bit/s (the probe is capped like the migration)."""
    rtts = []
    for i in range(5):
        t0 = trio.current_time()
        await ctl.send(P.encode_json(P.FrameType.PING, {"seq": i}))
        await _expect(ctl, P.FrameType.PONG, "preflight PONG")
        rtts.append(trio.current_time() - t0)
    rtt = statistics.median(rtts)
    filler = P.encode_header(P.FrameType.FILLER, 1 << 20) + bytes(1 << 20)
    sent = 0
    t0 = trio.current_time()
    while sent < cfg.preflight_bytes:
        await ctl.send(filler)
        sent += len(filler)
    await ctl.send(P.encode_json(P.FrameType.PING, {"seq": "bw"}))
    await _expect(ctl, P.FrameType.PONG, "bandwidth-probe PONG")
    elapsed = max(trio.current_time() - t0 - rtt / 2, 1e-6)
    bw = sent * 8 / elapsed
    res.preflight_bytes = sent
    verdict, problems = "ok", []
    if rtt > cfg.max_rtt_s:
        problems.append(f"RTT {rtt * 1e3:.1f} ms above {cfg.max_rtt_s * 1e3:.0f} ms")
    if bw < cfg.min_bandwidth_bps:
        problems.append(f"bandwidth {bw / 1e6:.0f} Mbit/s below "
                        f"{cfg.min_bandwidth_bps / 1e6:.0f} Mbit/s")
    if problems:
        verdict = "refuse" if cfg.preflight == "refuse" else "warn"
        res.warnings.extend(problems)
    res.preflight = {"rtt_ms": round(rtt * 1e3, 3), "bandwidth_mbps": round(bw / 1e6, 1),
                     "verdict": verdict, "policy": cfg.preflight}
    if verdict == "refuse":
        raise MigrationFailed("preflight refused: " + "; ".join(problems))
    return bw


async def migrate(src: MemorySource, cfg: SourceConfig, transport: Transport | None = None,
                  kind: str = "pid") -> MigrationResult:
    """Run one migration; never raises for a failed migration, the result says why."""
    res = MigrationResult(source_kind=kind, image_bytes=src.layout.nbytes,
                          dirty_tracking=src.mechanism, streams=cfg.streams,
                          compression="zstd" if cfg.compress else "none",
                          bandwidth_cap_mbps=(cfg.bandwidth_cap_bps / 1e6
                                              if cfg.bandwidth_cap_bps else None))
    transport = transport or TcpTransport()
    res.transport, res.encrypted = transport.name, transport.encrypted
    if cfg.policy.max_bytes is None:
        cfg.policy.max_bytes = 3 * src.layout.nbytes
    committed = False
    log = ProbeLog()
    targets: list[tuple[str, int]] = [cfg.service] if cfg.service else []
    try:
        async with trio.open_nursery() as nursery:
            if targets:
                nursery.start_soon(probe, targets, log)
                await trio.sleep(0.05)
            try:
                committed = await _run(src, cfg, transport, res, targets, nursery)
            finally:
                if targets and committed:
                    await trio.sleep(0.3)  # let the probe hear the resumed guest
                nursery.cancel_scope.cancel()
    except (MigrationFailed, P.ProtocolError, ConnectionError, OSError) as exc:
        res.error = f"{type(exc).__name__}: {exc}"
    except BaseExceptionGroup as group:
        leaf = _first_leaf(group)
        if not isinstance(leaf, EXPECTED):
            raise
        res.error = f"{type(leaf).__name__}: {leaf}"
    finally:
        if not committed:
            src.cont()
    _client_side(res, log)
    res.completed = committed and res.integrity_ok and res.error is None
    return res


EXPECTED = (MigrationFailed, P.ProtocolError, ConnectionError, OSError)


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


async def _run(src: MemorySource, cfg: SourceConfig, transport: Transport,
               res: MigrationResult, targets: list, nursery: trio.Nursery) -> bool:
    limiter = RateLimiter(cfg.bandwidth_cap_bps)
    mid = uuid.uuid4().hex
    ctl = FramedStream(await transport.connect(cfg.host, cfg.port), cfg.idle_timeout,
                       limiter=limiter)
    data: list[FramedStream] = []
    try:
        await ctl.send(P.encode_json(P.FrameType.HELLO, {
            "version": P.VERSION, "migration": mid, "layout": src.layout.to_json(),
            "streams": cfg.streams, "can_resume": src.can_resume,
            "batch_pages": cfg.batch_pages}))
        ok = await _expect(ctl, P.FrameType.HELLO_OK, "HELLO_OK")
        if ok.get("resume_service") and targets:
            targets.append(tuple(ok["resume_service"]))
        bw = 0.0
        if cfg.preflight != "off":
            bw = await preflight(ctl, cfg, res)
            rtt = res.preflight["rtt_ms"] / 1e3
            size = buffer_for_bdp(bw, rtt)
            res.socket_buffer_bytes = size
            res.sysctls_raised = raise_buffer_sysctls(size)
            if isinstance(transport, TcpTransport) and 2 * bw / 8 * rtt > (4 << 20):
                transport.sndbuf = size
        for i in range(cfg.streams):
            s = FramedStream(await transport.connect(cfg.host, cfg.port), cfg.idle_timeout,
                             limiter=limiter)
            data.append(s)
            await s.send(P.encode_json(P.FrameType.DATA_HELLO, {"migration": mid, "index": i}))
        return await _precopy(src, cfg, res, ctl, data, nursery)
    finally:
        for s in [*data, ctl]:
            await s.aclose()


async def _precopy(src: MemorySource, cfg: SourceConfig, res: MigrationResult,
                   ctl: FramedStream, data: list[FramedStream], nursery: trio.Nursery) -> bool:
    sender = Sender(src, data, cfg)
    policy = cfg.policy
    ps = src.layout.page_size
    throttle = Throttle(src)
    nursery.start_soon(throttle.run)

    def wire() -> int:
        return sum(s.bytes_sent for s in [ctl, *data])

    wire_start = wire()
    t_start = trio.current_time()
    src.start_tracking()
    pages = list(range(src.layout.npages))
    round_no = 0
    bw_Bps = 1.0
    reason = ""
    while True:
        t0, w0 = trio.current_time(), wire()
        batches, ndata, nzero = await sender.send_round(round_no, pages)
        await ctl.send(P.encode_json(P.FrameType.ROUND_END,
                                     {"round": round_no, "batches": batches}))
        await _expect(ctl, P.FrameType.ROUND_ACK, f"ROUND_ACK {round_no}")
        dt = max(trio.current_time() - t0, 1e-6)
        bw_Bps = (wire() - w0) / dt if ndata > 64 else bw_Bps
        res.pages_sent_per_round.append(ndata + nzero)
        res.zero_pages_per_round.append(nzero)
        res.round_seconds.append(round(dt, 4))
        res.stream_rate_mbps = max(res.stream_rate_mbps, (wire() - w0) * 8 / dt / 1e6)
        pages = src.dirty()
        res.dirty_pages_per_round.append(len(pages))
        reason = policy.switchover(round_no, len(pages) * ps, bw_Bps, wire() - wire_start)
        if reason:
            break
        throttle.set(policy.next_throttle(throttle.level, len(pages) * ps / dt, bw_Bps))
        round_no += 1

    # --- stop and copy ---------------------------------------------------------------------
    throttle.stop()
    t_pause = trio.current_time()
    src.pause()
    final = sorted(set(pages) | set(src.dirty()))
    image = src.read_all()
    hashes = page_hashes(image, ps)
    res.counter_at_switchover = _guest_counter(src, image)
    res.warnings.extend(src.layout_warnings())
    round_no += 1
    batches, ndata, nzero = await sender.send_round(round_no, final)
    res.pages_sent_per_round.append(ndata + nzero)
    res.zero_pages_per_round.append(nzero)
    res.dirty_pages_per_round.append(len(final))
    await ctl.send(P.encode_json(P.FrameType.ROUND_END,
                                 {"round": round_no, "batches": batches, "final": True}))
    await ctl.send(P.encode_commit({"digest": image_digest(hashes), "pages": len(hashes)},
                                   hashes.tobytes()))
    ack = await _expect(ctl, P.FrameType.ACK, "commit ACK", cfg.commit_timeout)
    t_ack = trio.current_time()
    res.rounds = round_no + 1
    res.switchover_reason = reason
    res.throttle_max = throttle.max_level
    res.bytes_on_wire = wire() - wire_start
    res.migration_time_s = round(t_ack - t_start, 4)
    res.goodput_mbps = round(res.bytes_on_wire * 8 / max(t_ack - t_start, 1e-6) / 1e6, 1)
    res.stream_rate_mbps = round(res.stream_rate_mbps, 1)
    res.verify_ms = ack.get("verify_ms")
    if not ack.get("ok"):
        res.integrity_ok = False
        raise MigrationFailed(f"destination rejected the image: {ack.get('error')}")
    res.integrity_ok = True
    res.downtime_ms = round((t_ack - t_pause) * 1e3, 2)
    res.resumed = bool(ack.get("resumed"))
    res.destination_pid = ack.get("pid")
    res.destination_service = ack.get("service")
    if res.resumed:
        src.end()  # the guest lives on at the destination
    else:
        src.cont()  # verified copy only (foreign process, image): the original carries on
    return True


def _guest_counter(src: MemorySource, image: memoryview) -> int | None:
    if not src.can_resume:
        return None
    with contextlib.suppress(ValueError):
        return read_header(bytes(image[:4096]))[1]
    return None

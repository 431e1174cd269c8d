"""The RDMA data path: the source WRITEs batches into the destination's registered image, then
announces each batch (run table + checksum) on its TCP data stream; the destination checks
what landed.

Source, per data stream (one RC queue pair each): up to ``depth`` batches in flight, each in
its own slot of a registered copy buffer; a batch's data runs go out as RDMA WRITEs (one per
run, posted together as one chain, the last signalled); its ``RDMA_PAGES`` notice is sent only
after that completion (the responder has placed every byte), so the destination never hashes
a page still in transit. Between completions the sender sleeps on the queue pair's completion
channel (``wait_written``), it does not poll.
The notice is the TCP PAGES frame's header and run table without the data: the same checksum
over the same fields (its ``raw_len`` counts the data as placed).

Destination: the image region (``DestRdma``) is registered with remote write access for the
length of the image only; a notice is checked against the layout and the unit hashes of the
image bytes, exactly as a TCP batch received in place (``agents.receiver``).
"""

from __future__ import annotations

import collections
import contextlib
from array import array
from collections.abc import Sequence
from typing import Any

import trio

from agents.rdma.verbs import Device, Link, QPInfo, RdmaError, address_of
from agents.runtime.cputime import ThreadCpu
from agents.wire import protocol as P
from agents.wire.digest import hash_views
from agents.wire.imagestore import ImageStore
from agents.wire.sender import Sender, UnitSource, batches_of
from agents.wire.transport import FramedStream, PeerStalled

DEPTH = 4  # batches in flight per stream (4 MiB at 256-page batches: 50 ms x 670 Mbit/s)


def _parse_peer(obj: object, what: str) -> dict[str, Any]:
    if not isinstance(obj, dict):
        raise P.ProtocolError(f"{what}: no RDMA description")
    try:
        gid = str(obj["gid"])
        qps = [QPInfo(int(q), int(p)) for q, p in zip(obj["qpns"], obj["psns"], strict=True)]
    except (KeyError, TypeError, ValueError) as exc:
        raise P.ProtocolError(f"{what}: bad RDMA description ({exc})") from None
    if len(gid) != 39 or not qps:
        raise P.ProtocolError(f"{what}: bad RDMA description (GID {gid!r}, {len(qps)} QPs)")
    return {"gid": gid, "qps": qps, **{k: obj.get(k) for k in ("addr", "rkey", "length")}}


class SourceRdma:
    """The source's device, copy buffer and queue pairs (one per data stream)."""

    def __init__(self, device: str, streams: int, batch_bytes: int) -> None:
        self.dev = Device(device)
        self.batch_bytes = batch_bytes
        self.slots = DEPTH
        per_stream = batch_bytes * self.slots
        import mmap

        self.buf = mmap.mmap(-1, per_stream * streams)
        self.buf[::4096] = bytes(len(range(0, len(self.buf), 4096)))  # fault it in now
        self.mr = self.dev.register(self.buf, len(self.buf), remote_write=False)
        self.base = address_of(self.buf)
        self.links = [Link(self.dev, 2 * self.slots * (batch_bytes // 4096 // 2 + 1),
                           remote_write=False, events=True) for _ in range(streams)]
        self.remote: dict[str, Any] = {}
        self.bytes_written = 0

    def offer(self) -> dict[str, Any]:
        """What HELLO carries: this side's GID and queue pairs."""
        return {"gid": self.dev.gid, "qpns": [lk.info.qpn for lk in self.links],
                "psns": [lk.info.psn for lk in self.links], "device": self.dev.name}

    def accept(self, reply: object, image_bytes: int) -> None:
        """Connect to the queue pairs and region in HELLO_OK; refuse a region that cannot
        hold the image before anything is written."""
        peer = _parse_peer(reply, "destination's HELLO_OK")
        if len(peer["qps"]) != len(self.links):
            raise P.ProtocolError(f"destination offered {len(peer['qps'])} RDMA queue pairs "
                                  f"for {len(self.links)} streams")
        try:
            addr, rkey, length = int(peer["addr"]), int(peer["rkey"]), int(peer["length"])
        except (TypeError, ValueError):
            raise P.ProtocolError("destination's RDMA region lacks addr/rkey/length") from None
        if length < image_bytes:
            raise RdmaError(f"destination's RDMA region is too small: {length} bytes at "
                            f"{addr:#x} for an image of {image_bytes} bytes (nothing written)")
        for lk, qp in zip(self.links, peer["qps"], strict=True):
            lk.connect(peer["gid"], qp)
        self.remote = {"addr": addr, "rkey": rkey, "length": length, "gid": peer["gid"]}

    def describe(self) -> dict[str, Any]:
        return {"device": self.dev.name, "gid": self.dev.gid, "mtu": 128 << self.dev.mtu,
                "queue_pairs": len(self.links), "batches_in_flight": self.slots,
                "region_bytes": self.remote.get("length"), "peer_gid": self.remote.get("gid"),
                "bytes_written": self.bytes_written}

    def close(self) -> None:
        self.dev.close()


class RdmaSender(Sender):
    """``Sender`` whose data units go by RDMA WRITE; its frames carry only the run tables."""

    def __init__(self, space: int, src: UnitSource, streams: list[FramedStream],
                 rdma: SourceRdma, batch_units: int, idle_timeout: float) -> None:
        super().__init__(space, src, streams, batch_units, compress=False)
        self.rdma = rdma
        self.idle_timeout = idle_timeout
        self._seq = 0

    def _writes(self, parts: list, slot: memoryview, slot_addr: int
                ) -> tuple[list[tuple[int, int, int]], bytes, int]:
        """The WRITEs of one built batch (its data views paired with its data runs), the
        notice frame, and the data bytes."""
        head, table, datas = bytes(parts[0]), bytes(parts[1]), parts[2:]
        runs = list(P.RUN.iter_unpack(table))
        ps, base = self.unit, self.rdma.remote["addr"]
        writes, off, total = [], 0, 0
        for (first, n, kind) in runs:
            if kind != P.KIND_DATA:
                continue
            view = datas[len(writes)]
            size = n * ps
            if view.obj is self.rdma.buf:  # in the registered copy buffer already
                laddr = address_of(view)
            else:  # a view of the source's own memory (an image file): copy it in
                slot[off : off + size] = view
                laddr = slot_addr + off
                off += size
            writes.append((laddr, base + first * ps, size))
            total += size
        notice = P.encode_header(P.FrameType.RDMA_PAGES, len(head) - P.HEADER.size +
                                 len(table)) + head[P.HEADER.size :] + table
        return writes, notice, total

    async def send_round(self, round_no: int, units: Sequence[int]) -> tuple[int, int, int]:
        bp = self.batch_units
        counts = [0, 0, 0]
        recv_ch = batches_of(units, bp)
        stride = self.rdma.batch_bytes

        async def worker(index: int, stream: FramedStream) -> None:
            link = self.rdma.links[index]
            first_slot = index * self.rdma.slots
            view = memoryview(self.rdma.buf)
            inflight: collections.deque = collections.deque()
            wrs = 0

            async def retire() -> None:
                nonlocal wrs
                seq, notice, nbytes, nwr, chunk_len, nzero = inflight.popleft()
                await self._complete(link, seq)
                wrs -= nwr
                if stream.limiter:
                    await stream.limiter.acquire(nbytes)
                await stream.send(notice)
                stream.bytes_sent += nbytes  # the WRITEs' payload counts as on the wire
                self.bytes_sent += nbytes + len(notice)
                self.rdma.bytes_written += nbytes
                counts[0] += 1
                counts[1] += chunk_len - nzero
                counts[2] += nzero

            async with recv_ch.clone() as ch:
                i = 0
                async for chunk in ch:
                    if len(inflight) == self.rdma.slots:
                        await retire()
                    s = first_slot + i % self.rdma.slots
                    i += 1
                    slot = view[s * stride : (s + 1) * stride]
                    parts, nzero = self.build(round_no, chunk, slot)
                    writes, notice, nbytes = self._writes(parts, slot, self.rdma.base +
                                                          s * stride)
                    while inflight and wrs + len(writes) > link.depth:
                        await retire()
                    self._seq += 1
                    if writes:
                        link.post_writes(writes, self.rdma.mr.lkey, self.rdma.remote["rkey"],
                                         self._seq)
                        wrs += len(writes)
                    inflight.append((self._seq if writes else None, notice, nbytes,
                                     len(writes), len(chunk), nzero))
                while inflight:
                    await retire()

        async with recv_ch, trio.open_nursery() as nursery:
            for i, s in enumerate(self.streams):
                nursery.start_soon(worker, i, s)
        return counts[0], counts[1], counts[2]

    async def _complete(self, link: Link, seq: int | None) -> None:
        """Wait for batch ``seq``'s completion (``None``: a batch of zero pages only, nothing
        was written); RdmaError if a WRITE failed, PeerStalled after the idle timeout."""
        if seq is not None:
            await wait_written(link, seq, self.idle_timeout)


async def wait_written(link: Link, seq: int, idle_timeout: float) -> None:
    """Wait for the completion with wr_id ``seq``, asleep on the link's completion channel
    between completions: drain the queue, arm it, drain again (a completion that came before
    arming raises no event), then wait for the event, acknowledge it and repeat. RdmaError if
    a WRITE failed; PeerStalled if none came within ``idle_timeout`` seconds."""
    done = link.done
    deadline = trio.current_time() + idle_timeout
    while seq not in done:
        got = link.poll()
        if not got:
            link.arm()
            got = link.poll()
        if got:
            done.update(got)
            continue
        if trio.current_time() > deadline:
            raise PeerStalled(f"RDMA WRITE not completed after {idle_timeout} s")
        with trio.move_on_at(deadline):
            await trio.lowlevel.wait_readable(link.fd)
        link.take_event()
    done.discard(seq)


class DestRdma:
    """One migration's image region and queue pairs on the destination's device (opened
    once by the destination and kept: ``Destination.rdma_device``)."""

    def __init__(self, dev: Device, image: Any, image_bytes: int, offer: object,
                 max_region: int | None = None) -> None:
        peer = _parse_peer(offer, "source's HELLO")
        if not 1 <= len(peer["qps"]) <= 64:
            raise P.ProtocolError(f"source asks for {len(peer['qps'])} RDMA queue pairs")
        self.dev = dev
        self.mr: Any = None
        self.links: list[Link] = []
        try:
            self.length = min(image_bytes, max_region) if max_region else image_bytes
            self.mr = self.dev.register(image, max(self.length, 4096), remote_write=True)
            self.addr = address_of(image)
            for _ in peer["qps"]:
                self.links.append(Link(self.dev, 16, remote_write=True))
            for lk, qp in zip(self.links, peer["qps"], strict=True):
                lk.connect(peer["gid"], qp)
        except BaseException:
            self.close()
            raise
        self.peer_gid = peer["gid"]

    def reply(self) -> dict[str, Any]:
        """What HELLO_OK carries: the region (address, length, rkey) and the queue pairs."""
        return {"gid": self.dev.gid, "qpns": [lk.info.qpn for lk in self.links],
                "psns": [lk.info.psn for lk in self.links], "addr": self.addr,
                "rkey": self.mr.rkey, "length": self.length, "device": self.dev.name}

    def close(self) -> None:
        """Destroy the queue pairs and deregister the region (the peer's rkey stops
        working); the device stays open for the next migration."""
        for lk in self.links:
            lk.close()
        if self.mr is not None:
            with contextlib.suppress(Exception):  # best effort at teardown
                self.mr.close()
        self.links, self.mr = [], None


async def receive_placed(stream: FramedStream, length: int, limits: dict[int, P.BatchLimits],
                         stores: dict[int, ImageStore], verify: ThreadCpu | None = None
                         ) -> P.BatchHeader:
    """An ``RDMA_PAGES`` notice of ``length`` bytes: its runs were written into the store by
    the source; check them against the layout, hash them where they landed, check the batch
    checksum, record them (zero runs are zeroed here, as over TCP). ``verify`` tallies the
    CPU of the hashing and the checksum."""
    if length < P.BATCH_HEADER.size:
        raise P.ProtocolError("truncated RDMA batch notice")
    raw_head = bytes(await stream.receive_exact(P.BATCH_HEADER.size, "RDMA batch header"))
    head = P.decode_batch_header(raw_head, limits)
    if head.flags or head.space != P.SPACE_MEMORY:
        raise P.ProtocolError("an RDMA batch must be uncompressed memory pages")
    if length != P.BATCH_HEADER.size + head.table_len:
        raise P.ProtocolError(f"RDMA batch notice of {length} bytes, its header says "
                              f"{P.BATCH_HEADER.size + head.table_len}")
    table = bytes(await stream.receive_exact(head.table_len, "RDMA batch runs"))
    runs, _ = P.decode_runs(table, head)
    store = stores[head.space]
    ps, mv = head.limits.unit_size, store.view
    views = [mv[first * ps : (first + n) * ps] for first, n, kind in runs
             if kind == P.KIND_DATA]
    t0 = ThreadCpu.start()
    hashes: array = P.check_batch(table, runs, hash_views(views, ps), head)
    if verify is not None:
        verify.stop(t0)
    store.write_runs(runs, hashes)
    return head

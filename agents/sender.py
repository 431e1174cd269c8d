"""Sends sets of units (memory pages, disk blocks) as checked batches over the data streams.

Every unit is hashed as it is sent (the same hash finds zero units), so the per-unit hash
array of what the destination must hold is always current: the switchover digest costs
only the last dirty set, never a pass over the whole image.
"""

from __future__ import annotations

from array import array
from typing import Protocol

import trio

from agents import protocol as P
from agents.digest import hash_units, zero_hash, zero_hashes
from agents.memory.dirty import HashTracker
from agents.memory.layout import Layout
from agents.transport import FramedStream


class UnitSource(Protocol):
    layout: Layout

    def read_runs(self, pages: list[int], scratch: bytearray
                  ) -> list[tuple[int, int, memoryview]]: ...


class Sender:
    """One space's batches; ``hashes[i]`` is the xxh3_64 of what was last sent for unit i."""

    def __init__(self, space: int, src: UnitSource, streams: list[FramedStream],
                 batch_units: int = 1024, compress: bool = False) -> None:
        self.space, self.src, self.streams = space, src, streams
        self.batch_units, self.compress = batch_units, compress
        self.unit = src.layout.page_size
        self.hashes = zero_hashes(src.layout.npages, self.unit)
        self.bytes_sent = 0
        self._zero, self._zh = bytes(self.unit), zero_hash(self.unit)
        tracker = getattr(src, "tracker", None)
        if isinstance(tracker, HashTracker):
            tracker.share(self.hashes)

    def build(self, round_no: int, chunk: list[int], scratch: bytearray
              ) -> tuple[list[bytes | memoryview], int]:
        """Read, hash and encode one batch of sorted units; returns (frame parts, zero units)."""
        ps, zh, zero = self.unit, self._zh, self._zero
        kinds = bytearray()
        data: list[memoryview] = []
        for first, count, view in self.src.read_runs(chunk, scratch):
            hs = hash_units(view, ps)
            self.hashes[first : first + count] = array("Q", hs)
            if zh not in hs:
                kinds += b"\x01" * count
                data.append(view)
                continue
            start = None
            for i, hv in enumerate(hs):
                o = i * ps
                if hv == zh and bytes(view[o : o + ps]) == zero:  # memcmp, not per item
                    kinds.append(P.KIND_ZERO)
                    if start is not None:
                        data.append(view[start:o])
                        start = None
                else:
                    kinds.append(P.KIND_DATA)
                    if start is None:
                        start = o
            if start is not None:
                data.append(view[start:])
        # several runs (zero units in between) go out in one sendmsg, not joined
        nzero = kinds.count(P.KIND_ZERO)
        parts = P.batch_parts(self.space, round_no, chunk, bytes(kinds), data, ps,
                              self.compress)
        return parts, nzero

    async def send_round(self, round_no: int, units: list[int]) -> tuple[int, int, int]:
        """Send ``units`` (sorted); returns (batches, data units, zero units)."""
        bp = self.batch_units
        chunks = [units[i : i + bp] for i in range(0, len(units), bp)]
        counts = [0, 0, 0]
        send_ch, recv_ch = trio.open_memory_channel[list[int]](len(chunks) or 1)
        for c in chunks:
            send_ch.send_nowait(c)
        send_ch.close()

        async def worker(stream: FramedStream) -> None:
            scratch = bytearray(bp * self.unit)
            async with recv_ch.clone() as ch:
                async for chunk in ch:
                    parts, nzero = self.build(round_no, chunk, scratch)
                    await stream.send_parts(parts)
                    self.bytes_sent += sum(len(p) for p in parts)
                    counts[0] += 1
                    counts[1] += len(chunk) - nzero
                    counts[2] += nzero

        async with recv_ch, trio.open_nursery() as nursery:
            for s in self.streams:
                nursery.start_soon(worker, s)
        return counts[0], counts[1], counts[2]

"""A client of the workload's UDP service: sees the migration gap as the client would."""

from __future__ import annotations

import contextlib
import os
import socket
import struct
from dataclasses import dataclass, field

import trio


@dataclass
class ProbeLog:
    """Replies as (receive time, counter, service index); the gap is the longest silence."""

    replies: list[tuple[float, int, int]] = field(default_factory=list)

    def longest_gap_s(self) -> float | None:
        if len(self.replies) < 2:
            return None
        times = [t for t, _, _ in self.replies]
        return max(b - a for a, b in zip(times, times[1:], strict=False))

    def first_from(self, index: int) -> tuple[float, int] | None:
        for t, c, i in self.replies:
            if i == index:
                return t, c
        return None

    def last_from(self, index: int) -> tuple[float, int] | None:
        for t, c, i in reversed(self.replies):
            if i == index:
                return t, c
        return None


async def probe(targets: list[tuple[str, int]], log: ProbeLog, interval_s: float = 0.005) -> None:
    """Ask every target for its counter each ``interval_s`` until cancelled.

    Several targets let a loopback test see the service move from the source's guest to
    the destination's (on a real path the address moves instead)."""
    sock = trio.socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    token = os.urandom(8)
    with sock:
        await sock.bind(("0.0.0.0", 0))

        async def receiver() -> None:
            while True:
                data, peer = await sock.recvfrom(512)
                if len(data) >= 21 and data[:1] == b"C" and data[13:21] == token:
                    counter, _pid = struct.unpack_from("<QI", data, 1)
                    idx = next((i for i, t in enumerate(targets) if t == peer[:2]), -1)
                    log.replies.append((trio.current_time(), counter, idx))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            while True:
                for t in targets:
                    with contextlib.suppress(OSError):
                        await sock.sendto(b"C" + token, t)
                await trio.sleep(interval_s)

"""The source agent's async client of the guest's counter service (``agents.client.service``):
sees the migration gap as a client would, across several targets at once."""

from __future__ import annotations

import contextlib
import os
import socket
from dataclasses import dataclass, field

import trio

from agents.client import service


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
                answer = service.parse_reply(data)
                if answer is not None and answer[2] == token:
                    counter = answer[0]
                    idx = next((i for i, t in enumerate(targets) if t == peer[:2]), -1)
                    log.replies.append((trio.current_time(), counter, idx))

        async with trio.open_nursery() as nursery:
            nursery.start_soon(receiver)
            seq = 0
            while True:
                for t in targets:
                    with contextlib.suppress(OSError):
                        await sock.sendto(service.request(token, seq), t)
                seq += 1
                await trio.sleep(interval_s)

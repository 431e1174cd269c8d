"""What the data streams' TCP connections have delivered, read from the kernel (TCP_INFO).

When pre-copy rounds follow each other without waiting for the destination's
acknowledgement, the time a round took to leave the application says little about the link
(a small round fits in the socket whole): the rate the switchover is decided on is the bytes
the peer acknowledged over a recent window instead, and what still waits unsent in the
sockets is drained before the guest is paused, so the last dirty set does not queue behind
it.
"""

from __future__ import annotations

import socket
import struct
from collections import deque

import trio

# struct tcp_info (include/uapi/linux/tcp.h): u64 tcpi_bytes_acked (since 4.1) and
# u32 tcpi_notsent_bytes (since 4.6) at these offsets
_BYTES_ACKED, _NOTSENT = 120, 144
_INFO_LEN = _NOTSENT + 4


def tcp_progress(sock: socket.socket) -> tuple[int, int]:
    """(bytes the peer acknowledged, bytes written and not yet sent) of a TCP socket."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _INFO_LEN)
    if len(info) < _INFO_LEN:
        raise OSError("TCP_INFO without tcpi_notsent_bytes (kernel older than 4.6)")
    return struct.unpack_from("=Q", info, _BYTES_ACKED)[0], \
        struct.unpack_from("=I", info, _NOTSENT)[0]


class DeliveryMeter:
    """Acknowledged bytes over time, summed over ``socks``; the delivery rate over the last
    ``window_s`` (from the first sample while there is no sample that old)."""

    def __init__(self, socks: list[socket.socket], window_s: float) -> None:
        self.socks, self.window_s = socks, window_s
        self._samples: deque[tuple[float, int]] = deque()

    def _read(self) -> tuple[int, int]:
        acked = unsent = 0
        for s in self.socks:
            a, u = tcp_progress(s)
            acked, unsent = acked + a, unsent + u
        return acked, unsent

    def sample(self) -> None:
        now = trio.current_time()
        self._samples.append((now, self._read()[0]))
        # keep the newest sample at least a window old, and everything after it
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()

    def rate(self) -> float | None:
        """Delivered bytes per second over the window (None before two samples apart)."""
        self.sample()
        (t0, a0), (t1, a1) = self._samples[0], self._samples[-1]
        return (a1 - a0) / (t1 - t0) if t1 - t0 > 1e-3 else None

    def unsent(self) -> int:
        return self._read()[1]

    async def run(self, period_s: float = 0.02) -> None:
        """Sample every ``period_s`` until cancelled."""
        while True:
            self.sample()
            await trio.sleep(period_s)

    async def drain(self, below: int, limit_s: float, period_s: float = 0.002) -> float:
        """Wait until less than ``below`` bytes wait unsent, at most ``limit_s``; the seconds
        waited."""
        t0 = trio.current_time()
        with trio.move_on_after(limit_s):
            while self.unsent() >= below:
                await trio.sleep(period_s)
        return trio.current_time() - t0

"""What the data streams' TCP connections have delivered, read from the kernel (TCP_INFO).

When pre-copy rounds follow each other without waiting for the destination's
acknowledgement, the time a round took to leave the application says little about the link
(a small round fits in the socket whole): the rate the switchover is decided on is the bytes
the peer received over a recent window instead: those it acknowledged, cumulatively or
selectively. The cumulative count alone stalls while a loss is repaired and then jumps by
everything received beyond the hole: measured at 200 ms and 250 Mbit/s through the
appliance, it read 39-145 Mbit/s during the repair and 387-457 Mbit/s after it, where the
sum read 237-240 every time, and a switchover decided on 420 Mbit/s paused the guest for
twice the downtime limit. Before the guest is paused the source lets what still waits unsent
leave and the bottleneck's queue empty (what is in flight down to the path's own
bandwidth-delay product), so the last dirty set does not queue behind the rest:
cubic keeps a standing queue as deep as the bottleneck allows (one BDP on the testbed's WAN
links), which would add up to a round trip to the downtime.
"""

from __future__ import annotations

import socket
import struct
from collections import deque
from typing import Any, NamedTuple

import trio

# struct tcp_info (include/uapi/linux/tcp.h): u32 snd_mss at 16; u32 unacked, sacked, lost,
# retrans (segments) at 24; u64 bytes_acked at 120 (Linux 4.1); u32 notsent_bytes and min_rtt
# (us) at 144 (4.6); u64 bytes_sent and bytes_retrans at 200 (4.19)
_TCP_INFO = struct.Struct("=16x I 4x I I I I 80x Q 16x I I 48x Q Q")
assert _TCP_INFO.size == 216


class TcpProgress(NamedTuple):
    acked: int  # bytes the peer acknowledged cumulatively
    sacked: int  # bytes it holds beyond a hole, selectively acknowledged (full segments)
    unsent: int  # bytes written and not yet sent
    in_flight: int  # bytes sent and not yet acknowledged, lost or SACKed (at most)
    min_rtt_s: float  # the connection's lowest round trip: the path without queues


def tcp_progress(sock: socket.socket) -> TcpProgress:
    """What a TCP socket's kernel says about its delivery.

    In flight: the lesser of two bounds, the kernel's own count of segments in flight (the
    one it sends by) times the MSS (high where segments are short, as on loopback) and the
    bytes sent, less those retransmitted and acknowledged (high for good after a loss: the
    two byte counters do not count every retransmission alike; measured: 88 kB left over
    with every byte acknowledged)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, _TCP_INFO.size)
    if len(info) < _TCP_INFO.size:
        raise OSError("TCP_INFO without tcpi_bytes_sent (kernel older than 4.19)")
    mss, unacked, sacked, lost, retrans, acked, unsent, min_rtt, sent, resent = \
        _TCP_INFO.unpack(info)
    segments = max(0, unacked - sacked - lost + retrans) * mss
    return TcpProgress(acked, sacked * mss, unsent,
                       min(segments, max(0, sent - resent - acked)), min_rtt / 1e6)


class TcpLosses(NamedTuple):
    retrans_bytes: int  # bytes sent again (Linux 4.19)
    rtos: int | None  # retransmission timeouts (Linux 6.7; None before)
    rto_s: float | None  # time spent in them


def tcp_losses(sock: socket.socket) -> TcpLosses:
    """A TCP socket's retransmissions so far (TCP_INFO: u64 bytes_retrans at 208; u16
    total_rto at 240 and u32 total_rto_time (ms) at 244, Linux 6.7)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 248)
    if len(info) < 216:
        raise OSError("TCP_INFO without tcpi_bytes_retrans (kernel older than 4.19)")
    resent, = struct.unpack_from("=Q", info, 208)
    if len(info) < 248:
        return TcpLosses(resent, None, None)
    rtos, = struct.unpack_from("=H", info, 240)
    rto_ms, = struct.unpack_from("=I", info, 244)
    return TcpLosses(resent, rtos, rto_ms / 1e3)


def losses_between(before: list[TcpLosses], after: list[TcpLosses]) -> dict[str, Any]:
    """What the streams lost between two readings of each (:func:`tcp_losses`, in the same
    order), summed; timeouts only where every reading has them."""
    out: dict[str, Any] = {"retrans_bytes": sum(a.retrans_bytes - b.retrans_bytes
                                                for b, a in zip(before, after, strict=True))}
    if all(x.rtos is not None for x in [*before, *after]):
        out["rtos"] = sum(a.rtos - b.rtos for b, a in zip(before, after, strict=True))
        out["rto_ms"] = round(sum(a.rto_s - b.rto_s for b, a in zip(before, after,
                                                                     strict=True)) * 1e3, 1)
    return out


INFINITE_SSTHRESH = 0x7FFFFFFF  # the kernel's ssthresh until the path first pushes back


class PathSignals(NamedTuple):
    slow_start: bool  # cwnd never cut: no loss, ECN or HyStart exit has limited it yet
    rwnd_limited_s: float  # time the receiver's window limited the sender


def path_signals(sock: socket.socket) -> PathSignals:
    """Whether a TCP connection is still in its first slow start, and how long the receiver's
    window held it back (TCP_INFO: snd_ssthresh at 76, rwnd_limited at 176, Linux 4.10)."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 192)
    if len(info) < 192:
        raise OSError("TCP_INFO without tcpi_rwnd_limited (kernel older than 4.10)")
    ssthresh, = struct.unpack_from("=I", info, 76)
    rwnd_us, = struct.unpack_from("=Q", info, 176)
    return PathSignals(ssthresh >= INFINITE_SSTHRESH, rwnd_us / 1e6)


class DeliveryMeter:
    """Received bytes (acknowledged cumulatively or selectively) over time, summed over
    ``socks``; the delivery rate over the last ``window_s`` (from the first sample while
    there is no sample that old)."""

    def __init__(self, socks: list[socket.socket], window_s: float) -> None:
        self.socks, self.window_s = socks, window_s
        self._samples: deque[tuple[float, int]] = deque()
        self.peak: float | None = None  # the highest rate over a whole window (run)
        self.undrained: tuple[float, list[TcpProgress]] | None = None  # a drain's timeout

    def _read(self) -> list[TcpProgress]:
        return [tcp_progress(s) for s in self.socks]

    def sample(self) -> None:
        now = trio.current_time()
        self._samples.append((now, sum(p.acked + p.sacked for p in self._read())))
        # keep the newest sample at least a window old, and everything after it
        while len(self._samples) > 2 and now - self._samples[1][0] >= self.window_s:
            self._samples.popleft()

    def rate(self) -> float | None:
        """Delivered bytes per second over the window (None before two samples apart)."""
        self.sample()
        (t0, a0), (t1, a1) = self._samples[0], self._samples[-1]
        return (a1 - a0) / (t1 - t0) if t1 - t0 > 1e-3 else None

    def queued(self, rate_Bps: float) -> int:
        """Bytes that would go before a byte written now, beyond what the path itself holds:
        the sockets' unsent bytes and what is in flight above rate x the lowest RTT."""
        return sum(p.unsent + max(0, p.in_flight - int(rate_Bps * p.min_rtt_s))
                   for p in self._read())

    async def run(self, period_s: float = 0.02) -> None:
        """Sample every ``period_s`` until cancelled, keeping :attr:`peak`: the most the peer
        received over any whole window (from the first window's end on)."""
        start = trio.current_time()
        while True:
            rate = self.rate()
            if rate is not None and trio.current_time() - start >= self.window_s:
                self.peak = max(self.peak or 0.0, rate)
            await trio.sleep(period_s)

    async def drain(self, below: int, limit_s: float, period_s: float = 0.002) -> float:
        """Wait until less than ``below`` bytes are queued (:meth:`queued`, at the window's
        rate), at most ``limit_s``; the seconds waited."""
        t0 = trio.current_time()
        rate = self.rate() or 0.0
        with trio.move_on_after(limit_s) as scope:
            while self.queued(rate) >= below:
                await trio.sleep(period_s)
        if scope.cancelled_caught:
            self.undrained = (rate, self._read())
        return trio.current_time() - t0

"""Transports and framing: byte streams between agents, frames on top, every wait bounded.

A transport only opens streams (``connect``) and accepts them (``listen``); framing, rate
capping and the protocol sit above and work on any ``trio.abc.Stream``. TLS (stdlib ssl with
mutual auth) is meant to be another ``Transport`` whose streams are ``trio.SSLStream``s.
"""

from __future__ import annotations

import contextlib
import socket
import struct
from pathlib import Path
from typing import Any

import trio

from agents.wire.protocol import HEADER, MAX_FRAME, FrameType, ProtocolError, decode_header

RCVLOWAT_MAX = 512 * 1024
IOV_BATCH = 512  # buffers per sendmsg/recvmsg_into (IOV_MAX is 1024)
COALESCE = 256 << 10  # bytes of small parts joined into one write on a stream over TLS


class PeerStalled(ProtocolError):
    """The peer sent nothing for longer than the idle timeout."""


class Transport:
    """Opens and accepts byte streams; subclasses choose TCP, TLS, ..."""

    name = "abstract"
    encrypted = False

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        raise NotImplementedError

    async def listen(self, host: str, port: int) -> list[trio.SocketListener]:
        raise NotImplementedError

    async def wrap_accepted(self, stream: trio.SocketStream) -> trio.abc.Stream:
        return stream


class TcpTransport(Transport):
    """Plain TCP. ``sndbuf`` (bytes) pins the send buffer when the BDP needs more than
    autotuning gives; ``None`` leaves the kernel's autotuning alone. ``notsent_lowat``
    (TCP_NOTSENT_LOWAT) bounds what waits unsent in the socket: enough to keep a 10 Gbit/s
    link busy while the next batch is read and hashed (256 KiB left tbf at 10 Gbit/s idle
    between batches), little enough that a batch is still in the CPU cache when it is
    copied."""

    name = "tcp"

    def __init__(self, connect_timeout: float = 10.0, sndbuf: int | None = None,
                 notsent_lowat: int = 2 << 20, local_address: str | None = None) -> None:
        self.local_address = local_address  # source address: selects a function stack
        self.connect_timeout = connect_timeout
        self.sndbuf = sndbuf
        self.notsent_lowat = notsent_lowat

    def _tune(self, stream: trio.SocketStream) -> None:
        if self.sndbuf:
            stream.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.sndbuf)
        with contextlib.suppress(OSError):
            stream.setsockopt(socket.IPPROTO_TCP, 25, self.notsent_lowat)  # TCP_NOTSENT_LOWAT

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        try:
            with trio.fail_after(self.connect_timeout):
                stream = await trio.open_tcp_stream(host, port,
                                                    local_address=self.local_address)
        except trio.TooSlowError:
            raise ConnectionError(f"connect to {host}:{port} timed out after "
                                  f"{self.connect_timeout} s") from None
        self._tune(stream)
        return stream

    async def listen(self, host: str, port: int) -> list[trio.SocketListener]:
        return await trio.open_tcp_listeners(port, host=host)


class RateLimiter:
    """A token bucket shared by all streams of one migration (bytes per second)."""

    def __init__(self, rate_bps: float | None, burst: float = 0.01) -> None:
        self.rate = rate_bps / 8 if rate_bps else None  # bytes/s
        self.burst = max(256 * 1024, (self.rate or 0) * burst)
        self.tokens = self.burst
        self.last = trio.current_time() if self.rate else 0.0

    async def acquire(self, nbytes: int) -> None:
        if not self.rate:
            return
        now = trio.current_time()
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        self.tokens -= nbytes
        if self.tokens < 0:
            await trio.sleep(-self.tokens / self.rate)


SO_MAX_PACING_RATE = getattr(socket, "SO_MAX_PACING_RATE", 47)


def tcp_socket_of(stream: Any) -> socket.socket | None:
    """The TCP socket under ``stream``: a trio SocketStream, or TLS (and wrappers) over one."""
    for _ in range(4):
        if isinstance(stream, trio.SocketStream):
            return stream.socket  # type: ignore[return-value]
        stream = getattr(stream, "transport_stream", None) or getattr(stream, "inner", None)
    return None


class FramedStream:
    """Frames over a byte stream; every receive waits at most ``idle_timeout`` seconds."""

    def __init__(self, stream: trio.abc.Stream, idle_timeout: float = 30.0,
                 max_frame: int = MAX_FRAME, limiter: RateLimiter | None = None) -> None:
        self.stream = stream
        self.idle_timeout = idle_timeout
        self.max_frame = max_frame
        self.limiter = limiter
        self._buf = bytearray()
        self._rbuf = bytearray()
        # a plain TCP stream is read with recv_into (no intermediate copies)
        self._sock = stream.socket if isinstance(stream, trio.SocketStream) else None
        self._rcvlowat = 1
        self.bytes_sent = 0
        self.bytes_received = 0

    def pace(self, rate_bytes_s: float | None) -> bool:
        """Have TCP pace this stream's socket (SO_MAX_PACING_RATE: without the fq qdisc TCP
        paces itself once a maximum is set), at most at ``rate_bytes_s``; ``math.inf``: at
        TCP's own pacing rate (twice the window per round trip in slow start, 1.2x after),
        which spreads a window over the round trip without capping its growth; None: no
        pacing. False where it cannot (no TCP socket under the stream, or no such option)."""
        sock = tcp_socket_of(self.stream)
        if sock is None:
            return False
        if rate_bytes_s is None:
            value = 0xFFFFFFFFFFFFFFFF  # ~0: the kernel's "unset", pacing off
        else:
            value = min(1 << 62, max(1, int(min(rate_bytes_s, 1 << 62))))
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_MAX_PACING_RATE, struct.pack("=Q", value))
        except OSError:
            return False
        return True

    async def send(self, frame: bytes | bytearray | memoryview) -> None:
        await self.send_parts([frame])

    async def send_parts(self, parts: list[bytes | bytearray | memoryview]) -> None:
        """Send one frame given as consecutive parts (no joining copy)."""
        total = sum(map(len, parts))
        if self.limiter:
            await self.limiter.acquire(total)
        try:
            if self._sock is not None and len(parts) > 1:
                await self._sendmsg_all(parts)
            else:
                await self._send_coalesced(parts)
        except trio.TooSlowError:
            raise PeerStalled(f"peer accepted no data for {self.idle_timeout} s") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionError(f"connection lost while sending: {_why(exc)}") from None
        self.bytes_sent += total

    async def _send_coalesced(self, parts: list[bytes | bytearray | memoryview]) -> None:
        """One write per :data:`COALESCE` bytes of small parts (large ones as they are): a TLS
        stream encrypts every write into records of its own and sends it (a syscall and a
        scheduling point each), so a dirty set's batch of 850 runs of one page took 137-178
        ms for 3.5 MB over loopback, joined 19-26 ms (and the encrypted stop-and-copy of
        cloud-encrypted paused its guest some 100 ms longer than the plaintext one)."""
        pending: list[bytes | bytearray | memoryview] = []
        size = 0
        for part in parts:
            n = part.nbytes if isinstance(part, memoryview) else len(part)
            if n >= COALESCE:
                if pending:
                    await self._write(b"".join(pending))
                    pending, size = [], 0
                await self._write(part)
                continue
            pending.append(part)
            size += n
            if size >= COALESCE:
                await self._write(b"".join(pending))
                pending, size = [], 0
        if pending:
            await self._write(pending[0] if len(pending) == 1 else b"".join(pending))

    async def _write(self, data: bytes | bytearray | memoryview) -> None:
        with trio.fail_after(self.idle_timeout):
            await self.stream.send_all(data)

    async def _sendmsg_all(self, parts: list[bytes | bytearray | memoryview]) -> None:
        """Gather-write the parts with sendmsg (no join copy), resuming after partial sends;
        each wait for the socket is bounded by the idle timeout."""
        assert self._sock is not None
        bufs = [memoryview(p).cast("B") for p in parts if len(p)]
        i = 0
        while i < len(bufs):
            with trio.fail_after(self.idle_timeout):
                n = await self._sock.sendmsg(bufs[i : i + IOV_BATCH])
            i = _advance(bufs, i, n)

    async def _chunk(self, n: int, what: str, into: memoryview | None) -> int | bytes:
        """One read from the stream: straight into ``into`` for a plain socket."""
        if into is not None:
            return await self._guarded(what, self._sock.recv_into, into, n)
        return await self._guarded(what, self.stream.receive_some, max(n, 1 << 20))

    async def _guarded(self, what: str, op, *args):
        """One wait for the peer, bounded by the idle timeout, its failures as ours."""
        try:
            with trio.fail_after(self.idle_timeout):
                return await op(*args)
        except trio.TooSlowError:
            raise PeerStalled(f"peer sent nothing for {self.idle_timeout} s "
                              f"(waiting for {what})") from None
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError) as exc:
            raise ConnectionError(f"connection lost while waiting for {what}: {_why(exc)}") \
                from None

    def _lowat(self, remaining: int) -> None:
        """Wake for a read only once a good share of what is still due has arrived
        (SO_RCVLOWAT): a page batch is then read in a few large reads, not a hundred small
        ones, each paying a scheduler round trip. Never more than the frame still owes, so
        the wait always ends."""
        want = min(remaining, RCVLOWAT_MAX)
        if want != self._rcvlowat:
            with contextlib.suppress(OSError):
                self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, want)
                self._rcvlowat = want

    async def _read_exact(self, n: int, what: str) -> memoryview:
        """Exactly ``n`` bytes: buffered leftovers first, then reads into the receive buffer
        (reused: the view is valid until the next receive)."""
        if len(self._rbuf) < n:
            self._rbuf = bytearray(max(n, 1 << 16))  # never resized: old views stay valid
        view = memoryview(self._rbuf)[:n]
        got = min(n, len(self._buf))
        if got:
            view[:got] = self._buf[:got]
            del self._buf[:got]
        while got < n:
            if self._sock is not None:
                self._lowat(n - got)
                r = await self._chunk(n - got, what, view[got:])
                if not r:
                    raise ConnectionError(f"peer closed the connection (waiting for {what}, "
                                          f"{got} of {n} bytes)")
                assert isinstance(r, int)
                got += r
                self.bytes_received += r
                continue
            chunk = await self._chunk(n - got, what, None)
            if not chunk:
                raise ConnectionError(f"peer closed the connection (waiting for {what}, "
                                      f"{got} of {n} bytes)")
            assert not isinstance(chunk, int)
            self.bytes_received += len(chunk)
            take = min(len(chunk), n - got)
            view[got : got + take] = chunk[:take]
            self._buf += chunk[take:]
            got += take
        return view

    async def receive(self, what: str = "a frame") -> tuple[FrameType, memoryview]:
        """Next whole frame; ProtocolError for anything malformed, PeerStalled on silence.

        The payload view is only valid until the next ``receive`` on this stream."""
        ftype, length = await self.receive_header(what)
        return ftype, await self._read_exact(length, what)

    def reserve(self, n: int) -> None:
        """Have a receive buffer of ``n`` bytes ready, its pages touched now (a large frame
        that must be quick, like the COMMIT's hash array in the downtime, then lands in
        memory that is already mapped)."""
        if len(self._rbuf) < n:
            self._rbuf = bytearray(n)
            self._rbuf[::4096] = bytes(len(range(0, n, 4096)))

    async def receive_header(self, what: str = "a frame") -> tuple[FrameType, int]:
        """The next frame's type and payload length (checked); read its payload next."""
        return decode_header(bytes(await self._read_exact(HEADER.size, what)), self.max_frame)

    async def receive_exact(self, n: int, what: str) -> memoryview:
        """The next ``n`` bytes (valid until the next receive)."""
        return await self._read_exact(n, what)

    async def receive_into(self, views: list[memoryview], what: str) -> None:
        """Fill ``views`` in order with the next bytes of the stream: on a plain socket with
        scatter reads straight into them (a batch's pages land in the image, not in a
        buffer first), else through the receive buffer."""
        total = sum(map(len, views))
        if self._sock is None:
            data, off = await self._read_exact(total, what), 0
            for v in views:
                v[:] = data[off : off + len(v)]
                off += len(v)
            return
        bufs, i, left = [v for v in views if len(v)], 0, total
        while left:
            self._lowat(left)
            n = await self._guarded(what, self._sock.recvmsg_into, bufs[i : i + IOV_BATCH])
            n = n[0]
            if not n:
                raise ConnectionError(f"peer closed the connection (waiting for {what}, "
                                      f"{total - left} of {total} bytes)")
            left -= n
            self.bytes_received += n
            i = _advance(bufs, i, n)

    async def aclose(self) -> None:
        with contextlib.suppress(Exception):
            await self.stream.aclose()


def _advance(bufs: list[memoryview], i: int, n: int) -> int:
    """After a scatter/gather call moved ``n`` bytes from ``bufs[i:]``: the index of the
    first buffer not done, that buffer trimmed to what is left of it."""
    while n and i < len(bufs):
        if n >= len(bufs[i]):
            n -= len(bufs[i])
            i += 1
        else:
            bufs[i] = bufs[i][n:]
            n = 0
    return i


def _why(exc: BaseException) -> str:
    """trio's BrokenResourceError often says nothing; its cause (e.g. a TLS error) does."""
    text, cause = str(exc), str(exc.__cause__ or "")
    if cause and cause not in text:
        return f"{text} ({cause})" if text else cause
    return text or type(exc).__name__


def read_sysctl(name: str) -> str | None:
    try:
        return Path("/proc/sys", name.replace(".", "/")).read_text().strip()
    except OSError:
        return None


def raise_buffer_sysctls(nbytes: int) -> list[str]:
    """Raise this namespace's socket-buffer maxima to at least ``nbytes`` (root only).

    Returns the sysctls changed. Never lowers anything."""
    changed = []
    for name in ("net.core.wmem_max", "net.core.rmem_max"):
        cur = read_sysctl(name)
        if cur is not None and int(cur) < nbytes:
            with contextlib.suppress(OSError):
                Path("/proc/sys", name.replace(".", "/")).write_text(str(nbytes))
                changed.append(f"{name}={nbytes}")
    for name in ("net.ipv4.tcp_wmem", "net.ipv4.tcp_rmem"):
        cur = read_sysctl(name)
        if cur is None:
            continue
        lo, default, hi = (int(x) for x in cur.split())
        if hi < nbytes:
            with contextlib.suppress(OSError):
                Path("/proc/sys", name.replace(".", "/")).write_text(f"{lo} {default} {nbytes}")
                changed.append(f"{name}={lo} {default} {nbytes}")
    return changed


def buffer_for_bdp(bandwidth_bps: float, rtt_s: float) -> int:
    """Socket buffer for a path: twice the bandwidth-delay product, at least 4 MiB."""
    return max(4 << 20, int(2 * bandwidth_bps / 8 * rtt_s))

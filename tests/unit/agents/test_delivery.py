"""The delivery meter reads what a real TCP connection (loopback) delivered."""

import contextlib
import socket

import trio

from agents.wire.delivery import DeliveryMeter, TcpLosses, losses_between, tcp_losses, tcp_progress


def _pair() -> tuple[socket.socket, socket.socket]:
    with socket.create_server(("127.0.0.1", 0)) as srv:
        # a small receive buffer: the peer acknowledges at the pace its reader reads
        srv.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 64 << 10)
        tx = socket.create_connection(srv.getsockname())
        rx, _ = srv.accept()
    tx.setsockopt(socket.IPPROTO_TCP, 25, 256 << 10)  # TCP_NOTSENT_LOWAT
    return tx, rx


def test_acked_and_unsent_follow_a_slow_reader():
    tx, rx = _pair()
    with tx, rx:
        tx.setblocking(False)
        sent = 0
        while True:  # fill the socket while nobody reads
            try:
                sent += tx.send(bytes(1 << 16))
            except BlockingIOError:
                break
        acked, _, unsent, in_flight, min_rtt = tcp_progress(tx)
        assert 0 < unsent < sent and acked <= sent - unsent + 1
        assert 0 <= in_flight <= sent - unsent and 0 < min_rtt < 0.1
        got = 0
        rx.settimeout(5)
        while got < sent:
            got += len(rx.recv(1 << 20))
        for _ in range(100):  # the last ACKs are in flight on loopback for a moment
            acked, _, unsent, in_flight, _ = tcp_progress(tx)
            if unsent == 0 and acked >= sent and in_flight == 0:
                break
        assert unsent == 0 and acked >= sent and in_flight == 0


def test_rate_over_the_window_and_drain():
    tx, rx = _pair()

    async def main() -> tuple[float | None, float, float, int]:
        meter = DeliveryMeter([tx], window_s=0.1)
        tx.setblocking(False)
        rx.setblocking(False)
        total = 0

        async def reader() -> None:  # about 4 MB/s: at most 40 kB every 10 ms
            nonlocal total
            while True:
                await trio.sleep(0.01)
                with contextlib.suppress(BlockingIOError):
                    total += len(rx.recv(40_000))

        async with trio.open_nursery() as n:
            n.start_soon(reader)
            n.start_soon(meter.run, 0.01)
            data = bytes(8 << 20)
            view, off = memoryview(data), 0
            t0 = trio.current_time()
            while trio.current_time() - t0 < 0.4:
                await trio.lowlevel.wait_writable(tx)
                off += tx.send(view[off : off + (1 << 16)])
            rate = meter.rate()
            read_rate = total / (trio.current_time() - t0)
            waited = await meter.drain(1, 5.0)
            unsent = tcp_progress(tx).unsent
            n.cancel_scope.cancel()
        return rate, read_rate, waited, unsent

    with tx, rx:
        rate, read_rate, waited, unsent = trio.run(main)
    # the reader's pace, not how fast the socket took the bytes
    assert rate is not None and 0.6 < rate / read_rate < 1.5, (rate, read_rate)
    assert unsent == 0 and waited < 5.0


def test_a_repaired_loss_neither_stalls_nor_inflates_the_rate(monkeypatch):
    """While a hole is repaired the cumulative count stands still and the SACKed bytes grow;
    then it jumps by all of them: the meter counts both, so its rate stays the link's."""
    from agents.wire.delivery import TcpProgress

    clock = [0.0]
    monkeypatch.setattr(trio, "current_time", lambda: clock[0])
    rate_per_s, hole_from, hole_to = 1_000_000, 0.5, 0.7
    meter = DeliveryMeter([], window_s=0.2)

    def read() -> list[TcpProgress]:
        t = clock[0]
        received = int(rate_per_s * t)
        if hole_from <= t < hole_to:  # the hole's segment lost: the rest arrives, SACKed
            acked = int(rate_per_s * hole_from)
            return [TcpProgress(acked, received - acked, 0, 0, 0.2)]
        return [TcpProgress(received, 0, 0, 0, 0.2)]

    monkeypatch.setattr(meter, "_read", read)
    rates = []
    for i in range(101):
        clock[0] = i * 0.01
        meter.sample()
        if clock[0] >= 0.25:
            rates.append(meter.rate())
    assert all(abs(r / rate_per_s - 1) < 0.06 for r in rates), rates


def test_the_peak_is_the_most_received_over_a_whole_window(monkeypatch):
    """1 MB/s for a second, 3 MB/s for the next, then nothing: the peak is 3 MB/s, never a
    partial window's."""
    from trio.testing import MockClock

    from agents.wire.delivery import TcpProgress

    def received(t: float) -> int:
        return int(1e6 * min(t, 1.0) + 3e6 * min(max(t - 1.0, 0.0), 1.0))

    meter = DeliveryMeter([], window_s=0.2)
    monkeypatch.setattr(meter, "_read", lambda: [
        TcpProgress(received(trio.current_time()), 0, 0, 0, 0.1)])

    async def main() -> None:
        with trio.move_on_after(3.0):
            await meter.run(0.01)

    trio.run(main, clock=MockClock(autojump_threshold=0))
    assert meter.peak is not None and abs(meter.peak / 3e6 - 1) < 0.06, meter.peak


def test_a_clean_loopback_connection_lost_nothing():
    tx, rx = _pair()
    with tx, rx:
        before = tcp_losses(tx)
        tx.sendall(bytes(32 << 10))  # within both buffers: nothing waits for the reader
        rx.settimeout(5)
        got = 0
        while got < 32 << 10:
            got += len(rx.recv(1 << 20))
        after = tcp_losses(tx)
    assert after.retrans_bytes == before.retrans_bytes == 0
    assert after.rtos in (0, None)  # None: a kernel older than 6.7
    assert losses_between([before], [after])["retrans_bytes"] == 0


def test_losses_between_sums_the_streams_and_knows_what_it_cannot_say():
    before = [TcpLosses(100, 1, 0.2), TcpLosses(0, 0, 0.0)]
    after = [TcpLosses(1600, 2, 0.45), TcpLosses(3000, 1, 0.3)]
    assert losses_between(before, after) == {"retrans_bytes": 4500, "rtos": 2, "rto_ms": 550.0}
    old = [TcpLosses(0, None, None)]
    assert losses_between(old, [TcpLosses(7, None, None)]) == {"retrans_bytes": 7}

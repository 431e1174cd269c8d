"""Hostile peers over loopback TCP: a clear error, no hang past the timeout, no bad write."""

import struct

import pytest
import trio
import trio.testing

from agents import protocol as P
from agents.destination import Destination, DestinationConfig
from agents.memory.layout import Layout, Region
from agents.transport import FramedStream, PeerStalled, TcpTransport

LAYOUT = Layout(4096, [Region(0, 16, "t")]).to_json()


async def _dest(nursery, idle=2.0):
    d = Destination(DestinationConfig("127.0.0.1", 0, resume=False, idle_timeout=idle))
    port = await nursery.start(d.serve, True)
    return d, port


async def _hello(port, mid="m1", **extra):
    s = FramedStream(await TcpTransport().connect("127.0.0.1", port), 5)
    await s.send(P.encode_json(P.FrameType.HELLO, {"version": P.VERSION, "migration": mid,
                                                   "layout": LAYOUT, "streams": 1, **extra}))
    return s


def test_wrong_version_gets_error_and_destination_keeps_serving():
    async def main():
        async with trio.open_nursery() as n:
            d, port = await _dest(n)
            raw = await trio.open_tcp_stream("127.0.0.1", port)
            await raw.send_all(b"LM" + bytes([P.VERSION + 1, 1]) + struct.pack("!I", 2) + b"{}")
            s = FramedStream(raw, 5)
            ftype, payload = await s.receive()
            assert ftype == P.FrameType.ERROR
            assert "version" in P.decode_json(ftype, payload)["error"]
            assert d.rejected and d.session is None and not d.outcomes
            n.cancel_scope.cancel()
    trio.run(main)


def test_out_of_range_page_fails_the_migration_without_writing():
    async def main():
        async with trio.open_nursery() as n:
            d, port = await _dest(n)
            ctl = await _hello(port)
            ftype, _ = await ctl.receive()
            assert ftype == P.FrameType.HELLO_OK
            data = FramedStream(await TcpTransport().connect("127.0.0.1", port), 5)
            await data.send(P.encode_json(P.FrameType.DATA_HELLO, {"migration": "m1"}))
            image = d.session.stores[0].buf
            await data.send(P.encode_batch(0, 0, [(3, b"\x01" * 4096), (16, b"\x02" * 4096)],
                                           4096))
            ftype, payload = await ctl.receive()
            assert ftype == P.FrameType.ERROR
            assert "outside the layout" in P.decode_json(ftype, payload)["error"]
            assert bytes(image) == bytes(16 * 4096)  # the batch was refused as a whole
        assert d.outcomes and d.outcomes[0]["ok"] is False
    trio.run(main)


def test_stalled_source_times_out_cleanly():
    async def main():
        async with trio.open_nursery() as n:
            d, port = await _dest(n, idle=0.5)
            ctl = await _hello(port)
            await ctl.receive()
            with trio.fail_after(5):
                ftype, payload = await ctl.receive()  # we say nothing: the destination gives up
            assert ftype == P.FrameType.ERROR
            assert "PeerStalled" in P.decode_json(ftype, payload)["error"]
        assert d.outcomes[0]["ok"] is False
    trio.run(main)


def test_stalled_destination_gives_peer_stalled():
    async def main():
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        s = FramedStream(await TcpTransport().connect("127.0.0.1", port), 0.3)
        with trio.fail_after(5), pytest.raises(PeerStalled, match="0.3 s"):
            await s.receive("HELLO_OK")
        for lst in listeners:
            await lst.aclose()
    trio.run(main)


def test_truncated_frame_is_a_connection_error():
    async def main():
        a, b = trio.testing.memory_stream_pair()
        fb = FramedStream(b, 2)
        frame = P.encode_json(P.FrameType.PING, {"x": 1})
        await a.send_all(frame[:-2])
        await a.aclose()
        with pytest.raises(ConnectionError, match="closed"):
            await fb.receive()
    trio.run(main)

"""Hostile peers over loopback TCP: a clear error, no hang past the timeout, no bad write;
strangers and stray streams do not disturb a migration; decisions are final."""

import ctypes
import mmap
import os
import signal
import struct

import pytest
import trio
import trio.testing

from agents.decisions import DecisionStore
from agents.destination import Destination, DestinationConfig
from agents.memory.layout import Layout, Region
from agents.memory.source import SourceRefused
from agents.resolve import ask_one, from_records
from agents.runtime import faults
from agents.wire import protocol as P
from agents.wire.transport import FramedStream, PeerStalled, TcpTransport

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


def _prepare():
    """ROUND_END final + COMMIT for a 16-page zero image."""
    from agents.wire.digest import image_digest, page_hashes

    hashes = page_hashes(bytearray(16 * 4096), 4096)
    return [P.encode_json(P.FrameType.ROUND_END, {"round": 0, "batches": 0, "final": True}),
            P.encode_commit({"digest": image_digest(hashes)}, hashes.tobytes())]


async def _prepared(nursery):
    """A destination with migration m1 prepared (PREPARED received): (dest, port, control)."""
    d, port = await _dest(nursery)
    ctl = await _hello(port)
    await ctl.receive()
    for frame in _prepare():
        await ctl.send(frame)
    assert (await ctl.receive())[0] == P.FrameType.PREPARED
    return d, port, ctl


def test_stray_and_extra_data_streams_do_not_touch_the_migration():
    async def main():
        async with trio.open_nursery() as n:
            d, port = await _dest(n)
            ctl = await _hello(port)
            assert (await ctl.receive())[0] == P.FrameType.HELLO_OK
            stray = FramedStream(await TcpTransport().connect("127.0.0.1", port), 5)
            await stray.send(P.encode_json(P.FrameType.DATA_HELLO, {"migration": "forged"}))
            assert (await stray.receive())[0] == P.FrameType.ERROR
            mine = FramedStream(await TcpTransport().connect("127.0.0.1", port), 5)
            await mine.send(P.encode_json(P.FrameType.DATA_HELLO, {"migration": "m1"}))
            extra = FramedStream(await TcpTransport().connect("127.0.0.1", port), 5)
            await extra.send(P.encode_json(P.FrameType.DATA_HELLO, {"migration": "m1"}))
            ftype, payload = await extra.receive()  # one more than the HELLO's 1 stream
            assert ftype == P.FrameType.ERROR and "beyond" in P.decode_json(ftype, payload)[
                "error"]
            await extra.send(P.encode_batch(0, 0, [(3, b"\x01" * 4096)], 4096))
            assert d.session is not None and not d.session.failed and len(d.rejected) == 2
            for frame in _prepare():
                await ctl.send(frame)
            ftype, payload = await ctl.receive()
            assert ftype == P.FrameType.PREPARED and P.decode_json(ftype, payload)["ok"]
            await ctl.send(P.encode_json(P.FrameType.GO, {}))
            ftype, payload = await ctl.receive()
            assert P.decode_json(ftype, payload)["decision"] == "committed"
            await ctl.send(P.encode_json(P.FrameType.CONFIRM, {}))
        assert d.outcomes[0]["ok"] is True and d.store.state("m1") == "committed"
    trio.run(main)


def test_unauthenticated_hello_is_bounded_before_anything_is_allocated():
    async def main():
        async with trio.open_nursery() as n:
            d = Destination(DestinationConfig("127.0.0.1", 0, resume=False, idle_timeout=2,
                                              max_unauthenticated_bytes=1 << 20))
            port = await n.start(d.serve, True)
            big = Layout(4096, [Region(0, 512, "t")]).to_json()  # 2 MiB
            s = FramedStream(await TcpTransport().connect("127.0.0.1", port), 5)
            await s.send(P.encode_json(P.FrameType.HELLO, {
                "version": P.VERSION, "migration": "m1", "layout": big, "streams": 1}))
            ftype, payload = await s.receive()
            assert ftype == P.FrameType.ERROR
            assert "unauthenticated" in P.decode_json(ftype, payload)["error"]
            assert d.session is None
    trio.run(main)


def test_resolve_before_the_decision_aborts_and_the_answer_never_changes():
    async def main():
        async with trio.open_nursery() as n:
            d, port, ctl = await _prepared(n)
            answer = await trio.to_thread.run_sync(lambda: ask_one(("127.0.0.1", port), "m1",
                                                                   confirm=False))
            assert answer["decision"] == "aborted"
            await ctl.send(P.encode_json(P.FrameType.GO, {}))  # too late: decided
            ftype, payload = await ctl.receive()
            assert P.decode_json(ftype, payload)["decision"] == "aborted"
            again = await trio.to_thread.run_sync(lambda: ask_one(("127.0.0.1", port), "m1"))
            assert again["decision"] == "aborted"
        assert d.outcomes[0]["ok"] is False and d.store.state("m1") == "aborted"
    trio.run(main)


def test_source_gone_before_go_discards_the_standby_and_records_aborted():
    async def main():
        async with trio.open_nursery() as n:
            d, port, ctl = await _prepared(n)
            await ctl.aclose()
            with trio.fail_after(5):
                while d.store.state("m1") != "aborted":
                    await trio.sleep(0.01)
            n.cancel_scope.cancel()
    trio.run(main)


def test_decision_records_are_final(tmp_path):
    store = DecisionStore(tmp_path)
    store.put("m", "prepared", guest_pid=1)
    store.put("m", "committed")
    with pytest.raises(RuntimeError, match="already committed"):
        store.put("m", "aborted")
    assert store.get("m") == {"migration": "m", "state": "committed", "guest_pid": 1}
    assert from_records(tmp_path, "m")["decision"] == "committed"
    store.put("n", "prepared", agent_pid=2 ** 22 + 7, guest_pid=None)  # its agent is gone
    assert from_records(tmp_path, "n")["decision"] == "aborted"
    assert store.state("n") == "aborted"


def test_fault_settings_parse_and_refuse_unknown_actions():
    assert faults.parse("source:go:drop, destination:prepared:crash") == {
        ("source", "go"): "drop", ("destination", "prepared"): "crash"}
    with pytest.raises(ValueError, match="unknown fault action"):
        faults.parse("source:go:explode")


def test_a_process_that_does_not_stop_is_refused_and_continued(monkeypatch):
    import agents.memory.process as proc

    mem = object.__new__(proc.ProcessMemory)
    mem.pid, mem._stopped_by_us = os.getpid(), False
    sent = []
    monkeypatch.setattr(mem, "_signal", sent.append, raising=False)
    monkeypatch.setattr(proc, "process_state", lambda pid: "D")  # never reaches T
    with pytest.raises(SourceRefused, match="did not stop"):
        mem.pause(wait_s=0.05)
    assert sent == [signal.SIGSTOP, signal.SIGCONT]


def test_shared_mappings_are_in_the_layout_and_device_mappings_refused(monkeypatch, tmp_path):
    import agents.memory.process as proc

    shared = mmap.mmap(-1, 64 * 4096, flags=mmap.MAP_SHARED)
    try:
        regions, refused = proc.writable_regions(os.getpid())
        addr = ctypes.addressof(ctypes.c_char.from_buffer(shared))
        assert any(r.start == addr and r.npages == 64 for r in regions)
        assert refused == []
    finally:
        del addr
        shared.close()
    maps = tmp_path / "maps"
    maps.write_text("7f0000000000-7f0000010000 rw-s 00000000 00:05 12 /dev/dri/card0\n"
                    "7f0000010000-7f0000020000 rw-s 00000000 00:01 41 /dev/zero (deleted)\n")
    real = proc.Path
    monkeypatch.setattr(proc, "Path", lambda p: maps if p.endswith("/maps") else real(p))
    regions, refused = proc.writable_regions(1)
    assert [r.name for r in regions] == ["/dev/zero (deleted)"]
    assert len(refused) == 1 and "/dev/dri/card0" in refused[0]


def test_layout_changes_are_compared_as_address_coverage():
    import agents.memory.process as proc

    ps = proc.PAGE
    then = [Region(0x10000, 4, "a"), Region(0x10000 + 4 * ps, 2, "")]  # neighbours
    merged = [Region(0x10000, 6, "a")]
    assert proc._coverage(then) == proc._coverage(merged)  # a merge is no change
    grown = proc._coverage([Region(0x10000, 8, "a")])
    assert proc._uncovered(grown, proc._coverage(then)) == [
        (0x10000 + 6 * ps, 0x10000 + 8 * ps)]  # the new pages: not in the image
    shrunk = proc._coverage([Region(0x10000 + ps, 2, "a")])
    assert proc._uncovered(shrunk, proc._coverage(then)) == []  # nothing new
    assert proc._uncovered(proc._coverage(then), shrunk) == [
        (0x10000, 0x10000 + ps), (0x10000 + 3 * ps, 0x10000 + 6 * ps)]

"""Destination sessions: a second HELLO cannot end a migration in progress; keep-serving
takes one migration after another."""

from __future__ import annotations

import os

import trio

from agents.destination import Destination, DestinationConfig
from agents.memory.image import ImageMemory
from agents.memory.layout import Layout, Region
from agents.source import SourceConfig, migrate
from agents.wire import protocol as P
from agents.wire.digest import image_digest, page_hashes
from agents.wire.transport import FramedStream, TcpTransport

PS = 4096
LAYOUT = Layout(PS, [Region(0, 16, "t")]).to_json()


async def _connect(port: int) -> FramedStream:
    return FramedStream(await TcpTransport().connect("127.0.0.1", port), 5)


def test_second_hello_is_refused_and_the_migration_completes():
    async def main():
        d = Destination(DestinationConfig("127.0.0.1", 0, resume=False, idle_timeout=5))
        async with trio.open_nursery() as n:
            port = await n.start(d.serve, True)
            ctl = await _connect(port)
            hello = {"version": P.VERSION, "migration": "m1", "layout": LAYOUT, "streams": 1}
            await ctl.send(P.encode_json(P.FrameType.HELLO, hello))
            assert (await ctl.receive())[0] == P.FrameType.HELLO_OK
            intruder = await _connect(port)
            await intruder.send(P.encode_json(P.FrameType.HELLO, hello | {"migration": "m2"}))
            ftype, payload = await intruder.receive()
            assert ftype == P.FrameType.ERROR
            assert "busy" in P.decode_json(ftype, payload)["error"]
            assert d.session is not None and d.session.mid == "m1" and not d.outcomes
            data = await _connect(port)
            await data.send(P.encode_json(P.FrameType.DATA_HELLO, {"migration": "m1"}))
            page = os.urandom(PS)
            await data.send(P.encode_batch(0, 0, [(3, page)], PS))
            image = bytearray(16 * PS)
            image[3 * PS : 4 * PS] = page
            hashes = page_hashes(image, PS)
            await ctl.send(P.encode_json(P.FrameType.ROUND_END,
                                         {"round": 0, "batches": 1, "final": True}))
            await ctl.send(P.encode_commit({"digest": image_digest(hashes)}, hashes.tobytes()))
            ftype, payload = await ctl.receive()
            assert ftype == P.FrameType.PREPARED and P.decode_json(ftype, payload)["ok"] is True
            await ctl.send(P.encode_json(P.FrameType.GO, {}))
            ftype, payload = await ctl.receive()
            assert ftype == P.FrameType.DECISION
            assert P.decode_json(ftype, payload)["decision"] == "committed"
            await ctl.send(P.encode_json(P.FrameType.CONFIRM, {}))
        assert [o["ok"] for o in d.outcomes] == [True] and len(d.rejected) == 1
    trio.run(main)


def test_keep_serving_takes_migrations_one_after_another(tmp_path):
    paths = []
    for i in range(2):
        p = tmp_path / f"img{i}"
        p.write_bytes(os.urandom(PS * 64) + bytes(PS * 16))
        paths.append(p)

    async def main():
        d = Destination(DestinationConfig("127.0.0.1", 0, resume=False, idle_timeout=5))
        async with trio.open_nursery() as n:
            port = await n.start(d.serve, False)
            results = []
            for p in paths:
                cfg = SourceConfig("127.0.0.1", port, preflight="off")
                results.append(await migrate(ImageMemory(p), cfg, kind="image"))
            n.cancel_scope.cancel()
        return results, d.outcomes

    results, outcomes = trio.run(main)
    assert [r.completed for r in results] == [True, True], [r.error for r in results]
    assert [r.pages_sent_per_round[0] for r in results] == [80, 80]
    assert [o["ok"] for o in outcomes] == [True, True]
    assert outcomes[0]["digest"] != outcomes[1]["digest"]

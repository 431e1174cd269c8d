"""The RDMA batch notice (no RDMA needed): a batch built by the sender, its data placed where
the WRITEs would put it, is accepted by the destination's check; a damaged page or run table
is refused. The WRITEs themselves are tested over real Soft-RoCE in tests/integration."""

from __future__ import annotations

import mmap
import types

import pytest
import trio
import trio.testing

from agents.memory.image import ImageMemory
from agents.rdma.copy import RdmaSender, _parse_peer, receive_placed
from agents.runtime.cputime import ThreadCpu
from agents.wire import protocol as P
from agents.wire.imagestore import ImageStore
from agents.wire.transport import FramedStream

PS = 4096


def _image(tmp_path, npages: int) -> ImageMemory:
    data = bytearray(npages * PS)
    for p in range(npages):
        if p % 3:  # every third page stays zero
            data[p * PS : p * PS + 8] = p.to_bytes(8, "little")
    path = tmp_path / "mem.img"
    path.write_bytes(bytes(data))
    return ImageMemory(str(path))


def _placed(tmp_path, damage=None):
    npages = 64
    src = _image(tmp_path, npages)
    region = mmap.mmap(-1, npages * PS)
    buf = mmap.mmap(-1, 64 * PS)
    rdma = types.SimpleNamespace(buf=buf, remote={"addr": 0, "rkey": 1})
    snd = RdmaSender(P.SPACE_MEMORY, src, [], rdma, 64, 5.0)
    slot = memoryview(buf)
    parts, nzero = snd.build(0, list(range(npages)), slot)
    writes, notice, nbytes = snd._writes(parts, slot, 0)
    assert nbytes == sum(n for _, _, n in writes) > 0
    for laddr, raddr, n in writes:  # what the responder does: place the bytes
        region[raddr : raddr + n] = buf[laddr : laddr + n]
    if damage == "page":
        region[PS + 100] ^= 0xFF
    if damage == "table":
        notice = bytearray(notice)
        notice[P.HEADER.size + P.BATCH_HEADER.size + 1] ^= 0x01
        notice = bytes(notice)
    store = ImageStore(region, PS)
    limits = {P.SPACE_MEMORY: P.BatchLimits(PS, npages, 64)}
    verify = ThreadCpu()

    async def main():
        a, b = trio.testing.memory_stream_pair()
        tx, rx = FramedStream(a, 5), FramedStream(b, 5)
        await tx.send(notice)
        ftype, length = await rx.receive_header()
        assert ftype == P.FrameType.RDMA_PAGES
        await receive_placed(rx, length, limits, {P.SPACE_MEMORY: store}, verify)

    trio.run(main)
    return snd, store, nzero, verify


def test_placed_batch_is_accepted_with_the_senders_hashes(tmp_path):
    snd, store, nzero, verify = _placed(tmp_path)
    assert nzero > 0
    assert list(store.hashes) == list(snd.hashes)
    assert verify.blocks == 1 and verify.seconds > 0  # its check's CPU, tallied


@pytest.mark.parametrize("damage", ["page", "table"])
def test_damaged_placement_or_table_is_refused(tmp_path, damage):
    with pytest.raises(P.ProtocolError):
        _placed(tmp_path, damage)


def test_bad_peer_descriptions_are_refused():
    with pytest.raises(P.ProtocolError, match="no RDMA description"):
        _parse_peer(None, "destination's HELLO_OK")
    with pytest.raises(P.ProtocolError, match="bad RDMA description"):
        _parse_peer({"gid": "x", "qpns": [1], "psns": []}, "source's HELLO")

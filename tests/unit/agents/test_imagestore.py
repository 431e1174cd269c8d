"""Incremental digests: what the sender records and what the destination holds agree, and
stay equal to a full re-hash as pages are re-sent; the disk source reads and tracks blocks."""

from __future__ import annotations

import os

import pytest

from agents.guest.throttle import DutyCycleThrottle, make_throttle
from agents.memory.disk import DiskSource
from agents.memory.image import ImageMemory
from agents.memory.source import MemorySource
from agents.wire import protocol as P
from agents.wire.digest import image_digest, page_hashes
from agents.wire.imagestore import ImageStore
from agents.wire.sender import Sender

PS = 4096


def ship(sender: Sender, store: ImageStore, pages: list[int], round_no: int = 0) -> int:
    parts, nzero = sender.build(round_no, pages, bytearray(len(pages) * PS))
    ftype, payload = P.decode_frame(b"".join(parts))
    lim = P.BatchLimits(PS, store.nunits, 4096)
    store.apply(P.decode_batch(payload, {P.SPACE_MEMORY: lim, P.SPACE_DISK: lim}))
    return nzero


def test_incremental_hashes_match_full_rehash_on_both_sides(tmp_path):
    path = tmp_path / "mem.img"
    path.write_bytes(os.urandom(PS * 6) + bytes(PS * 3) + os.urandom(PS * 7))
    src = ImageMemory(path)
    sender = Sender(0, src, [], batch_units=64)
    store = ImageStore(bytearray(16 * PS), PS)
    assert ship(sender, store, list(range(16))) == 3  # zero pages found by their hash
    assert bytes(store.buf) == bytes(src.buf)
    assert sender.hashes == page_hashes(src.buf, PS) == store.hashes
    # the guest writes pages 2 and 7 (zero before) and zeroes page 12; only those are re-sent
    src.buf[2 * PS] ^= 1
    src.buf[7 * PS + 9] = 5
    src.buf[12 * PS : 13 * PS] = bytes(PS)
    assert sender.hashes != page_hashes(src.buf, PS)
    assert ship(sender, store, [2, 7, 12], 1) == 1
    assert bytes(store.buf) == bytes(src.buf)
    full = image_digest(page_hashes(src.buf, PS))
    assert image_digest(sender.hashes) == store.digest() == full


def test_store_hashes_what_it_holds_after_a_faulty_write():
    store = ImageStore(bytearray(4 * PS), PS)
    batch = P.decode_batch(P.decode_frame(P.encode_batch(0, 0, [(1, b"a" * PS)], PS))[1],
                           {0: P.BatchLimits(PS, 4)})
    good = ImageStore(bytearray(4 * PS), PS)
    good.apply(batch)
    store.view[PS : 2 * PS] = b"b" * PS  # a stale write the batch then overwrites
    store.apply(batch)
    assert store.digest() == good.digest() == store.rehash()
    store.view[PS] = 0  # corrupt what it holds: only a re-hash sees it
    assert store.rehash() != good.digest()


def test_disk_source_blocks_and_dirty_tracking(tmp_path):
    path = tmp_path / "disk.img"
    path.write_bytes(os.urandom(PS * 8))
    disk = DiskSource(path)
    sender = Sender(P.SPACE_DISK, disk, [], batch_units=16)
    store = ImageStore(bytearray(8 * PS), PS)
    disk.start_tracking()
    ship(sender, store, list(range(8)))
    assert disk.dirty() == []
    with open(path, "r+b") as f:
        f.seek(5 * PS + 7)
        f.write(b"x")
    assert disk.dirty() == [5]
    ship(sender, store, [5], 1)
    assert disk.dirty() == []
    assert store.digest() == disk.digest_now() == image_digest(sender.hashes)
    disk.close()
    (tmp_path / "odd.img").write_bytes(b"x" * 5000)
    with pytest.raises(ValueError, match="multiple of 4096"):
        DiskSource(tmp_path / "odd.img")


class FakeProc(MemorySource):
    def __init__(self, pid: int) -> None:
        self.pid = pid


def test_throttle_falls_back_to_duty_cycles_without_a_writable_cgroup(tmp_path):
    assert isinstance(make_throttle(FakeProc(os.getpid()), "auto", root=tmp_path),
                      DutyCycleThrottle)
    with pytest.raises(OSError):
        make_throttle(FakeProc(os.getpid()), "cgroup", root=tmp_path)
    path = tmp_path / "img"
    path.write_bytes(bytes(PS))
    thr = make_throttle(ImageMemory(path))  # not a process: no cgroup to put it in
    assert thr.mechanism == "sigstop-duty-cycle"


def test_a_round_is_cut_so_that_every_stream_has_its_share():
    from agents.wire.sender import batch_size

    assert batch_size(1160, 256, 1) == 256  # one stream: whole batches
    assert batch_size(1160, 256, 4) == 145  # 8 batches of 145, two per stream (not 5 of 256)
    for units, streams in ((1160, 4), (3, 4), (100_000, 3), (257, 2), (1, 1)):
        per = batch_size(units, 256, streams)
        batches = -(-units // per)
        assert 1 <= per <= 256 and (batches % streams == 0 or units < streams), (units, per)

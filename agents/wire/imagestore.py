"""What the destination holds for one space (memory image or disk): bytes and their hashes.

A batch's data runs are received in place (``agents.wire.receiver``) or copied in, one slice per
run; its units' hashes (computed from the received bytes when the batch was checked) go into
the store's hash array, so the digest the destination compares at the switchover is of what
it holds, kept current batch by batch.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from array import array

from agents.wire.digest import image_digest, page_hashes, zero_hashes
from agents.wire.protocol import KIND_DATA, PageBatch


class ImageStore:
    """``buf`` starts all zeros (unless ``hashes`` says what it holds)."""

    def __init__(self, buf: bytearray | mmap.mmap, unit_size: int,
                 hashes: array | None = None) -> None:
        self.buf, self.unit = buf, unit_size
        self.view = memoryview(buf)
        self.nunits = len(buf) // unit_size
        self.hashes = hashes if hashes is not None else zero_hashes(self.nunits, unit_size)
        self._zeros = bytes(unit_size)
        self._zero_hashes = zero_hashes(min(self.nunits, 1 << 16), unit_size)

    def apply(self, batch: PageBatch) -> None:
        """Write a decoded, checked batch (its runs already within the layout)."""
        ps, mv, data, doff = self.unit, self.view, batch.data, 0
        for first, n, kind in batch.runs:
            if kind == KIND_DATA:
                mv[first * ps : (first + n) * ps] = data[doff : doff + n * ps]
                doff += n * ps
        self.write_runs(batch.runs, batch.hashes)

    def write_runs(self, runs: list[tuple[int, int, int]], hashes: array) -> None:
        """Record a batch whose data units were received in place: zero its zero runs and
        take every unit's hash (in run order)."""
        ps, mv, off, held = self.unit, self.view, 0, self.hashes
        for first, n, kind in runs:
            if kind != KIND_DATA and held[first : first + n] != self._zero_hashes[:n]:
                mv[first * ps : (first + n) * ps] = self._zeros * n  # not zero already
            held[first : first + n] = hashes[off : off + n]
            off += n

    def digest(self) -> str:
        return image_digest(self.hashes)

    def rehash(self) -> str:
        """Hash every unit again from the bytes (a replica the migration never wrote)."""
        self.hashes = page_hashes(self.view, self.unit)
        return self.digest()

    def close(self) -> None:
        self.view.release()
        if isinstance(self.buf, mmap.mmap):
            with contextlib.suppress(BufferError):  # a batch view still alive: GC closes it
                self.buf.close()


def open_disk_store(path: str, nbytes: int, unit: int, replicated: bool) -> ImageStore:
    """The destination's disk file, mapped shared. Transfer mode starts it empty (zeros);
    replicated mode requires the replica to exist with the announced size."""
    if replicated:
        fd = os.open(path, os.O_RDWR)
        if os.fstat(fd).st_size != nbytes:
            size = os.fstat(fd).st_size
            os.close(fd)
            raise ValueError(f"replica {path} holds {size} bytes, the source's disk {nbytes}")
    else:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o644)
        os.ftruncate(fd, nbytes)
    try:
        buf = mmap.mmap(fd, nbytes, mmap.MAP_SHARED)
    finally:
        os.close(fd)
    return ImageStore(buf, unit)

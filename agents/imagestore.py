"""What the destination holds for one space (memory image or disk): bytes and their hashes.

Each batch is written with one slice assignment per run of consecutive units, and the units
are hashed back from the store right after the write, so the digest the destination
compares at the switchover is of what it holds, kept current batch by batch.
"""

from __future__ import annotations

import contextlib
import mmap
import os
from array import array

from agents.digest import hash_units, image_digest, page_hashes, zero_hashes
from agents.protocol import KIND_DATA, PageBatch


class ImageStore:
    """``buf`` starts all zeros (unless ``hashes`` says what it holds)."""

    def __init__(self, buf: bytearray | mmap.mmap, unit_size: int,
                 hashes: array | None = None) -> None:
        self.buf, self.unit = buf, unit_size
        self.view = memoryview(buf)
        self.nunits = len(buf) // unit_size
        self.hashes = hashes if hashes is not None else zero_hashes(self.nunits, unit_size)
        self._zeros = bytes(unit_size)

    def apply(self, batch: PageBatch) -> None:
        """Write a decoded, checked batch (page numbers already within the layout)."""
        ps, mv, data = self.unit, self.view, batch.data
        pages, kinds = batch.pages, batch.kinds
        n, i, doff = len(pages), 0, 0
        while i < n:
            p, k = pages[i], kinds[i]
            j = i + 1
            while j < n and pages[j] == p + j - i and kinds[j] == k:
                j += 1
            o, length = p * ps, (j - i) * ps
            if k == KIND_DATA:
                mv[o : o + length] = data[doff : doff + length]
                doff += length
            else:
                mv[o : o + length] = self._zeros * (j - i)
            self.hashes[p:j - i + p] = array("Q", hash_units(mv[o : o + length], ps))
            i = j

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

"""A disk image file migrated block by block alongside memory (like Storage vMotion).

Blocks are 4 KiB units of the file; dirty blocks (written by the guest, or any writer that
is paused with it) are found by comparing each block's hash with the hash of what was last
sent, so nothing needs the writer's cooperation. In replication-assisted mode nothing is
sent: both sides hash their copy after the guest is stopped and the digests must agree.
"""

from __future__ import annotations

import mmap
import os
from pathlib import Path

from agents.memory.dirty import HashTracker
from agents.memory.layout import Layout, Region
from agents.wire.digest import image_digest, page_hashes

BLOCK = 4096


def read_file_into(fd: int, view: memoryview, offset: int) -> None:
    """Fill ``view`` from ``fd`` at ``offset``; bytes past the end of the file read as zeros."""
    done = 0
    while done < len(view):
        n = os.preadv(fd, [view[done:]], offset + done)
        if n <= 0:
            view[done:] = bytes(len(view) - done)
            return
        done += n


class DiskSource:
    """The source side of a disk: block runs for the sender, dirty blocks by hash."""

    mechanism = "block-hash"

    def __init__(self, path: str | Path, mode: str = "transfer") -> None:
        if mode not in ("transfer", "replicated"):
            raise ValueError(f"unknown disk mode {mode!r}")
        self.path, self.mode = str(path), mode
        self.fd = os.open(self.path, os.O_RDONLY)
        size = os.fstat(self.fd).st_size
        if size == 0 or size % BLOCK:
            os.close(self.fd)
            raise ValueError(f"disk {path}: size {size} is not a positive multiple of {BLOCK}")
        self.nbytes = size
        self.layout = Layout(BLOCK, [Region(0, size // BLOCK, self.path)])
        self._all: mmap.mmap | None = None
        self.tracker = HashTracker(self.read_all, BLOCK)

    def describe(self) -> dict:
        return {"bytes": self.nbytes, "block_size": BLOCK, "mode": self.mode}

    def read_runs(self, blocks: list[int], scratch: bytearray
                  ) -> list[tuple[int, int, memoryview]]:
        out, off, mv = [], 0, memoryview(scratch)
        for first, count, addr in self.layout.runs(blocks):
            view = mv[off : off + count * BLOCK]
            read_file_into(self.fd, view, addr)
            out.append((first, count, view))
            off += count * BLOCK
        return out

    def read_all(self) -> memoryview:
        if self._all is None:
            self._all = mmap.mmap(-1, self.nbytes)
        view = memoryview(self._all)
        read_file_into(self.fd, view, 0)
        return view

    def start_tracking(self) -> None:
        self.tracker.reset()

    def dirty(self) -> list[int]:
        return self.tracker.collect()

    def digest_now(self) -> str:
        """The digest of the disk as it is now (replicated mode, guest stopped)."""
        return image_digest(page_hashes(self.read_all(), BLOCK))

    def close(self) -> None:
        os.close(self.fd)

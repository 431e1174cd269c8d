"""Marker strings planted in the workload's pages, so a capture can tell plaintext on the wire.

Each marker is ``PREFIX + index + padding`` (48 bytes), one per page, spread over the arena.
A capture of a plaintext migration contains them; an encrypted one must not.
"""

from __future__ import annotations

import re

PREFIX = b"TBT-PLAINTEXT-MARKER-"
SIZE = 48
_FOUND = re.compile(re.escape(PREFIX) + rb"(\d{8})")


def marker(i: int) -> bytes:
    return (PREFIX + b"%08d" % i).ljust(SIZE, b"#")


def plant(arena: bytearray | memoryview, n: int, page_size: int) -> list[int]:
    """Write ``n`` markers at offset 256 of pages spread over pages 1.. (page 0: header).

    Returns the pages written."""
    npages = len(arena) // page_size
    if n <= 0 or npages < 2:
        return []
    n = min(n, npages - 1)
    pages = [1 + i * (npages - 1) // n for i in range(n)]
    for i, p in enumerate(pages):
        o = p * page_size + 256
        arena[o : o + SIZE] = marker(i)
    return pages


def find(data: bytes | bytearray | memoryview) -> set[int]:
    """The marker indices present in ``data``."""
    return {int(m.group(1)) for m in _FOUND.finditer(bytes(data))}

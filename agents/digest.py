"""Per-page hashes and the whole-image digest both sides compare before a switchover commits."""

from __future__ import annotations

from array import array

import xxhash


def page_hashes(buf: bytes | bytearray | memoryview, page_size: int) -> array:
    """xxh3_64 of every page of ``buf`` as an array of unsigned 64-bit ints."""
    mv = memoryview(buf)
    h = xxhash.xxh3_64_intdigest
    return array("Q", (h(mv[o : o + page_size]) for o in range(0, len(mv), page_size)))


def image_digest(hashes: array | bytes) -> str:
    """The digest of an image: xxh3_128 over its page-hash array (little-endian u64)."""
    raw = hashes.tobytes() if isinstance(hashes, array) else bytes(hashes)
    return xxhash.xxh3_128_hexdigest(raw)

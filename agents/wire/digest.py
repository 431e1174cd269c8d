"""Per-page hashes and the whole-image digest both sides compare before a switchover commits.

Both sides keep the per-page hash array up to date as pages go by (the source hashes what it
sends, the destination what it wrote), so the digest at the switchover costs one xxh3_128
over that array, not a pass over the image.
"""

from __future__ import annotations

import functools
from array import array

import xxhash

_h = xxhash.xxh3_64_intdigest


@functools.cache
def zero_hash(page_size: int) -> int:
    """The hash of an all-zero page (what a page holds before anything was written)."""
    return _h(bytes(page_size))


def hash_units(view: memoryview, unit_size: int) -> list[int]:
    """xxh3_64 of every ``unit_size`` slice of ``view``."""
    return [_h(view[o : o + unit_size]) for o in range(0, len(view), unit_size)]


def hash_views(views: list[memoryview], unit_size: int) -> array:
    """xxh3_64 of every ``unit_size`` slice of each view, in order, as one array."""
    return array("Q", [_h(v[o : o + unit_size]) for v in views
                       for o in range(0, len(v), unit_size)])


def page_hashes(buf: bytes | bytearray | memoryview, page_size: int) -> array:
    """xxh3_64 of every page of ``buf`` as an array of unsigned 64-bit ints."""
    return array("Q", hash_units(memoryview(buf), page_size))


def zero_hashes(npages: int, page_size: int) -> array:
    """The hash array of an all-zero image."""
    return array("Q", [zero_hash(page_size)]) * npages


def image_digest(hashes: array | bytes | memoryview) -> str:
    """The digest of an image: xxh3_128 over its page-hash array (little-endian u64), read
    in place."""
    return xxhash.xxh3_128_hexdigest(hashes)

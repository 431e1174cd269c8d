"""Dirty-page tracking: PAGEMAP_SCAN over userfaultfd WP_ASYNC, soft-dirty, or page hashes.

The kernel mechanisms are probed, never assumed: soft-dirty can be silently absent (clear_refs
accepts ``4`` but bit 55 never gets set), so it is only used after a page written since the
last clear has been seen with the bit set. Debian 12's headers lack the PAGEMAP_SCAN and
WP_ASYNC constants, so they are defined here from the kernel's uapi.
"""

from __future__ import annotations

import ctypes
import fcntl
import mmap
import os
import struct
from array import array
from collections.abc import Callable

import xxhash

from agents.memory.layout import Layout, Region
from agents.wire.digest import hash_units

# --- uapi constants (linux/userfaultfd.h, linux/fs.h) --------------------------------------
_IOC_WRITE, _IOC_READ = 1, 2


def _iowr(typ: int, nr: int, size: int) -> int:
    return ((_IOC_READ | _IOC_WRITE) << 30) | (size << 16) | (typ << 8) | nr


SYS_USERFAULTFD = 323  # x86_64
UFFD_API = 0xAA
UFFD_FEATURE_WP_UNPOPULATED = 1 << 13
UFFD_FEATURE_WP_ASYNC = 1 << 15
UFFDIO_REGISTER_MODE_WP = 1 << 1
UFFDIO_API = _iowr(0xAA, 0x3F, 24)
UFFDIO_REGISTER = _iowr(0xAA, 0x00, 32)

PM_SCAN_WP_MATCHING = 1 << 0
PM_SCAN_CHECK_WPASYNC = 1 << 1
PAGE_IS_WRITTEN = 1 << 1
PM_SCAN_ARG = struct.Struct("=12Q")  # struct pm_scan_arg, 96 bytes
PAGE_REGION = struct.Struct("=3Q")  # struct page_region
PAGEMAP_SCAN = _iowr(ord("f"), 16, PM_SCAN_ARG.size)

PM_SOFT_DIRTY = 1 << 55
PM_PRESENT = 1 << 63

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


def register_uffd_wp_async(addr: int, length: int) -> int:
    """Register [addr, addr+length) of this process for async write-protect tracking.

    Returns the userfaultfd, which must stay open while tracking is wanted. Pages start out
    "written"; the first PAGEMAP_SCAN with WP_MATCHING reports them all and protects them.
    """
    fd = _libc.syscall(SYS_USERFAULTFD, os.O_CLOEXEC | os.O_NONBLOCK)
    if fd < 0:
        raise OSError(ctypes.get_errno(), "userfaultfd: " + os.strerror(ctypes.get_errno()))
    try:
        api = bytearray(struct.pack("=3Q", UFFD_API,
                                    UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED, 0))
        fcntl.ioctl(fd, UFFDIO_API, api)
        reg = bytearray(struct.pack("=4Q", addr, length, UFFDIO_REGISTER_MODE_WP, 0))
        fcntl.ioctl(fd, UFFDIO_REGISTER, reg)
    except OSError:
        os.close(fd)
        raise
    return fd


class Tracker:
    """Reports pages written since the previous ``collect`` (or since ``reset``)."""

    mechanism = "none"

    lazy = False  # reset() leaves the protection of each page to arm(), before its read

    def reset(self) -> None:
        raise NotImplementedError

    def arm(self, start: int, end: int) -> None:
        """Start tracking [start, end) (addresses) now, if ``reset`` was lazy."""

    def collect(self) -> list[int]:
        raise NotImplementedError

    def note_sent(self, page: int, data: memoryview) -> None:
        """Called with every page sent; only content-comparing trackers care."""

    def close(self) -> None:
        pass


class PagemapScanTracker(Tracker):
    """PAGEMAP_SCAN on /proc/PID/pagemap: get written pages and re-protect them atomically."""

    mechanism = "uffd-wp-async+pagemap-scan"
    VEC = 4096

    def __init__(self, pid: int, layout: Layout) -> None:
        self.layout = layout
        self.fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)
        self._vec = (ctypes.c_uint64 * (3 * self.VEC))()
        self._resumed = False

    def _scan(self, start: int, end: int) -> list[tuple[int, int]]:
        out = []
        while start < end:
            arg = bytearray(PM_SCAN_ARG.pack(
                PM_SCAN_ARG.size, PM_SCAN_WP_MATCHING | PM_SCAN_CHECK_WPASYNC, start, end, 0,
                ctypes.addressof(self._vec), self.VEC, 0, 0, PAGE_IS_WRITTEN, 0,
                PAGE_IS_WRITTEN))
            n = fcntl.ioctl(self.fd, PAGEMAP_SCAN, arg)
            walk_end = PM_SCAN_ARG.unpack(arg)[4]
            for i in range(n):
                out.append((self._vec[3 * i], self._vec[3 * i + 1]))
            if walk_end <= start:
                break
            self._resumed = self._resumed or walk_end < end
            start = walk_end
        return out

    def collect(self) -> list[int]:
        """Written pages, sorted and each once. When a scan fills the output vector it is
        resumed at the kernel's ``walk_end``; a guest writing meanwhile can then have a page
        reported twice or out of order (seen: an unsorted round-1 set of a 1 GiB guest at
        1 Gbit/s), so a resumed scan's pages are sorted and deduplicated."""
        ps = self.layout.page_size
        pages: list[int] = []
        first = 0
        self._resumed = False
        for r in self.layout.regions:
            for s, e in self._scan(r.start, r.start + r.npages * ps):
                base = first + (s - r.start) // ps
                pages.extend(range(base, base + (e - s) // ps))
            first += r.npages
        return sorted(set(pages)) if self._resumed else pages

    lazy = True

    def reset(self) -> None:
        """Nothing yet: each range is write-protected by ``arm`` just before round 0 reads
        it, like KVM's initially-set dirty log (protecting a whole 1 GiB guest at once
        cost 16-45 ms at the start of every migration, the link idle meanwhile). A page
        never armed reports as written: it is sent again, never missed."""

    def arm(self, start: int, end: int) -> None:
        self._scan(start, end)  # protects what was written; round 0 sends it all anyway

    def close(self) -> None:
        os.close(self.fd)


def probe_pagemap_scan(pid: int, layout: Layout) -> bool:
    """True when the target's regions are uffd-WP_ASYNC registered and PAGEMAP_SCAN works."""
    try:
        t = PagemapScanTracker(pid, layout)
    except OSError:
        return False
    try:
        t._scan(layout.regions[0].start, layout.regions[0].start + layout.page_size)
        return True
    except OSError:
        return False
    finally:
        t.close()


_soft_dirty_ok: bool | None = None


def probe_soft_dirty(pages: int = 8) -> bool:
    """Write every other page of a fresh mapping after clear_refs and expect pagemap's bit 55
    on exactly those (cached: the answer is the kernel's)."""
    global _soft_dirty_ok
    if _soft_dirty_ok is None:
        _soft_dirty_ok = _with_mapping(pages, _soft_dirty_marks)
    return _soft_dirty_ok


def probe_uffd_wp_scan(pages: int = 8) -> bool:
    """The tracker itself on a mapping of this process: register it for async write-protect,
    arm it, write every other page, and expect PAGEMAP_SCAN to report exactly those."""
    return _with_mapping(pages, _uffd_wp_scan_marks)


def _with_mapping(pages: int, check: Callable[[mmap.mmap, int, int], bool]) -> bool:
    buf = mmap.mmap(-1, pages * mmap.PAGESIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    view = ctypes.c_char.from_buffer(buf)
    addr = ctypes.addressof(view)
    del view  # the address stays valid while buf is mapped; the export must go before close
    try:
        return check(buf, addr, pages)
    except OSError:
        return False
    finally:
        buf.close()


def _write_even_pages(buf: mmap.mmap, pages: int, value: int) -> None:
    for i in range(0, pages, 2):
        buf[i * mmap.PAGESIZE] = value


def _soft_dirty_marks(buf: mmap.mmap, addr: int, pages: int) -> bool:
    for i in range(pages):
        buf[i * mmap.PAGESIZE] = 1
    with open("/proc/self/clear_refs", "w") as f:
        f.write("4")
    _write_even_pages(buf, pages, 2)
    with open("/proc/self/pagemap", "rb") as f:
        f.seek(addr // mmap.PAGESIZE * 8)
        entries = struct.unpack(f"={pages}Q", f.read(8 * pages))
    return [bool(e & PM_SOFT_DIRTY) for e in entries] == [i % 2 == 0 for i in range(pages)]


def _uffd_wp_scan_marks(buf: mmap.mmap, addr: int, pages: int) -> bool:
    fd = register_uffd_wp_async(addr, pages * mmap.PAGESIZE)
    try:
        tracker = PagemapScanTracker(os.getpid(), Layout(mmap.PAGESIZE, [Region(addr, pages)]))
        try:
            tracker.arm(addr, addr + pages * mmap.PAGESIZE)
            _write_even_pages(buf, pages, 3)
            return tracker.collect() == list(range(0, pages, 2))
        finally:
            tracker.close()
    finally:
        os.close(fd)


class SoftDirtyTracker(Tracker):
    """clear_refs 4 + pagemap bit 55. Read and clear happen while the target is stopped."""

    mechanism = "soft-dirty"

    def __init__(self, pid: int, layout: Layout, stopped: Callable[[], object]) -> None:
        self.pid, self.layout, self._stopped = pid, layout, stopped
        self.fd = os.open(f"/proc/{pid}/pagemap", os.O_RDONLY)

    def _clear(self) -> None:
        with open(f"/proc/{self.pid}/clear_refs", "w") as f:
            f.write("4")

    def reset(self) -> None:
        self._clear()

    def collect(self) -> list[int]:
        ps = self.layout.page_size
        pages: list[int] = []
        with self._stopped():
            first = 0
            for r in self.layout.regions:
                raw = os.pread(self.fd, r.npages * 8, r.start // ps * 8)
                entries = array("Q", raw)
                pages.extend(first + i for i, e in enumerate(entries) if e & PM_SOFT_DIRTY)
                first += r.npages
            self._clear()
        return pages

    def close(self) -> None:
        os.close(self.fd)


class HashTracker(Tracker):
    """Compare xxh3_64 of every page with the hash of what was last sent for it.

    Comparing with what was *sent*, not with the previous scan, keeps a page that changed
    and changed back between two scans from being missed (the ABA case). The sender's own
    per-page hash array can be shared (``share``): then nothing is hashed twice.
    """

    mechanism = "page-hash"

    def __init__(self, read_all: Callable[[], memoryview], page_size: int) -> None:
        self._read_all, self.page_size = read_all, page_size
        self._sent: array | None = None
        self._shared = False

    def _hash(self) -> array:
        return array("Q", hash_units(self._read_all(), self.page_size))

    def share(self, sent: array) -> None:
        """Use ``sent`` (kept up to date by the sender) as the hashes of what was sent."""
        self._sent, self._shared = sent, True

    def reset(self) -> None:
        if not self._shared:
            self._sent = self._hash()

    def note_sent(self, page: int, data: memoryview) -> None:
        if self._sent is not None:
            self._sent[page] = xxhash.xxh3_64_intdigest(data)

    def collect(self) -> list[int]:
        new = self._hash()
        if self._sent is None:
            self._sent = new
            return list(range(len(new)))
        return [i for i, (a, b) in enumerate(zip(self._sent, new, strict=True)) if a != b]

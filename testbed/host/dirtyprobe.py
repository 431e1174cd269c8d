"""Probes of the kernel's dirty-page tracking, run on this very process.

Soft-dirty: clear with ``4 > /proc/self/clear_refs``, write a page, expect pagemap bit 55.
Some kernels accept the clear and never set the bit, so only a write-then-read proves it.
userfaultfd write-protect (async) + PAGEMAP_SCAN (Linux >= 6.7): register a region, protect
it, write pages, and expect the scan to report exactly those pages as written.
"""

from __future__ import annotations

import contextlib
import ctypes
import mmap
import os
import struct

PAGE = mmap.PAGESIZE
SOFT_DIRTY_BIT = 1 << 55

# userfaultfd ABI (linux/userfaultfd.h); Debian 12's headers lack the newer constants.
NR_USERFAULTFD = 323  # x86_64
UFFD_USER_MODE_ONLY = 1
UFFD_API = 0xAA
UFFD_FEATURE_WP_UNPOPULATED = 1 << 13
UFFD_FEATURE_WP_ASYNC = 1 << 15
UFFDIO_REGISTER_MODE_WP = 1 << 1
UFFDIO_WRITEPROTECT_MODE_WP = 1 << 0
UFFDIO_API = 0xC018AA3F  # _IOWR(0xAA, 0x3F, struct uffdio_api[24])
UFFDIO_REGISTER = 0xC020AA00  # _IOWR(0xAA, 0x00, struct uffdio_register[32])
UFFDIO_WRITEPROTECT = 0xC018AA06  # _IOWR(0xAA, 0x06, struct uffdio_writeprotect[24])
PAGEMAP_SCAN = 0xC0606610  # _IOWR('f', 16, struct pm_scan_arg[96])
PM_SCAN_WP_MATCHING = 1 << 0
PM_SCAN_CHECK_WPASYNC = 1 << 1
PAGE_IS_WRITTEN = 1 << 3


def soft_dirty_works(pages: int = 8) -> bool:
    """True when writing pages after clear_refs really sets pagemap's soft-dirty bit."""
    buf = mmap.mmap(-1, pages * PAGE)
    try:
        for i in range(pages):
            buf[i * PAGE] = 1
        with open("/proc/self/clear_refs", "w") as f:
            f.write("4")
        for i in range(0, pages, 2):
            buf[i * PAGE] = 2
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        with open("/proc/self/pagemap", "rb") as f:
            f.seek(addr // PAGE * 8)
            entries = struct.unpack(f"{pages}Q", f.read(8 * pages))
        dirty = [bool(e & SOFT_DIRTY_BIT) for e in entries]
        return dirty == [i % 2 == 0 for i in range(pages)]
    except OSError:
        return False
    finally:
        _release(buf)


def _release(buf: mmap.mmap) -> None:
    import gc

    gc.collect()  # drop the ctypes view so the mapping can be closed
    with contextlib.suppress(BufferError):
        buf.close()


def uffd_wp_scan_works(pages: int = 8) -> bool:
    """True when userfaultfd async write-protect + PAGEMAP_SCAN report written pages."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    libc.ioctl.argtypes = [ctypes.c_int, ctypes.c_ulong, ctypes.c_void_p]
    fd = libc.syscall(NR_USERFAULTFD, os.O_CLOEXEC | UFFD_USER_MODE_ONLY)
    if fd < 0:
        return False
    buf = mmap.mmap(-1, pages * PAGE)
    try:
        features = UFFD_FEATURE_WP_ASYNC | UFFD_FEATURE_WP_UNPOPULATED
        api = (ctypes.c_uint64 * 3)(UFFD_API, features, 0)
        if libc.ioctl(fd, UFFDIO_API, ctypes.byref(api)) != 0:
            return False
        addr = ctypes.addressof(ctypes.c_char.from_buffer(buf))
        length = pages * PAGE
        reg = (ctypes.c_uint64 * 4)(addr, length, UFFDIO_REGISTER_MODE_WP, 0)
        if libc.ioctl(fd, UFFDIO_REGISTER, ctypes.byref(reg)) != 0:
            return False
        wp = (ctypes.c_uint64 * 3)(addr, length, UFFDIO_WRITEPROTECT_MODE_WP)
        if libc.ioctl(fd, UFFDIO_WRITEPROTECT, ctypes.byref(wp)) != 0:
            return False
        for i in range(0, pages, 2):
            buf[i * PAGE] = 3
        # struct page_region: start, end, categories
        regions = (ctypes.c_uint64 * (3 * (pages + 1)))()
        # struct pm_scan_arg: size, flags, start, end, walk_end, vec, vec_len,
        # max_pages, category_inverted, category_mask, category_anyof_mask, return_mask
        arg = (ctypes.c_uint64 * 12)(96, 0, addr, addr + length, 0,
                                     ctypes.addressof(regions), pages + 1, 0,
                                     0, PAGE_IS_WRITTEN, 0, PAGE_IS_WRITTEN)
        with open("/proc/self/pagemap", "rb") as f:
            n = libc.ioctl(f.fileno(), PAGEMAP_SCAN, ctypes.byref(arg))
        if n < 0:
            return False
        written = set()
        for r in range(n):
            start, end = regions[3 * r], regions[3 * r + 1]
            written.update(range((start - addr) // PAGE, (end - addr) // PAGE))
        return written == set(range(0, pages, 2))
    finally:
        os.close(fd)
        _release(buf)

"""A live process as a memory source: its writable private mappings (process_vm_readv), or a
built-in guest's shared arena (mapped here, read with a memory copy)."""

from __future__ import annotations

import contextlib
import ctypes
import json
import mmap
import os
import signal
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from agents.memory.dirty import (
    HashTracker,
    PagemapScanTracker,
    SoftDirtyTracker,
    Tracker,
    probe_pagemap_scan,
    probe_soft_dirty,
)
from agents.memory.layout import Layout, Region
from agents.memory.source import MemorySource
from agents.workload import INFO_DIR, start_ticks

PAGE = os.sysconf("SC_PAGE_SIZE")
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
SKIP = ("[vvar]", "[vdso]", "[vsyscall]", "[vvar_vclock]")


def writable_private_regions(pid: int) -> list[Region]:
    """Parse /proc/PID/maps: every rw-p mapping except kernel-provided special ones."""
    regions = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        span, perms = parts[0], parts[1]
        name = parts[5] if len(parts) > 5 else ""
        if perms[:2] != "rw" or perms[3] != "p" or name in SKIP:
            continue
        lo, hi = (int(x, 16) for x in span.split("-"))
        regions.append(Region(lo, (hi - lo) // PAGE, name))
    return regions


def workload_info(pid: int) -> dict | None:
    """The info file a built-in workload publishes (arena address, size, service port)."""
    path = INFO_DIR / f"{pid}.json"
    try:
        info = json.loads(path.read_text())
        started = start_ticks(pid)
    except (OSError, ValueError):
        return None
    if info.get("pid") != pid or info.get("start_ticks") != started:
        return None  # stale file of a killed guest whose PID was reused
    return info


def process_state(pid: int) -> str:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2]


class ProcessMemory(MemorySource):
    """Memory of a running process. A built-in workload contributes only its arena."""

    def __init__(self, pid: int, tracking: str = "auto") -> None:
        self.pid = pid
        self.info = workload_info(pid)
        if self.info:
            regions = [Region(self.info["arena_addr"], self.info["arena_bytes"] // PAGE, "arena")]
        else:
            regions = writable_private_regions(pid)
        self.layout = Layout(PAGE, regions)
        self.can_resume = bool(self.info)
        self._fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
        self._arena = _map_guest_arena(pid, self.info) if self.info else None
        self.reader = "shared-arena" if self._arena is not None else "process_vm_readv"
        self._all: mmap.mmap | None = None  # whole-image buffer, only for page-hash tracking
        self._stopped_by_us = False
        self._unarmed = 0  # pages round 0 has yet to arm (a lazy tracker)
        self.unreadable_reads = 0
        self.tracker = self._choose_tracker(tracking)
        self.mechanism = self.tracker.mechanism

    def _choose_tracker(self, tracking: str) -> Tracker:
        wants = tracking in ("auto", "pagemap-scan") and self.info and self.info.get("uffd_wp")
        if wants and probe_pagemap_scan(self.pid, self.layout):
            return PagemapScanTracker(self.pid, self.layout)
        if tracking == "pagemap-scan":
            raise RuntimeError("PAGEMAP_SCAN tracking unavailable for this process")
        if tracking in ("auto", "soft-dirty") and probe_soft_dirty():
            return SoftDirtyTracker(self.pid, self.layout, self.stopped)
        if tracking == "soft-dirty":
            raise RuntimeError("soft-dirty tracking is not working on this kernel (probed)")
        return HashTracker(self.read_all, PAGE)

    # --- reading -------------------------------------------------------------------------
    def _read_run(self, view: memoryview, addr: int) -> memoryview:
        """/proc/PID/mem, page by page where a read fails: an unreadable page (e.g. unmapped
        since the layout was taken) reads as zeros, whatever run it is read in, so every
        read of it agrees."""
        done = 0
        while done < len(view):
            try:
                n = os.preadv(self._fd, [view[done:]], addr + done)
            except OSError:
                n = 0
            if n <= 0:
                end = min(len(view), (done // PAGE + 1) * PAGE)
                view[done:end] = bytes(end - done)
                self.unreadable_reads += 1
                n = end - done
            done += n
        return view

    def read_runs(self, pages: Sequence[int], scratch: bytearray
                  ) -> list[tuple[int, int, memoryview]]:
        """Copy the runs of ``pages`` into ``scratch``: from the mapped arena of a built-in
        guest, else with one process_vm_readv for all runs (/proc/PID/mem if it falls short)."""
        out, off, mv = [], 0, memoryview(scratch)
        runs = list(self.layout.runs(pages))
        if self._unarmed > 0:  # round 0 of a lazily armed tracker: protect, then read
            for _, count, addr in runs:
                self.tracker.arm(addr, addr + count * PAGE)
                self._unarmed -= count
        if self._arena is not None:
            base = self.layout.regions[0].start
            for first, count, addr in runs:
                n = count * PAGE
                mv[off : off + n] = self._arena[addr - base : addr - base + n]
                out.append((first, count, mv[off : off + n]))
                off += n
            return out
        for first, count, _ in runs:
            out.append((first, count, mv[off : off + count * PAGE]))
            off += count * PAGE
        if not _vm_readv(self.pid, scratch, runs):
            for (_, _, addr), (_, _, view) in zip(runs, out, strict=True):
                self._read_run(view, addr)
        return out

    def read_all(self) -> memoryview:
        if self._arena is not None:
            return memoryview(self._arena)[: self.layout.nbytes]
        if self._all is None:
            self._all = mmap.mmap(-1, max(self.layout.nbytes, PAGE))
        mv = memoryview(self._all)[: self.layout.nbytes]
        first = 0
        for r in self.layout.regions:
            if r.npages:
                self._read_run(mv[first * PAGE : (first + r.npages) * PAGE], r.start)
            first += r.npages
        return mv

    # --- tracking and control -----------------------------------------------------------
    def start_tracking(self) -> None:
        self.tracker.reset()
        self._unarmed = self.layout.npages if self.tracker.lazy else 0

    def dirty(self) -> list[int]:
        return self.tracker.collect()

    def _signal(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def pause(self) -> None:
        """SIGSTOP and wait until the kernel reports the process stopped."""
        self._signal(signal.SIGSTOP)
        deadline = time.monotonic() + 2.0
        while process_state(self.pid) not in "tT" and time.monotonic() < deadline:
            time.sleep(0.0005)
        self._stopped_by_us = True

    def cont(self) -> None:
        self._stopped_by_us = False
        self._signal(signal.SIGCONT)

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        already = self._stopped_by_us
        if not already:
            self.pause()
        try:
            yield
        finally:
            if not already:
                self.cont()

    def layout_warnings(self) -> list[str]:
        """Say so when the process's mappings moved since the layout was taken."""
        if self.info:
            return []
        now = {(r.start, r.npages) for r in writable_private_regions(self.pid)}
        then = {(r.start, r.npages) for r in self.layout.regions}
        if now == then and not self.unreadable_reads:
            return []
        return [f"mappings changed during the migration ({len(then - now)} regions gone, "
                f"{len(now - then)} new); the image covers the layout taken at the start, "
                "unreadable pages as zeros"]

    def end(self) -> None:
        self._signal(signal.SIGKILL)
        with contextlib.suppress(OSError):
            (INFO_DIR / f"{self.pid}.json").unlink()

    def alive(self) -> bool:
        try:
            return process_state(self.pid) not in "ZX"
        except OSError:
            return False

    def close(self) -> None:
        self.tracker.close()
        os.close(self._fd)
        if self._arena is not None:
            with contextlib.suppress(BufferError):  # a view still alive: GC unmaps it
                self._arena.close()


def _map_guest_arena(pid: int, info: dict) -> mmap.mmap | None:
    """Map a built-in guest's arena (its memfd, named in its info) read-only, or None."""
    fd_no = info.get("arena_fd")
    if fd_no is None:
        return None
    try:
        fd = os.open(f"/proc/{pid}/fd/{int(fd_no)}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    try:
        if os.fstat(fd).st_size != info["arena_bytes"]:
            return None
        # page tables filled now, not by a fault every 16 pages while round 0 streams
        return mmap.mmap(fd, info["arena_bytes"], flags=mmap.MAP_SHARED | _POPULATE,
                         prot=mmap.PROT_READ)
    except (OSError, ValueError):
        return None
    finally:
        os.close(fd)


class _IoVec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]


_libc = ctypes.CDLL(None, use_errno=True)
IOV_MAX = 1024


def _vm_readv(pid: int, scratch: bytearray, runs: list[tuple[int, int, int]]) -> bool:
    """Read every run (first, count, address) into ``scratch``, laid end to end, with
    process_vm_readv (one copy, no bounce page); False if any byte could not be read."""
    local_base = ctypes.addressof(ctypes.c_char.from_buffer(scratch))
    off = 0
    for i in range(0, len(runs), IOV_MAX):
        part = runs[i : i + IOV_MAX]
        remote = (_IoVec * len(part))(*[(addr, count * PAGE) for _, count, addr in part])
        want = sum(count for _, count, _ in part) * PAGE
        local = _IoVec(local_base + off, want)
        n = _libc.process_vm_readv(pid, ctypes.byref(local), 1, remote, len(part), 0)
        if n != want:
            return False
        off += want
    return True

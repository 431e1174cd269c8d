"""A live process as a memory source: its writable mappings, private and shared (anonymous
shared memory, memfd, shmem, shared files; read with process_vm_readv), or a built-in
guest's shared arena (mapped here, read with a memory copy).

Nothing is left out silently: a device mapping refuses the migration (naming it), and so do,
checked while the process is paused, a page that could not be read and a mapping that
changed since the layout was taken; a process that does not stop refuses it too."""

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

from agents.guest.workload import INFO_DIR, start_ticks
from agents.memory.dirty import (
    HashTracker,
    PagemapScanTracker,
    SoftDirtyTracker,
    Tracker,
    probe_pagemap_scan,
    probe_soft_dirty,
)
from agents.memory.layout import Layout, Region
from agents.memory.source import MemorySource, SourceRefused

PAGE = os.sysconf("SC_PAGE_SIZE")
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
SKIP = ("[vvar]", "[vdso]", "[vsyscall]", "[vvar_vclock]")


def _shared_ok(name: str) -> bool:
    """Shared mappings that are memory: anonymous shared (/dev/zero), shmem, memfd, SysV, files;
    not a device's registers or buffers."""
    return not name.startswith("/dev/") or name.startswith(("/dev/zero", "/dev/shm/"))


def writable_regions(pid: int) -> tuple[list[Region], list[str]]:
    """Parse /proc/PID/maps: every writable mapping, private (rw-p) and shared (rw-s), except
    kernel-provided special ones; and the mappings that cannot be migrated, named."""
    regions, refused = [], []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        parts = line.split(maxsplit=5)
        span, perms = parts[0], parts[1]
        name = parts[5] if len(parts) > 5 else ""
        if perms[:2] != "rw" or name in SKIP:
            continue
        if perms[3] == "s" and not _shared_ok(name):
            refused.append(f"{span} {perms} {name}: a device mapping cannot be migrated")
            continue
        lo, hi = (int(x, 16) for x in span.split("-"))
        regions.append(Region(lo, (hi - lo) // PAGE, name or ("[anon shared]" if perms[3] == "s"
                                                             else "")))
    return regions, refused


def _coverage(regions: list[Region]) -> set[tuple[int, int]]:
    """The address ranges the regions cover, adjacent ones merged."""
    spans: list[list[int]] = []
    for r in sorted(regions, key=lambda r: r.start):
        end = r.start + r.npages * PAGE
        if spans and spans[-1][1] == r.start:
            spans[-1][1] = end
        else:
            spans.append([r.start, end])
    return {(a, b) for a, b in spans}


def _uncovered(spans: set[tuple[int, int]], by: set[tuple[int, int]]) -> list[tuple[int, int]]:
    """The parts of ``spans`` that no range of ``by`` covers."""
    out = []
    for lo, hi in sorted(spans):
        cur = lo
        for blo, bhi in sorted(by):
            if bhi <= cur or blo >= hi:
                continue
            if blo > cur:
                out.append((cur, blo))
            cur = max(cur, bhi)
        if cur < hi:
            out.append((cur, hi))
    return out


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
        self.refused: list[str] = []
        if self.info:
            regions = [Region(self.info["arena_addr"], self.info["arena_bytes"] // PAGE, "arena")]
        else:
            regions, self.refused = writable_regions(pid)
        self.layout = Layout(PAGE, regions)
        self.can_resume = bool(self.info)
        self._fd = os.open(f"/proc/{pid}/mem", os.O_RDONLY)
        self._arena = _map_guest_arena(pid, self.info) if self.info else None
        self.reader = "shared-arena" if self._arena is not None else "process_vm_readv"
        self._all: mmap.mmap | None = None  # whole-image buffer, only for page-hash tracking
        self._stopped_by_us = False
        self._unarmed = 0  # pages round 0 has yet to arm (a lazy tracker)
        self.unreadable_reads = 0
        self.unreadable: set[int] = set()  # page addresses whose read failed
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
                self.unreadable.add((addr + done) // PAGE * PAGE)
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

    def pause(self, wait_s: float = 2.0) -> None:
        """SIGSTOP and wait until the kernel reports the process stopped; SourceRefused
        (and SIGCONT) if it has not within ``wait_s`` (or is gone)."""
        self._signal(signal.SIGSTOP)
        self._stopped_by_us = True
        deadline = time.monotonic() + wait_s
        while True:
            try:
                state = process_state(self.pid)
            except OSError:
                state = "X"
            if state in "tT":
                return
            if state in "ZX" or time.monotonic() >= deadline:
                self.cont()
                raise SourceRefused(f"process {self.pid} did not stop within {wait_s} s "
                                    f"(state {state})")
            time.sleep(0.0005)

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

    def refusals(self) -> list[str]:
        """What the image would leave out: a device mapping; memory mapped now that the
        layout taken at the start does not cover (a new or grown mapping); a page still
        mapped whose read failed. Memory unmapped meanwhile leaves nothing out (it is in
        the image as zeros, with a warning)."""
        out = list(self.refused)
        self.warnings = []
        if self.info:
            now_regions = self.layout.regions
        else:
            try:
                now_regions, _ = writable_regions(self.pid)
            except OSError as exc:
                return [*out, f"mappings unreadable: {exc}"]
            now, then = _coverage(now_regions), _coverage(self.layout.regions)
            new = _uncovered(now, then)
            if new:
                out.append("mappings changed during the migration: not in the image "
                           + ", ".join(f"{a:#x}-{b:#x}" for a, b in new[:3]))
            gone = _uncovered(then, now)
            if gone:
                self.warnings.append("unmapped during the migration (zeros in the image): "
                                     + ", ".join(f"{a:#x}-{b:#x}" for a, b in gone[:3]))
        spans = _coverage(now_regions)
        # a copy: the source check may be reading the paused memory in its thread meanwhile
        bad = sorted(a for a in tuple(self.unreadable) if any(lo <= a < hi for lo, hi in spans))
        if bad:
            out.append(f"{len(bad)} mapped page(s) could not be read, first at {bad[0]:#x} "
                       f"({self._region_of(bad[0])}): they would travel as zeros")
        return out

    def _region_of(self, addr: int | None) -> str:
        for r in self.layout.regions:
            if addr is not None and r.start <= addr < r.start + r.npages * PAGE:
                return r.name or "anonymous"
        return "?"

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

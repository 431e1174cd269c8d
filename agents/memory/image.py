"""A raw memory image file as a source, dirtied by a model (rate, working set, skew) or a trace.

The model really writes the pages it dirties, so the digest the destination checks is the
digest of memory that changed during the migration, as a guest's would.
"""

from __future__ import annotations

import random
import struct
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from agents.memory.layout import Layout, Region
from agents.memory.source import MemorySource

PAGE = 4096


@dataclass
class DirtyModel:
    """Writes at ``rate_mbps`` MB/s over a working set; ``hot_share`` of the writes hit the
    hottest ``hot_fraction`` of it."""

    rate_mbps: float = 0.0
    wss_mib: float = 0.0  # 0: the whole image
    hot_fraction: float = 0.1
    hot_share: float = 0.9
    seed: int = 1


def load_trace(path: str | Path) -> list[tuple[float, int]]:
    """A recorded dirty trace: one ``seconds page`` pair per line, '#' comments allowed."""
    out = []
    for line in Path(path).read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if line:
            t, p = line.split()
            out.append((float(t), int(p)))
    out.sort()
    return out


class ImageMemory(MemorySource):
    """The image held in memory; ``dirty`` advances the model by the running time elapsed."""

    mechanism = "model"

    def __init__(self, path: str | Path, model: DirtyModel | None = None,
                 trace: list[tuple[float, int]] | None = None) -> None:
        raw = Path(path).read_bytes()
        pad = (-len(raw)) % PAGE
        self.buf = bytearray(raw + bytes(pad))
        npages = len(self.buf) // PAGE
        self.layout = Layout(PAGE, [Region(0, npages, str(path))])
        self.model = model or DirtyModel()
        self.trace = trace
        self.mechanism = "trace" if trace is not None else "model"
        self._rng = random.Random(self.model.seed)
        wss = npages if not self.model.wss_mib else min(npages, int(self.model.wss_mib * 2**20)
                                                         // PAGE)
        self._ws = self._rng.sample(range(npages), wss) if npages else []
        self._hot = max(1, int(len(self._ws) * self.model.hot_fraction)) if self._ws else 0
        self._running_s = 0.0
        self._since: float | None = None
        self._trace_pos = 0
        self._carry = 0.0
        self._tick = 0

    def _advance(self) -> None:
        if self._since is not None:
            now = time.monotonic()
            self._running_s += now - self._since
            self._since = now

    def start_tracking(self) -> None:
        self._since = time.monotonic()
        self.dirty()

    def pause(self) -> None:
        self._advance()
        self._since = None

    def cont(self) -> None:
        if self._since is None:
            self._since = time.monotonic()

    def _write(self, page: int) -> None:
        self._tick += 1
        off = page * PAGE + self._rng.randrange(0, PAGE - 8, 8)
        struct.pack_into("<Q", self.buf, off, self._tick)

    def dirty(self) -> list[int]:
        before = self._running_s
        self._advance()
        pages: set[int] = set()
        if self.trace is not None:
            while self._trace_pos < len(self.trace) and self.trace[self._trace_pos][0] <= \
                    self._running_s:
                p = self.trace[self._trace_pos][1]
                if 0 <= p < self.layout.npages:
                    pages.add(p)
                    self._write(p)
                self._trace_pos += 1
        elif self.model.rate_mbps > 0 and self._ws:
            want = (self._running_s - before) * self.model.rate_mbps * 1e6 / PAGE + self._carry
            n = int(want)
            self._carry = want - n
            rnd = self._rng.random
            for _ in range(n):
                if rnd() < self.model.hot_share:
                    p = self._ws[int(rnd() * self._hot)]
                else:
                    p = self._ws[int(rnd() * len(self._ws))]
                self._write(p)
                pages.add(p)
        return sorted(pages)

    def read_runs(self, pages: Sequence[int], scratch: bytearray
                  ) -> list[tuple[int, int, memoryview]]:
        """Views of the image itself: the model only writes inside ``dirty``."""
        mv = memoryview(self.buf)
        return [(first, n, mv[addr : addr + n * PAGE])
                for first, n, addr in self.layout.runs(pages)]

    def read_all(self) -> memoryview:
        return memoryview(self.buf)

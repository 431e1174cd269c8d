"""What the pre-copy engine needs from anything that has memory to migrate."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

from agents.memory.layout import Layout


class SourceRefused(Exception):
    """The source cannot be migrated faithfully (the guest runs on where it is)."""


class MemorySource:
    """Base of the memory sources (a live process, an image file with a dirty model).

    ``pause``/``cont`` stun and release the guest (also used as a throttle duty cycle);
    ``dirty`` returns the pages written since the previous call; ``read_runs`` gives
    (first page, count, view) for the contiguous runs of sorted pages, read into ``scratch``
    (at least len(pages) pages) unless the source can hand out views of its own memory;
    ``read_all`` gives the whole image (page-hash tracking, tests).
    """

    layout: Layout
    mechanism: str = "none"
    reader: str | None = None  # how a live process's pages are read (shared-arena, ...)
    can_resume: bool = False
    info: dict | None = None

    def start_tracking(self) -> None: ...
    def dirty(self) -> list[int]: raise NotImplementedError
    def read_runs(self, pages: Sequence[int], scratch: bytearray
                  ) -> list[tuple[int, int, memoryview]]:
        raise NotImplementedError
    def read_all(self) -> memoryview: raise NotImplementedError
    def pause(self) -> None: ...
    def cont(self) -> None: ...
    def end(self) -> None: ...
    def alive(self) -> bool: return True
    def close(self) -> None: ...
    warnings: list[str] = []  # set by refusals(): worth saying, no reason to refuse

    def refusals(self) -> list[str]:
        """Why the image taken would not be the guest's memory (checked while paused)."""
        return []

    @contextlib.contextmanager
    def stopped(self) -> Iterator[None]:
        self.pause()
        try:
            yield
        finally:
            self.cont()

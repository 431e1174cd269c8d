"""The image layout: which address ranges are migrated, as one flat array of pages."""

from __future__ import annotations

import bisect
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any


@dataclass(frozen=True)
class Region:
    start: int  # address (process) or byte offset (image)
    npages: int
    name: str = ""


@dataclass
class Layout:
    """Regions laid end to end; a page number is an index into the concatenation."""

    page_size: int
    regions: list[Region]
    _firsts: list[int] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self._firsts = []
        n = 0
        for r in self.regions:
            self._firsts.append(n)
            n += r.npages
        self.npages = n

    @property
    def nbytes(self) -> int:
        return self.npages * self.page_size

    def address(self, page: int) -> int:
        if not 0 <= page < self.npages:
            raise IndexError(f"page {page} outside layout of {self.npages}")
        i = bisect.bisect_right(self._firsts, page) - 1
        return self.regions[i].start + (page - self._firsts[i]) * self.page_size

    def runs(self, pages: Sequence[int]) -> Iterator[tuple[int, int, int]]:
        """Group sorted pages into (first_page, count, address) runs contiguous in one region."""
        n = len(pages)
        if not n:
            return
        # where consecutive pages stop being adjacent (found in one comprehension, not a
        # Python loop per page: a full round is a few runs of a million pages)
        cuts = [] if pages[-1] - pages[0] == n - 1 else \
            [i for i, (a, b) in enumerate(pairwise(pages), 1) if b != a + 1]
        ps = self.page_size
        start = 0
        for end in (*cuts, n):
            first, last = pages[start], pages[end - 1]
            while first <= last:  # split where a run crosses into the next region
                r = bisect.bisect_right(self._firsts, first) - 1
                stop = min(last + 1, self._firsts[r] + self.regions[r].npages)
                yield first, stop - first, self.regions[r].start + (first - self._firsts[r]) * ps
                first = stop
            start = end

    def to_json(self) -> dict[str, Any]:
        return {"page_size": self.page_size,
                "regions": [[r.start, r.npages, r.name] for r in self.regions]}

    @classmethod
    def from_json(cls, obj: dict[str, Any], max_pages: int = 1 << 31) -> Layout:
        """Build a layout from a peer's description, refusing nonsense sizes."""
        try:
            ps = int(obj["page_size"])
            regions = [Region(int(s), int(n), str(nm)) for s, n, nm in obj["regions"]]
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"bad layout: {exc}") from None
        if ps not in (4096, 8192, 16384, 65536, 1 << 20):
            raise ValueError(f"unsupported page size {ps}")
        if any(r.npages < 0 or r.start < 0 for r in regions):
            raise ValueError("negative region in layout")
        if sum(r.npages for r in regions) > max_pages:
            raise ValueError("layout larger than this destination accepts")
        return cls(ps, regions)

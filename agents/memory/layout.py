"""The image layout: which address ranges are migrated, as one flat array of pages."""

from __future__ import annotations

import bisect
from collections.abc import Iterator
from dataclasses import dataclass, field
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

    def runs(self, pages: list[int]) -> Iterator[tuple[int, int, int]]:
        """Group sorted pages into (first_page, count, address) runs contiguous in one region."""
        i = 0
        n = len(pages)
        while i < n:
            first = pages[i]
            r = bisect.bisect_right(self._firsts, first) - 1
            region_end = self._firsts[r] + self.regions[r].npages
            j = i + 1
            while j < n and pages[j] == pages[j - 1] + 1 and pages[j] < region_end:
                j += 1
            addr = self.regions[r].start + (first - self._firsts[r]) * self.page_size
            yield first, j - i, addr
            i = j

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

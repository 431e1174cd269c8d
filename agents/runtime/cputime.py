"""Where an agent's CPU goes: its process's user and system seconds (getrusage, every thread),
a phase of the migration as the difference of two readings, and a tally of the calling
thread's CPU over chosen blocks (the destination's integrity check of each batch)."""

from __future__ import annotations

import resource
import time


def process_cpu() -> dict[str, float]:
    """This process's user and system CPU seconds so far (all its threads, no children)."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"user": ru.ru_utime, "system": ru.ru_stime}


def cpu_between(a: dict[str, float] | None, b: dict[str, float] | None
                ) -> dict[str, float] | None:
    """User and system seconds from reading ``a`` to reading ``b`` (None if either is
    missing: the phase never began or never ended)."""
    if a is None or b is None:
        return None
    return {k: round(b[k] - a[k], 4) for k in ("user", "system")}


class ThreadCpu:
    """The calling thread's CPU seconds (user + system) summed over the blocks timed with
    ``start``/``stop`` (``time.thread_time``: nanosecond clock, no other thread's work)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.blocks = 0

    @staticmethod
    def start() -> float:
        return time.thread_time()

    def stop(self, t0: float) -> None:
        self.seconds += time.thread_time() - t0
        self.blocks += 1

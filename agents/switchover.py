"""The source's side of the one switchover decision (the destination makes it, see
``agents/destination.py``): the phase the migration is in, and what was decided.

Until GO is sent the source alone can roll back (the destination never commits without a
GO). From GO on, only the destination's answer counts: lost (timeout, reset, partition), the
outcome is indeterminate, the guest stays paused, and the source asks again (RESOLVE) over
every path it was given; with no answer it reports ``indeterminate`` and leaves the guest
paused for ``python -m agents resolve``.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.guest.guard import Guard
from agents.resolve import Addr, destination_runs

OUTCOMES = ("completed", "rolled-back", "indeterminate-then-resolved", "indeterminate")


@dataclass
class Switchover:
    mid: str
    addrs: list[Addr]
    guard: Guard | None = None
    phase: str = "precopy"  # precopy | stopped | pending (GO sent or being sent) | decided
    answer: dict | None = None  # the destination's DECISION
    lost: str | None = None  # why the answer to GO was not received
    resolved_via: str | None = None

    def stopped(self) -> None:
        self.phase = "stopped"

    def pending(self) -> None:
        """About to send GO: from here the guard must ask, never assume."""
        if self.guard is not None:
            self.guard.tell("pending")
        self.phase = "pending"

    def decided(self, answer: dict, via: str | None = None) -> None:
        self.answer, self.phase = answer, "decided"
        self.resolved_via = via

    @property
    def undecided(self) -> bool:
        return self.phase == "pending" and self.answer is None

    @property
    def committed(self) -> bool:
        return self.answer is not None and self.answer.get("decision") == "committed"

    @property
    def destination_runs(self) -> bool:
        return self.answer is not None and destination_runs(self.answer)

    def outcome(self) -> str:
        if self.undecided:
            return "indeterminate"
        if self.lost is not None:
            return "indeterminate-then-resolved"
        return "completed" if self.committed else "rolled-back"

"""Faults at every switchover step: at the end exactly one copy of the guest runs (or one
is paused with an indeterminate outcome that the resolver then settles), its memory is the
source's at the pause (no progress a client saw is lost), no copy is frozen or throttled,
no agent, guard or standby is left behind. Cases: tests/integration/fault_harness.py."""

from __future__ import annotations

import pytest

from tests.integration.fault_harness import Case, run_case

pytestmark = pytest.mark.integration

DONE, BACK, RESOLVED = "completed", "rolled-back", "indeterminate-then-resolved"

CASES = [
    # kill -9 of the source agent at each step (its guard settles): "" = no result printed
    Case("src-kill-hello", "kill -9 source after HELLO", env_source="source:hello:crash"),
    Case("src-kill-precopy", "kill -9 source in pre-copy", env_source="source:precopy:crash"),
    Case("src-kill-stopped", "kill -9 source, guest stopped",
         env_source="source:stopped:crash"),
    Case("src-kill-commit", "kill -9 source after COMMIT", env_source="source:commit:crash"),
    Case("src-kill-go", "kill -9 source before GO", env_source="source:go:crash"),
    Case("src-kill-decided", "kill -9 source after DECISION",
         env_source="source:decided:crash"),
    # kill -9 of the destination agent at each step
    Case("dst-kill-hello", "kill -9 destination at HELLO", env_dest="destination:hello:crash",
         expect=(BACK,)),
    Case("dst-kill-prepared", "kill -9 destination before PREPARED",
         env_dest="destination:prepared:crash", expect=(BACK,)),
    Case("dst-kill-go", "kill -9 destination at GO", env_dest="destination:go:crash"),
    Case("dst-kill-decided", "kill -9 destination after deciding",
         env_dest="destination:decided:crash"),
    # lost messages and a stalled peer
    Case("ack-lost", "DECISION (ACK) lost", env_dest="destination:decided:drop",
         expect=(RESOLVED,)),
    Case("go-lost", "GO lost", env_source="source:go:drop", expect=(BACK, RESOLVED)),
    Case("dst-stall-go", "destination stalls after GO", env_dest="destination:go:stall",
         expect=(RESOLVED,)),
    # the network
    Case("partition-stop", "partition in the stop phase", env_source="source:stopped:delay",
         net="partition-stop"),
    Case("partition-decided", "partition after the decision",
         env_dest="destination:decided:delay", net="partition-decided", expect=(RESOLVED,)),
    Case("loss-5", "5 % loss both ways", net="loss", expect=(DONE,)),
    Case("flap-4s", "4 s link flap in pre-copy", net="flap", cap_mbit=40, size="16M",
         expect=(DONE,)),
    # what the image must not leave out
    Case("shared", "32 MiB rw-s shared mapping", guest="shared", expect=(DONE,)),
    Case("unreadable", "unreadable mapped pages", guest="unreadable", expect=(BACK,)),
    Case("growing", "mapping added mid-migration", guest="growing", cap_mbit=150,
         expect=(BACK,)),
]


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_fault(case):
    v = run_case(case)
    info = f"{v.outcome!r} {v.detail} {v.result.get('error')}"
    assert v.copies == 1, f"{v.copies} running copies: {info}"
    assert v.paused == 0 and not v.throttled, f"frozen or throttled guest: {info}"
    assert not v.lost, f"progress lost: {info}"
    assert not v.leftovers, f"left behind: {v.leftovers} {info}"
    if case.expect:
        assert any(v.outcome.startswith(e) for e in case.expect), info
    if case.guest == "shared":
        assert v.result["image_bytes"] >= 32 << 20 and v.result["integrity_ok"]
    if case.guest in ("unreadable", "growing"):
        assert "refused" in v.result["error"], info

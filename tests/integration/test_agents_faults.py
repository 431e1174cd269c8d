"""Faults at every switchover step: at the end exactly one copy of the guest runs (or one
is paused with an indeterminate outcome that the resolver then settles), its memory is the
source's at the pause (no progress a client saw is lost), no copy is frozen or throttled,
no agent, guard or standby is left behind. Cases: tests/integration/fault_harness.py."""

from __future__ import annotations

import pytest

from tests.integration.fault_harness import CASES, run_case

pytestmark = pytest.mark.integration


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
    if v.result.get("completed"):  # the destination's copy is the source's memory at pause
        assert v.result["integrity_ok"] and v.result["source_verified"] is not False
    if case.net == "partition-decided-mgmt":  # answered over the management path
        assert v.result["resolved_via"].startswith(f"{v.mgmt}:"), info
    if case.guest == "shared":
        assert v.result["image_bytes"] >= 32 << 20 and v.result["integrity_ok"]
    if case.guest in ("unreadable", "growing"):
        assert "refused" in v.result["error"], info

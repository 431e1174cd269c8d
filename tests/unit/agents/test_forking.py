"""Forked children: their own process name, their exit status back."""

from __future__ import annotations

from pathlib import Path

from agents.runtime.forking import PIPE, fork_call


def test_a_forked_child_carries_its_own_name_and_status():
    child = fork_call(lambda: 0 if Path("/proc/self/comm").read_text().strip() == "guest standby a"
                      else 3, stdout=PIPE, name="guest standby and more")  # cut to 15 bytes
    assert child.wait(timeout=10) == 0


def test_without_a_name_the_child_keeps_its_parents():
    parent = Path("/proc/self/comm").read_text()
    child = fork_call(lambda: 0 if Path("/proc/self/comm").read_text() == parent else 3)
    assert child.wait(timeout=10) == 0

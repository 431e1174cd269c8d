"""Deterministic fault points for tests: an agent crashes, stalls or drops a message at a
named protocol step.

Test-only: set ``AGENTS_FAULT="role:step:action[,role:step:action...]"`` in the agent's
environment (role ``source`` | ``destination``; action ``crash`` = SIGKILL of
itself, i.e. kill -9 at exactly that step; ``stall`` = stop making progress; ``drop`` = the
message sent at that step is not sent; ``delay`` = wait one second there, a window for an
external fault). Unset, every point is a no-op.
"""

from __future__ import annotations

import os
import signal
import time

ENV = "AGENTS_FAULT"
ACTIONS = ("crash", "stall", "drop", "delay")
DELAY_S = 1.0


def parse(spec: str) -> dict[tuple[str, str], str]:
    """``"source:go:drop,destination:prepared:crash"`` -> {(role, step): action}."""
    out: dict[tuple[str, str], str] = {}
    for item in filter(None, (p.strip() for p in spec.split(","))):
        role, step, action = item.split(":")
        if action not in ACTIONS:
            raise ValueError(f"unknown fault action {action!r} in {item!r}")
        out[(role, step)] = action
    return out


def _action(role: str, step: str) -> str | None:
    spec = os.environ.get(ENV)
    return parse(spec).get((role, step)) if spec else None


def hit(role: str, step: str) -> None:
    """A fault point: crash here or stall here (for ever) if the setting says so."""
    action = _action(role, step)
    if action == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "stall":
        while True:
            time.sleep(3600)
    elif action == "delay":
        time.sleep(DELAY_S)


async def ahit(role: str, step: str) -> None:
    """The async form: a stall sleeps in trio (the agent's timers still run)."""
    action = _action(role, step)
    if action in ("stall", "delay"):
        import trio

        if action == "stall":
            await trio.sleep_forever()
        await trio.sleep(DELAY_S)
        return
    hit(role, step)


def drops(role: str, step: str) -> bool:
    """True when the message this step sends is to be lost."""
    return _action(role, step) == "drop"

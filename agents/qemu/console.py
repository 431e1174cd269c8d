"""The guest's serial console (a file): its heartbeat counter and its boot messages."""

from __future__ import annotations

import re
import time
from pathlib import Path

BEAT = re.compile(rb"tb-heartbeat (\d+) ")  # the space: a line fully written


def beats(path: Path) -> list[int]:
    """Every heartbeat number the guest printed so far (in order)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return []
    return [int(m) for m in BEAT.findall(data)]


def last_beat(path: Path) -> int | None:
    found = beats(path)
    return found[-1] if found else None


def tail(path: Path, n: int = 8) -> str:
    """The console's last ``n`` lines (for error messages)."""
    try:
        lines = path.read_bytes().decode(errors="replace").splitlines()
    except FileNotFoundError:
        return "(no console output)"
    return "\n".join(lines[-n:])


def wait_beat(path: Path, above: int, timeout_s: float) -> int | None:
    """Wait until a heartbeat greater than ``above`` appears; return it (None: it did not)."""
    deadline = time.monotonic() + timeout_s
    while True:
        beat = last_beat(path)
        if beat is not None and beat > above:
            return beat
        if time.monotonic() > deadline:
            return None
        time.sleep(0.05)

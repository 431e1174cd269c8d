"""Run commands inside a network namespace given by a process ID (e.g. a Mininet node)."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence


class CommandError(RuntimeError):
    """A command in a namespace failed; the message says which and why."""


def ns_prefix(pid: int | str | None) -> list[str]:
    """``nsenter`` into the namespace of process ``pid``, or at path ``pid`` (a named one,
    ``/run/netns/NAME``); nothing for None (the caller's own)."""
    if pid is None:
        return []
    path = pid if isinstance(pid, str) else f"/proc/{pid}/ns/net"
    return ["nsenter", f"--net={path}", "--"]


def run(cmd: Sequence[str], pid: int | str | None = None, check: bool = True,
        timeout: float = 30.0, input: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``cmd`` in the network namespace of ``pid`` (the caller's own when None)."""
    full = ns_prefix(pid) + list(cmd)
    proc = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input)
    if check and proc.returncode != 0:
        where = f" in netns of pid {pid}" if pid is not None else ""
        raise CommandError(
            f"`{' '.join(cmd)}`{where} failed ({proc.returncode}): "
            f"{(proc.stderr or proc.stdout).strip()}"
        )
    return proc

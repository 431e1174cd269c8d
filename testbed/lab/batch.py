"""Run many configuration commands in a node with few processes.

Process start-up dominates lab bring-up, above all under software emulation (a fork/exec of
``nsenter`` + ``ip`` costs tens of milliseconds there). Consecutive ``ip`` commands go to one
``ip -batch -``, consecutive ``tc`` commands to one ``tc -batch -``, consecutive ``sysctl -qw``
to one ``sysctl``; anything else runs on its own. Order is kept, and a failure names the
command that failed.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from ..host.nsexec import CommandError, run

BATCHABLE = ("ip", "tc")


def groups(cmds: Sequence[Sequence[str]]) -> list[tuple[str, list[list[str]]]]:
    """Consecutive commands of the same batchable kind, in order."""
    out: list[tuple[str, list[list[str]]]] = []
    for cmd in cmds:
        kind = cmd[0] if cmd[0] in BATCHABLE else (
            "sysctl" if list(cmd[:2]) == ["sysctl", "-qw"] else "single")
        if out and out[-1][0] == kind and kind != "single":
            out[-1][1].append(list(cmd))
        else:
            out.append((kind, [list(cmd)]))
    return out


def run_many(cmds: Sequence[Sequence[str]], pid: int | str | None,
             timeout: float = 120.0) -> None:
    """Run ``cmds`` in the network namespace of ``pid``; raise on the first failure."""
    for kind, group in groups(cmds):
        if kind == "single" or len(group) == 1:
            for cmd in group:
                run(cmd, pid, timeout=timeout)
        elif kind == "sysctl":
            run(["sysctl", "-qw", *[c[2] for c in group]], pid, timeout=timeout)
        else:
            script = "".join(shlex.join(c[1:]) + "\n" for c in group)
            proc = run([kind, "-batch", "-"], pid, check=False, timeout=timeout, input=script)
            if proc.returncode != 0:
                m = re.search(r"Command failed -:(\d+)", proc.stderr)
                bad = group[int(m.group(1)) - 1] if m else group
                where = f" in netns of pid {pid}" if pid is not None else ""
                raise CommandError(f"`{shlex.join(bad) if m else kind + ' -batch'}`{where} "
                                   f"failed: {proc.stderr.strip()}")

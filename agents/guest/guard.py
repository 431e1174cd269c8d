"""A guard that outlives the source agent: if the agent dies while its guest is stopped or
throttled, the guest is put back (cgroup quota removed, SIGCONT), unless the destination
says it has committed (asked, never assumed), in which case the original is ended.

The guard is forked from the agent at the start of a migration into its own session and
reads the agent's state changes from a pipe: ``cgroup HOME PATH`` (a throttle cgroup exists),
``nocgroup``, ``pending`` (GO is about to be sent: only the destination knows the outcome
now), ``settled`` (the agent has acted on the outcome: the guard leaves). End of file
without ``settled`` means the agent is gone.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from agents.resolve import Addr, apply, settle
from agents.runtime.forking import DEVNULL, fork_call

ENV = "AGENTS_GUARD_DIR"  # where a guard that acted writes its report (<migration>.json)


def report_dir() -> Path:
    return Path(os.environ.get(ENV) or "/tmp/agents-guard")


class Guard:
    """The agent's handle: ``tell`` state lines, ``release`` once settled."""

    def __init__(self, pid: int, mid: str, addrs: Sequence[Addr], bind: str | None = None,
                 resolve_s: float = 60.0) -> None:
        log = str(report_dir() / f"{mid}.json")
        r, w = os.pipe()
        self.proc = fork_call(lambda: _watch(r, pid, mid, list(addrs), bind, resolve_s, log),
                              keep_fds=[r], stdout=DEVNULL, stderr=DEVNULL, new_session=True,
                              name="guest guard")
        os.close(r)
        self._w: int | None = w

    def tell(self, line: str) -> None:
        if self._w is not None:
            with contextlib.suppress(OSError):
                os.write(self._w, (line + "\n").encode())

    def release(self) -> None:
        """The agent settled the outcome itself: the guard exits without acting."""
        self.tell("settled")
        if self._w is not None:
            os.close(self._w)
            self._w = None
        with contextlib.suppress(Exception):
            self.proc.wait(timeout=5)


def _uncgroup(home: str, path: str, pid: int) -> None:
    with contextlib.suppress(OSError):
        Path(home, "cgroup.procs").write_text(str(pid))
    for _ in range(100):
        try:
            Path(path).rmdir()
            return
        except FileNotFoundError:
            return
        except OSError:
            time.sleep(0.01)


def _watch(fd: int, pid: int, mid: str, addrs: list[Addr], bind: str | None,
           resolve_s: float, log: str) -> int:
    cgroup: tuple[str, str] | None = None
    pending = False
    with os.fdopen(fd, "r") as pipe:
        for line in pipe:
            word, *rest = line.split()
            if word == "settled":
                return 0
            if word == "cgroup":
                cgroup = (rest[0], rest[1])
            elif word == "nocgroup":
                cgroup = None
            elif word == "pending":
                pending = True
    report: dict = {"guard": pid, "migration": mid, "pending": pending}
    if cgroup is not None:
        _uncgroup(*cgroup, pid)
        report["cgroup_removed"] = cgroup[1]
    if pending:
        answer = settle(addrs, mid, resolve_s, bind=bind)
        report["answer"] = answer
        if answer is None:  # nobody could say: keep the guest paused for the resolver
            report["action"] = "left paused (indeterminate)"
        else:
            report["action"] = apply(answer, pid)
    else:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
        report["action"] = "resumed the original"
    with contextlib.suppress(OSError):
        Path(log).parent.mkdir(parents=True, exist_ok=True)
        Path(log).write_text(json.dumps(report))
    print(json.dumps(report), file=sys.stderr)
    return 0

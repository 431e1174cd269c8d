"""What a run shows while it runs, and ``run.log`` in its results directory.

On a terminal: a live table of the migrations in flight (round, bytes sent, rate, what is
left and an estimate of when the round ends) under the experiment's own messages. Not on a
terminal (CI, a pipe): plain lines, one per message and one per finished migration (each
round too with ``-v``), never cursor movement. ``-q``: only failures. Everything, with every
round and the traceback of anything that failed, goes to ``run.log``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, Progress, TaskID, TextColumn

from ..measure.migration import MigrationJob, progress_to

MIB = 2**20


def _eta(event: dict[str, Any]) -> str:
    rate = event.get("rate_mbps") or 0.0
    left = event.get("remaining_bytes") or 0
    return f"~{left * 8 / (rate * 1e6):.1f} s" if rate > 0 and left else "-"


def describe(job: MigrationJob, event: dict[str, Any]) -> str:
    """One line for a migration's progress event."""
    label = job.label or f"{job.src}->{job.dst}"
    phase, rnd = event.get("phase"), event.get("round")
    sent = (f"{(event.get('sent_bytes') or 0) / MIB:.0f} MiB sent of a "
            f"{(event.get('image_bytes') or 0) / MIB:.0f} MiB image")
    left = (event.get("remaining_bytes") or 0) / MIB
    if phase == "ready":
        return f"{label}: connected and measured, waiting for the burst's common start"
    if phase in ("decided", "aborted"):
        return f"{label}: {phase} after {rnd} rounds, {sent}, {event.get('elapsed_s')} s"
    if phase == "stop-and-copy":
        return f"{label}: guest paused, last round {rnd}: {left:.1f} MiB to send ({sent})"
    return (f"{label}: round {rnd} done at {event.get('rate_mbps', 0):.0f} Mbit/s, {sent}, "
            f"{left:.1f} MiB dirtied meanwhile (next round {_eta(event)})")


class LiveRun:
    """The console and ``run.log`` of one ``testbed run``; a context manager."""

    def __init__(self, console: Console, out_dir: Path, verbosity: int = 0) -> None:
        self.console, self.verbosity = console, verbosity
        out_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = out_dir / "run.log"
        self.log = logging.getLogger(f"testbed.run.{id(self)}")
        self.log.propagate = False
        self.log.setLevel(logging.DEBUG)
        self._handler = logging.FileHandler(self.log_path)
        self._handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        self.log.addHandler(self._handler)
        self.live = console.is_terminal and verbosity >= 0
        self._progress = Progress(TextColumn("{task.description}"), BarColumn(bar_width=20),
                                  TextColumn("{task.fields[info]}"), console=console,
                                  transient=True) if self.live else None
        self._tasks: dict[int, TaskID] = {}
        self._sink = progress_to(self.migration)
        self._t0 = time.monotonic()

    def __enter__(self) -> LiveRun:
        self._sink.__enter__()
        if self._progress is not None:
            self._progress.start()
        self.log.info("run started")
        return self

    def __exit__(self, typ: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if self._progress is not None:
            self._progress.stop()
        self._sink.__exit__(typ, exc, tb)
        if exc is not None and not isinstance(exc, SystemExit | KeyboardInterrupt):
            self.log.error("run ended by %s", exc, exc_info=(typ, exc, tb))
        self.log.info("run ended after %.0f s", time.monotonic() - self._t0)
        self._handler.close()
        self.log.removeHandler(self._handler)

    def message(self, text: str, style: str = "cyan") -> None:
        """An experiment's message: on the console (unless -q) and in run.log."""
        self.log.info(text)
        if self.verbosity >= 0:
            self.console.print(f"[{style}]{text}[/]", soft_wrap=True)

    def failure(self, text: str, exc: BaseException | None = None) -> None:
        """Something failed: always on the console, with its traceback in run.log."""
        self.log.error(text, exc_info=exc)
        self.console.print(f"[red]{text}[/]" + (f" (traceback: {self.log_path})" if exc else ""),
                           soft_wrap=True)

    def migration(self, job: MigrationJob, event: dict[str, Any]) -> None:
        """A migration's progress event (from any thread)."""
        line = describe(job, event)
        self.log.debug(line)
        done = event.get("phase") in ("decided", "aborted")
        key = id(job)
        if self._progress is not None:
            info = line.split(": ", 1)[1]
            total = max(1, int(event.get("image_bytes") or 1))
            sent = min(total, int(event.get("sent_bytes") or 0))
            if key not in self._tasks:
                self._tasks[key] = self._progress.add_task(
                    job.label or f"{job.src}->{job.dst}", total=total, info=info)
            self._progress.update(self._tasks[key], total=total, completed=sent, info=info)
            if done:
                self._progress.remove_task(self._tasks.pop(key))
        elif self.verbosity >= 1 or (done and self.verbosity >= 0):
            self.console.print(line, highlight=False, soft_wrap=True, markup=False)

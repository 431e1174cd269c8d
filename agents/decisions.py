"""The destination's decision records: the one place that says whether a migration's copy
at the destination became the guest.

A migration is ``prepared`` (image verified, standby waiting), then either ``committed``
(recorded *before* the standby is told to go) or ``aborted`` (recorded once the standby is
gone). A decision once recorded is final; a record that says ``prepared`` when asked is turned
into ``aborted`` first (the standby killed), so an answer is never revised later. Records are
small JSON files written atomically (tmp + fsync + rename), so they outlive the agent: the
resolver can read them over the management path when the agent itself is gone.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

DEFAULT_DIR = Path("/tmp/agents-decisions")
ENV = "AGENTS_DECISION_DIR"  # overrides the default (tests: one directory per test)


def default_dir() -> str:
    return os.environ.get(ENV) or str(DEFAULT_DIR)
STATES = ("prepared", "committed", "aborted")


class DecisionStore:
    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root or default_dir())

    def path(self, mid: str) -> Path:
        """A migration id is the peer's string: the file is named by its hash."""
        return self.root / f"{hashlib.sha256(mid.encode()).hexdigest()[:32]}.json"

    def get(self, mid: str) -> dict | None:
        try:
            return json.loads(self.path(mid).read_text())
        except (OSError, ValueError):
            return None

    def state(self, mid: str) -> str | None:
        rec = self.get(mid)
        return rec.get("state") if rec else None

    def put(self, mid: str, state: str, revise: bool = False, **info: object) -> dict:
        """Record ``state`` durably; a final decision is never overwritten by another, except
        ``revise``: committed -> aborted by the destination itself when its guest failed to
        start (no copy runs there and no one was told "committed")."""
        if state not in STATES:
            raise ValueError(f"unknown decision state {state!r}")
        old = self.get(mid)
        final = old and old.get("state") in ("committed", "aborted")
        if final and old["state"] != state and not (revise and state == "aborted"):
            raise RuntimeError(f"migration {mid} already {old['state']}")
        rec = {**(old or {}), **info, "migration": mid, "state": state}
        self.root.mkdir(parents=True, exist_ok=True)
        path = self.path(mid)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            os.write(fd, json.dumps(rec).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(tmp, path)
        return rec

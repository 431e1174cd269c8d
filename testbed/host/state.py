"""A registry of what each run created, so `testbed clean` can remove it after a crash.

Each live lab writes ``/run/testbed/<run>.json``: the owner PID, every node's PID and network
namespace inode, processes started in nodes, root-namespace links, OVS bridges and per-run
directories (QEMU's QMP sockets and consoles).
"""

from __future__ import annotations

import json
import os
import threading
from dataclasses import asdict, dataclass, field
from pathlib import Path

STATE_DIR = Path(os.environ.get("TESTBED_STATE_DIR", "/run/testbed"))
_SAVE_LOCK = threading.Lock()


@dataclass
class RunState:
    run_id: str
    owner_pid: int
    node_pids: dict[str, int] = field(default_factory=dict)
    netns_inodes: dict[str, int] = field(default_factory=dict)
    processes: list[int] = field(default_factory=list)
    root_links: list[str] = field(default_factory=list)
    ovs_bridges: list[str] = field(default_factory=list)
    named_netns: list[str] = field(default_factory=list)  # guest slots (ip netns add)
    paths: list[str] = field(default_factory=list)  # run directories (QEMU sockets, consoles)

    @property
    def path(self) -> Path:
        return STATE_DIR / f"{self.run_id}.json"

    def save(self) -> None:
        with _SAVE_LOCK:  # labs start processes from several threads at once
            STATE_DIR.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_suffix(".tmp")
            tmp.write_text(json.dumps(asdict(self)))
            tmp.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)


def load_all() -> list[RunState]:
    states = []
    for p in sorted(STATE_DIR.glob("*.json")) if STATE_DIR.is_dir() else []:
        try:
            states.append(RunState(**json.loads(p.read_text())))
        except (ValueError, TypeError):
            p.unlink(missing_ok=True)
    return states


def netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None

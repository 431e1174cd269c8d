"""The records of labs that stay up: one JSON file per named lab, beside its control socket.

A record says who owns the lab (the supervisor's PID), which run-registry record
(``testbed.host.state``) holds what the lab created, where it came from (a topology name and
parameters, a topology file or a spec) and whether it is starting, up or failed.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ..host import state

NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,31}$")


class LabNotFound(LookupError):
    """No lab of that name (or no lab at all, or several and none named)."""


def labs_dir() -> Path:
    return state.STATE_DIR / "labs"


@dataclass
class LabRecord:
    name: str
    pid: int  # the supervisor's: the owner of the lab's run record
    run_id: str
    source: dict[str, Any]
    status: str = "starting"  # starting | up | failed
    error: str = ""
    started: float = 0.0
    placement: dict[str, Any] = field(default_factory=dict)

    @property
    def path(self) -> Path:
        return labs_dir() / f"{self.name}.json"

    @property
    def socket(self) -> Path:
        return labs_dir() / f"{self.name}.sock"

    @property
    def log(self) -> Path:
        return labs_dir() / f"{self.name}.log"

    def save(self) -> None:
        labs_dir().mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self)))
        tmp.replace(self.path)

    def remove(self) -> None:
        for p in (self.path, self.socket):
            p.unlink(missing_ok=True)

    def alive(self) -> bool:
        """Whether the supervisor still runs (a zombie does not)."""
        try:
            stat = Path(f"/proc/{self.pid}/stat").read_text()
        except OSError:
            return False
        return stat.rsplit(")", 1)[1].split()[0] != "Z"

    def run_state(self) -> state.RunState | None:
        """The run registry's record of what this lab created (None once it is gone)."""
        return next((st for st in run_states() if st.run_id == self.run_id), None)


def run_states() -> list[state.RunState]:
    """Every run-registry record, read without touching any (``state.load_all`` deletes
    records it cannot parse, which may be another branch's live run on a shared machine)."""
    known = set(state.RunState.__dataclass_fields__)
    out = []
    for p in sorted(state.STATE_DIR.glob("*.json")) if state.STATE_DIR.is_dir() else []:
        try:
            raw = json.loads(p.read_text())
            out.append(state.RunState(**{k: v for k, v in raw.items() if k in known}))
        except (OSError, ValueError, TypeError):
            continue
    return out


def check_name(name: str) -> str:
    if not NAME.match(name):
        raise ValueError(f"lab name {name!r}: use up to 32 letters, digits, '_', '.' or '-' "
                         "(starting with a letter or digit)")
    return name


def load(name: str) -> LabRecord | None:
    path = labs_dir() / f"{name}.json"
    try:
        return LabRecord(**json.loads(path.read_text()))
    except FileNotFoundError:
        return None
    except (ValueError, TypeError):
        return None


def load_all() -> list[LabRecord]:
    d = labs_dir()
    out = []
    for p in sorted(d.glob("*.json")) if d.is_dir() else []:
        rec = load(p.stem)
        if rec is not None:
            out.append(rec)
    return out


def find(name: str | None) -> LabRecord:
    """The lab called ``name``; with no name, the only lab there is."""
    if name is not None:
        rec = load(name)
        if rec is None:
            known = ", ".join(r.name for r in load_all()) or "none"
            raise LabNotFound(f"no lab {name!r} (labs: {known})")
        return rec
    recs = load_all()
    if not recs:
        raise LabNotFound("no lab is up (start one with `testbed lab up TOPOLOGY`)")
    if len(recs) > 1:
        raise LabNotFound(f"{len(recs)} labs are up ({', '.join(r.name for r in recs)}): "
                          "say which with --name")
    return recs[0]

"""Settle a migration whose outcome the source does not know: ask the destination (the one
side that decides) over any path that reaches it, then act on its answer.

``ask`` sends RESOLVE to each address in turn (plain TCP; the migration id is the capability:
it names one migration, and a RESOLVE can only abort an undecided one, never commit it);
``records`` reads the destination's decision records directly (the management path, e.g. a
shared filesystem) when no agent answers: a record left ``prepared`` by an agent that is gone
can never become ``committed`` (its standby exits with it), so it counts as aborted.
``apply`` ends the paused original (committed) or lets it continue (aborted).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import time
from collections.abc import Sequence
from pathlib import Path

from agents.decisions import DecisionStore
from agents.wire import protocol as P

Addr = tuple[str, int]


def _recv_frame(sock: socket.socket) -> tuple[P.FrameType, bytes]:
    def exact(n: int) -> bytes:
        buf = b""
        while len(buf) < n:
            chunk = sock.recv(n - len(buf))
            if not chunk:
                raise ConnectionError("closed before the answer")
            buf += chunk
        return buf

    ftype, length = P.decode_header(exact(P.HEADER.size))
    return ftype, exact(length)


def ask_one(addr: Addr, mid: str, timeout: float = 2.0, bind: str | None = None,
            confirm: bool = True) -> dict:
    """One RESOLVE to ``addr``: the DECISION (raises OSError / ProtocolError otherwise)."""
    with socket.create_connection(addr, timeout=timeout,
                                  source_address=(bind, 0) if bind else None) as sock:
        sock.sendall(P.encode_json(P.FrameType.RESOLVE, {"migration": mid,
                                                         "confirm": confirm}))
        ftype, payload = _recv_frame(sock)
    msg = P.decode_json(ftype, payload)
    if ftype != P.FrameType.DECISION or msg.get("decision") not in ("committed", "aborted"):
        raise P.ProtocolError(f"no decision in the answer: {ftype.name} {msg}")
    return msg | {"via": f"{addr[0]}:{addr[1]}"}


def _agent_alive(pid: object) -> bool:
    if not isinstance(pid, int):
        return False
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def from_records(records: str | Path, mid: str) -> dict | None:
    """The decision as the destination's records hold it (None: not decidable from them)."""
    store = DecisionStore(records)
    rec = store.get(mid)
    if rec is None:
        return None
    if rec["state"] == "prepared":
        if _agent_alive(rec.get("agent_pid")):
            return None  # its agent lives: ask it, do not decide behind its back
        with contextlib.suppress(ProcessLookupError, TypeError):
            os.kill(rec.get("guest_pid"), signal.SIGKILL)  # a standby never told to go
        rec = store.put(mid, "aborted", reason="resolved from the records: agent gone")
    return {"decision": rec["state"], "pid": rec.get("guest_pid"), "via": f"records:{records}"}


def settle(addrs: Sequence[Addr], mid: str, within: float, records: str | None = None,
           bind: str | None = None, interval: float = 0.5) -> dict | None:
    """Ask every path until one answers or ``within`` seconds have passed."""
    deadline = time.monotonic() + within
    while True:
        for addr in addrs:
            with contextlib.suppress(OSError, P.ProtocolError):
                return ask_one(addr, mid, bind=bind)
        if records:
            got = from_records(records, mid)
            if got is not None:
                return got
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval)


def destination_runs(answer: dict) -> bool:
    """Committed with a guest there (a verified copy without one leaves the original on)."""
    return answer.get("decision") == "committed" and answer.get("pid") is not None


def apply(answer: dict, pid: int) -> str:
    """Act on a decision for the paused original ``pid``: what was done."""
    sig, what = (signal.SIGKILL, "ended the original") if destination_runs(answer) \
        else (signal.SIGCONT, "resumed the original")
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        return "original already gone"
    return what

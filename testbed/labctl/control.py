"""Talking to a lab's supervisor: one JSON request, one JSON answer, over its unix socket."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any


class ControlError(RuntimeError):
    """The supervisor cannot be reached or did not answer."""


def request(path: Path, req: dict[str, Any], timeout_s: float = 60.0) -> dict[str, Any]:
    """Send ``req`` to the supervisor listening at ``path``; its answer."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout_s)
            s.connect(str(path))
            s.sendall(json.dumps(req).encode() + b"\n")
            with s.makefile("rb") as f:
                line = f.readline()
    except (OSError, TimeoutError) as exc:
        raise ControlError(f"lab supervisor at {path}: {exc}") from None
    if not line:
        raise ControlError(f"lab supervisor at {path} closed the connection without answer")
    return json.loads(line)


def read_request(f: Any) -> dict[str, Any]:
    line = f.readline()
    return json.loads(line) if line else {}


def write_answer(f: Any, answer: dict[str, Any]) -> None:
    f.write(json.dumps(answer, default=str).encode() + b"\n")
    f.flush()

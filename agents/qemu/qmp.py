"""A small synchronous QMP client: QEMU's JSON protocol over a unix socket.

The wire protocol (docs/interop/qmp-spec.rst): QEMU greets with ``{"QMP": ...}``; the client
sends ``qmp_capabilities``; then each ``{"execute": ..., "arguments": ...}`` gets either
``{"return": ...}`` or ``{"error": {"class", "desc"}}``, with asynchronous ``{"event": ...}``
lines interleaved (kept in :attr:`QMP.events`). One command is in flight at a time, so
replies need no ids.
"""

from __future__ import annotations

import json
import socket
import time
from typing import Any


class QMPError(RuntimeError):
    """QEMU answered a command with an error (``cls``: QEMU's error class)."""

    def __init__(self, command: str, cls: str, desc: str) -> None:
        super().__init__(f"{command}: {cls}: {desc}")
        self.command, self.cls, self.desc = command, cls, desc


class QMPClosed(ConnectionError):
    """The QMP connection ended (QEMU exited or was killed)."""


class QMP:
    """``with QMP.connect(path) as q: q.execute("query-status")``."""

    def __init__(self, sock: socket.socket, timeout_s: float = 30.0) -> None:
        self._sock = sock
        self._buf = b""
        self.timeout_s = timeout_s
        self.events: list[dict[str, Any]] = []
        self.greeting = self._read()
        if "QMP" not in self.greeting:
            raise QMPClosed(f"not a QMP greeting: {self.greeting}")
        self.execute("qmp_capabilities")

    @classmethod
    def connect(cls, path: str, wait_s: float = 30.0, timeout_s: float = 30.0) -> QMP:
        """Connect to QEMU's QMP socket at ``path``, waiting up to ``wait_s`` for it."""
        deadline = time.monotonic() + wait_s
        while True:
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            try:
                sock.settimeout(timeout_s)
                sock.connect(path)
                return cls(sock, timeout_s)
            except (FileNotFoundError, ConnectionRefusedError):
                sock.close()
                if time.monotonic() > deadline:
                    raise QMPClosed(f"no QMP socket at {path} after {wait_s:.0f} s") from None
                time.sleep(0.05)
            except BaseException:
                sock.close()
                raise

    def _read(self) -> dict[str, Any]:
        while b"\n" not in self._buf:
            try:
                chunk = self._sock.recv(65536)
            except TimeoutError:
                raise QMPClosed(f"QEMU did not answer within {self.timeout_s} s") from None
            except OSError as exc:
                raise QMPClosed(str(exc)) from None
            if not chunk:
                raise QMPClosed("QEMU closed the QMP connection")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def execute(self, command: str, **arguments: Any) -> Any:
        """Run one command and return its ``return`` value; raise :class:`QMPError`."""
        msg: dict[str, Any] = {"execute": command}
        if arguments:
            msg["arguments"] = arguments
        try:
            self._sock.sendall(json.dumps(msg).encode() + b"\n")
        except OSError as exc:
            raise QMPClosed(str(exc)) from None
        while True:
            doc = self._read()
            if "event" in doc:
                self.events.append(doc)
            elif "error" in doc:
                err = doc["error"]
                raise QMPError(command, err.get("class", "?"), err.get("desc", ""))
            elif "return" in doc:
                return doc["return"]

    def event_names(self) -> list[str]:
        return [e["event"] for e in self.events]

    def close(self) -> None:
        self._sock.close()

    def __enter__(self) -> QMP:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

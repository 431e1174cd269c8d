"""A guest's L3 move (``hostroute``: its /32 on every router) applied through netlink sockets
opened in each router's namespace before the migration starts, when the destination agent
calls back at resume (``--on-resume unix:PATH``, see ``agents.guest.identity.run_hook``).

Without it the move is a shell hook that enters each router's namespace and runs ``ip -batch``
there: a process per router inside the downtime. Here the sockets exist already, the
interface indexes are resolved and the RTM_NEWROUTE messages are encoded (pyroute2's message
codec); at resume they are only sent, every node's at once, and their acknowledgements read.
(pyroute2's own ``IPRoute.route()`` took 2-9 ms per route on this loaded machine, as much as
the shell hook per router: its request machinery, not the kernel, is the cost.)
"""

from __future__ import annotations

import contextlib
import os
import socket
import struct
import threading
import time
from pathlib import Path
from typing import Any

from agents.runtime.forking import setns
from topologies.model import Route

NETLINK_ROUTE = 0
NLMSG_ERROR = 2


class RouteMoveError(RuntimeError):
    """The routes could not be prepared (a node, an interface or a socket missing)."""


def encode(route: Route, oif: int | None, seq: int) -> bytes:
    """The RTM_NEWROUTE (create or replace, acknowledged) message of ``route``."""
    from pyroute2.netlink import NLM_F_ACK, NLM_F_CREATE, NLM_F_REPLACE, NLM_F_REQUEST
    from pyroute2.netlink.rtnl import RTM_NEWROUTE
    from pyroute2.netlink.rtnl.rtmsg import rtmsg

    net, _, plen = route.dst.partition("/")
    table = route.table if route.table is not None else 254  # main
    msg = rtmsg()
    msg["family"] = socket.AF_INET
    msg["dst_len"] = int(plen or 32)
    msg["table"] = table if table < 256 else 252
    msg["proto"] = 4  # static
    msg["scope"] = 0 if route.via else 253  # universe, or link for a device route
    msg["type"] = 1  # unicast
    attrs: list[tuple[str, Any]] = [("RTA_DST", net), ("RTA_TABLE", table)]
    if len(route.via) == 1:
        attrs.append(("RTA_GATEWAY", route.via[0]))
    elif route.via:
        attrs.append(("RTA_MULTIPATH", [{"attrs": [("RTA_GATEWAY", hop)], "hops": 0,
                                         "oif": 0} for hop in route.via]))
    if oif is not None:
        attrs.append(("RTA_OIF", oif))
    if route.src:
        attrs.append(("RTA_PREFSRC", route.src))
    msg["attrs"] = attrs
    msg["header"]["type"] = RTM_NEWROUTE
    msg["header"]["flags"] = NLM_F_REQUEST | NLM_F_ACK | NLM_F_CREATE | NLM_F_REPLACE
    msg["header"]["sequence_number"] = seq
    msg.encode()
    return bytes(msg.data)


def _open_in(netns: str, devs: list[str]) -> tuple[socket.socket, dict[str, int]]:
    """A NETLINK_ROUTE socket created in the namespace at ``netns`` (a socket stays in the
    namespace it was made in) and the indexes of ``devs`` there; done in a thread of its own,
    which alone enters the namespace."""
    out: list[Any] = []

    def work() -> None:
        try:
            setns(netns)  # this thread only
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_ROUTE)
            sock.bind((0, 0))
            out.append((sock, {d: socket.if_nametoindex(d) for d in devs}))
        except OSError as exc:
            out.append(exc)

    t = threading.Thread(target=work, daemon=True)
    t.start()
    t.join(10)
    if not out or isinstance(out[0], BaseException):
        raise RouteMoveError(f"{netns}: {out[0] if out else 'no answer'}")
    return out[0]


def _acks(sock: socket.socket, count: int) -> None:
    """Read ``count`` acknowledgements; the first refusal is an error."""
    got = 0
    while got < count:
        data = sock.recv(65536)
        off = 0
        while off + 16 <= len(data):
            length, typ = struct.unpack_from("=IH", data, off)
            if typ == NLMSG_ERROR:
                (err,) = struct.unpack_from("=i", data, off + 16)
                if err:
                    raise OSError(-err, os.strerror(-err))
                got += 1
            off += max(16, (length + 3) & ~3)


class RouteMover:
    """Netlink sockets in each node's namespace, the routes ready, a Unix socket to be told
    when; a context manager (``with RouteMover(...) as hook: ... --on-resume hook``)."""

    def __init__(self, routes: dict[str, list[Route]], netns_of: dict[str, str],
                 sock_dir: Path) -> None:
        self.routes, self.netns_of = routes, netns_of
        self.path = sock_dir / f"route-move-{os.getpid()}-{id(self):x}.sock"
        self._sockets: dict[str, Any] = {}
        self._requests: dict[str, list[bytes]] = {}
        self._server: socket.socket | None = None
        self._thread: threading.Thread | None = None
        self.applied_ms: float | None = None
        self.error: str | None = None

    def __enter__(self) -> str:
        try:
            for node, routes in self.routes.items():
                devs = sorted({r.dev for r in routes if r.dev})
                try:
                    sock, index = _open_in(self.netns_of[node], devs)
                except (RouteMoveError, OSError) as exc:
                    raise RouteMoveError(f"{node}: {exc}") from None
                self._sockets[node] = sock
                self._requests[node] = [encode(r, index.get(r.dev) if r.dev else None, i + 1)
                                        for i, r in enumerate(routes)]
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with contextlib.suppress(FileNotFoundError):
                self.path.unlink()
            self._server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
            self._server.bind(str(self.path))
            self._server.listen(1)
        except Exception:
            self._close()
            raise
        self._thread = threading.Thread(target=self._serve, daemon=True,
                                        name=f"route-move {self.path.name}")
        self._thread.start()
        return f"unix:{self.path}"

    def __exit__(self, *exc: object) -> None:
        self._close()

    def apply(self) -> None:
        """Send every prepared route (the move itself), then read every acknowledgement."""
        t0 = time.perf_counter()
        for node, reqs in self._requests.items():
            for msg in reqs:
                self._sockets[node].send(msg)
        for node, reqs in self._requests.items():
            try:
                _acks(self._sockets[node], len(reqs))
            except OSError as exc:
                raise RouteMoveError(f"{node}: route refused: {exc}") from None
        self.applied_ms = round((time.perf_counter() - t0) * 1e3, 3)

    def _serve(self) -> None:
        assert self._server is not None
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return  # closed
            with conn:
                try:
                    if conn.makefile("r").readline().strip() != "resume":
                        conn.sendall(b"error: expected 'resume'\n")
                        continue
                    self.apply()
                    conn.sendall(b"ok\n")
                except Exception as exc:  # told to the agent, which fails the resume
                    self.error = f"{type(exc).__name__}: {exc}"
                    with contextlib.suppress(OSError):
                        conn.sendall(f"error {self.error}\n".encode())

    def _close(self) -> None:
        if self._server is not None:
            with contextlib.suppress(OSError):
                self._server.shutdown(socket.SHUT_RDWR)
            self._server.close()
            self._server = None
        if self._thread is not None:
            self._thread.join(5)
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

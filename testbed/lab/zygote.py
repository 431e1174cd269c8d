"""A fork server for the agents: one warm interpreter forks every agent into its lab node.

Each migration starts a source and a destination agent. Started fresh, an agent pays the
interpreter's start-up and its imports (trio above all) every time: about 0.1 s natively, but
7 to 8 s of CPU in the software-emulated VM where the testbed does its network work, so there
start-up, not migration, was most of a run. The zygote (after Android's, and like
multiprocessing's forkserver) imports the agents once; each agent is a fork of it that joins
its node's network namespace and runs the same ``python -m agents ARGS`` entry point: the
same agent and command-line contract, at the price of a fork. The zygote is single-threaded,
so forking it is safe.

Protocol, one Unix seqpacket connection per agent: the client sends
``{"argv": [...], "netns": "/proc/PID/ns/net" | null, "cwd": ...}`` with the agent's stdin,
stdout and stderr attached (SCM_RIGHTS); the zygote answers ``{"pid": N}`` and, when the agent
exits, ``{"exit": code}`` (negative: killed by that signal). The zygote exits when its stdin
reaches EOF, i.e. when the testbed process that started it is gone; agents still running are
the lab's to stop (they live in its namespaces and are in its run registry).
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import secrets
import selectors
import signal
import socket
import subprocess
import sys
import threading
from typing import IO, Any

from agents.runtime.forking import (
    ChildProcess,
    become_child,
    name_process,
    open_streams,
    run_and_exit,
    setns,
)

from ..host.procio import read_line

PRELOAD = ("agents.__main__", "agents.source", "agents.destination", "agents.guest.workload",
           "agents.memory.process", "agents.memory.image", "agents.memory.disk",
           "agents.security.tls", "agents.security.credentials")
START_TIMEOUT_S = 180.0  # the imports take ~10 s of CPU under TCG, more on a loaded guest


# --- the server ------------------------------------------------------------------------------
# what a child may run: the agents' entry point, or the libiperf client of the baselines
ENTRIES = {"agents": "agents.__main__", "iperf3": "testbed.measure.iperf3_client"}


def _agent(argv: list[str], netns: str | None, cwd: str | None, entry: str = "agents") -> int:
    if netns:
        setns(netns)
    if cwd:
        os.chdir(cwd)
    return importlib.import_module(ENTRIES[entry]).main(argv)


def _spawn(conn: socket.socket, children: dict[int, socket.socket]) -> None:
    conn.settimeout(10)
    try:
        msg, fds, _, _ = socket.recv_fds(conn, 1 << 16, 3)
        req = json.loads(msg)
        argv, netns, cwd = list(req["argv"]), req.get("netns"), req.get("cwd")
        entry = req.get("entry", "agents")
        if entry not in ENTRIES:
            raise ValueError(f"unknown entry {entry!r}")
        if len(fds) != 3:
            raise ValueError(f"expected 3 descriptors, got {len(fds)}")
    except (OSError, ValueError, KeyError, TypeError) as exc:
        with contextlib.suppress(OSError):
            conn.send(json.dumps({"error": f"{type(exc).__name__}: {exc}"}).encode())
        conn.close()
        return
    pid = os.fork()
    if pid == 0:
        become_child(list(fds))
        name_process(f"agents {argv[0]}" if entry == "agents" and argv else f"{entry} client")
        run_and_exit(lambda: _agent(argv, netns, cwd, entry))
    for fd in fds:
        os.close(fd)
    children[pid] = conn
    with contextlib.suppress(OSError):
        conn.send(json.dumps({"pid": pid}).encode())


def _reap(children: dict[int, socket.socket]) -> None:
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        conn = children.pop(pid, None)
        if conn is not None:
            with contextlib.suppress(OSError):
                conn.send(json.dumps({"exit": os.waitstatus_to_exitcode(status)}).encode())
            conn.close()


def serve(name: str) -> None:
    """Import the agents, then fork one per request until stdin reaches EOF; listens on the
    abstract Unix socket ``name`` (in the root network namespace, where the testbed runs)."""
    for module in PRELOAD:
        importlib.import_module(module)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    listener.bind("\0" + name)
    listener.listen(64)
    wake_r, wake_w = socket.socketpair()
    for s in (wake_r, wake_w):
        s.setblocking(False)
    signal.set_wakeup_fd(wake_w.fileno())
    signal.signal(signal.SIGCHLD, lambda *_: None)
    children: dict[int, socket.socket] = {}
    sel = selectors.DefaultSelector()
    sel.register(listener, selectors.EVENT_READ)
    sel.register(wake_r, selectors.EVENT_READ)
    sel.register(0, selectors.EVENT_READ)
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            if key.fileobj is listener:
                conn, _ = listener.accept()
                _spawn(conn, children)
            elif key.fileobj is wake_r:
                with contextlib.suppress(BlockingIOError):
                    while wake_r.recv(512):
                        pass
                _reap(children)
            elif not os.read(0, 512):
                return  # the testbed process is gone


# --- the client ------------------------------------------------------------------------------
class ZygoteError(RuntimeError):
    pass


class ZygoteChild(ChildProcess):
    """An agent forked by the zygote: its exit status arrives on the request's connection."""

    def __init__(self, conn: socket.socket, pid: int, files: list[IO[Any] | None],
                 args: Any) -> None:
        super().__init__(pid, *files, args=args)
        self._conn = conn

    def _reap(self, block: bool) -> int | None:
        self._conn.setblocking(block)
        try:
            msg = self._conn.recv(4096)
        except BlockingIOError:
            return None
        finally:
            self._conn.setblocking(True)
        self._conn.close()
        if not msg:
            return -int(signal.SIGKILL)  # the zygote died: so did our view of the agent
        return int(json.loads(msg)["exit"])


class Zygote:
    """The testbed's side: start the server, spawn agents through it."""

    def __init__(self) -> None:
        self.name = f"testbed-zygote-{os.getpid()}-{secrets.token_hex(4)}"
        self.proc = subprocess.Popen([sys.executable, "-m", "testbed.lab.zygote", self.name],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._ready: bool | None = None
        self._lock = threading.Lock()

    def wait_ready(self, timeout: float = START_TIMEOUT_S) -> None:
        with self._lock:
            if self._ready is None:
                assert self.proc.stdout is not None
                line = read_line(self.proc.stdout, timeout)
                self._ready = line is not None and line.strip() == "ready"
            if not self._ready:
                raise ZygoteError(f"agent fork server not ready after {timeout:.0f} s "
                                  f"(status {self.proc.poll()})")

    def spawn(self, argv: list[str], netns: int | str | None = None, *,
              stdin: int | None = subprocess.DEVNULL, stdout: int | None = None,
              stderr: int | None = None, text: bool = False,
              entry: str = "agents") -> ZygoteChild:
        """Fork ``python -m agents ARGV`` (or another of :data:`ENTRIES`) in a namespace: a
        process's (PID) or at a path."""
        self.wait_ready()
        inherit = [0, 1, 2]
        child_fds, files, to_close = open_streams(stdin, stdout, stderr, text)
        fds = [fd if fd is not None else inherit[i] for i, fd in enumerate(child_fds)]
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.connect("\0" + self.name)
            req = {"argv": argv, "cwd": os.getcwd(), "entry": entry,
                   "netns": netns if isinstance(netns, str) or netns is None
                   else f"/proc/{netns}/ns/net"}
            socket.send_fds(conn, [json.dumps(req).encode()], fds)
            conn.settimeout(30)
            reply = json.loads(conn.recv(4096) or b"{}")
            conn.settimeout(None)
        except (OSError, ValueError) as exc:
            conn.close()
            raise ZygoteError(f"agent fork server: {exc}") from None
        finally:
            for fd in to_close:
                os.close(fd)
        if "pid" not in reply:
            conn.close()
            raise ZygoteError(f"agent fork server refused: {reply.get('error', reply)}")
        return ZygoteChild(conn, int(reply["pid"]), files, args=argv)

    def close(self) -> None:
        if self.proc.poll() is None:
            with contextlib.suppress(OSError):
                assert self.proc.stdin is not None
                self.proc.stdin.close()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_shared: Zygote | None = None
_shared_lock = threading.Lock()


def shared() -> Zygote | None:
    """This process's zygote, started on first use; None when disabled (TESTBED_ZYGOTE=0)."""
    global _shared
    if os.environ.get("TESTBED_ZYGOTE", "1") == "0":
        return None
    with _shared_lock:
        if _shared is None:
            import atexit

            _shared = Zygote()
            atexit.register(_shared.close)
        return _shared


if __name__ == "__main__":
    serve(sys.argv[1])

"""Start a child by forking this already-warm interpreter instead of exec'ing a new one.

A fresh ``python -m agents ...`` pays the interpreter's start-up and the imports (trio,
xxhash, ...) again: about 20 ms natively, but 3 to 8 s of CPU under software emulation, where
the testbed runs its network work. A fork costs milliseconds everywhere. The child behaves
like a ``subprocess.Popen(..., close_fds=True)`` child: only its standard streams and
``keep_fds`` stay open, signal handlers are back to their defaults, and it never returns into
the parent's code (``os._exit`` with the function's return value).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import IO, Any

PIPE, DEVNULL = subprocess.PIPE, subprocess.DEVNULL
CLONE_NEWNET = 0x40000000
PR_SET_NAME = 15


def name_process(name: str) -> None:
    """Give the calling process the name ``ps``, ``top`` and /proc/PID/comm show (15 bytes):
    a forked child would otherwise carry its parent's, and every agent, guest and baseline
    client of a lab would look alike."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_NAME, name.encode()[:15])


def setns(path: str) -> None:
    """Move the calling (single-threaded) process into the network namespace at ``path``
    (``/proc/PID/ns/net`` or a named one, ``/run/netns/NAME``)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        if hasattr(os, "setns"):  # Python >= 3.12
            os.setns(fd, CLONE_NEWNET)
            return
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)


class ChildProcess:
    """The parent's handle on a child: the parts of ``subprocess.Popen`` the testbed uses."""

    def __init__(self, pid: int, stdin: IO[Any] | None, stdout: IO[Any] | None,
                 stderr: IO[Any] | None, args: Any = None) -> None:
        self.pid, self.args = pid, args
        self.stdin, self.stdout, self.stderr = stdin, stdout, stderr
        self.returncode: int | None = None
        self._lock = threading.Lock()

    # subclasses: how the exit status is learnt
    def _reap(self, block: bool) -> int | None:
        raise NotImplementedError

    def poll(self) -> int | None:
        with self._lock:
            if self.returncode is None:
                self.returncode = self._reap(block=False)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.001
        while self.poll() is None:
            if deadline is not None and time.monotonic() >= deadline:
                raise subprocess.TimeoutExpired(self.args, timeout)
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, sig)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def communicate(self, input: Any = None, timeout: float | None = None) -> tuple[Any, Any]:
        """Read stdout and stderr to the end and wait, like ``Popen.communicate``."""
        if input is not None and self.stdin is not None:
            self.stdin.write(input)
        if self.stdin is not None:
            with contextlib.suppress(OSError):
                self.stdin.close()
        got: dict[str, Any] = {}
        readers = []
        for name in ("stdout", "stderr"):
            stream = getattr(self, name)
            if stream is not None and not stream.closed:
                t = threading.Thread(target=lambda n=name, s=stream: got.__setitem__(n, s.read()),
                                     daemon=True)
                t.start()
                readers.append(t)
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in readers:
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                raise subprocess.TimeoutExpired(self.args, timeout)
        self.wait(None if deadline is None else max(0.0, deadline - time.monotonic()))
        for name in ("stdout", "stderr"):
            stream = getattr(self, name)
            if stream is not None and name in got:
                stream.close()
        return got.get("stdout"), got.get("stderr")


class ForkedChild(ChildProcess):
    """A direct child of this process: reaped with ``waitpid``."""

    def _reap(self, block: bool) -> int | None:
        try:
            pid, status = os.waitpid(self.pid, 0 if block else os.WNOHANG)
        except ChildProcessError:
            return -1
        return os.waitstatus_to_exitcode(status) if pid else None


def open_streams(stdin: int | None, stdout: int | None, stderr: int | None, text: bool
                 ) -> tuple[list[int | None], list[IO[Any] | None], list[int]]:
    """For each of PIPE / DEVNULL / None / an fd: the child's fd, the parent's file object,
    and the fds to close in the parent once the child has its copies."""
    child: list[int | None] = []
    parent: list[IO[Any] | None] = []
    to_close: list[int] = []
    for i, want in enumerate((stdin, stdout, stderr)):
        if want == PIPE:
            r, w = os.pipe()
            mine, theirs = (w, r) if i == 0 else (r, w)
            mode = ("w" if i == 0 else "r") + ("" if text else "b")
            parent.append(open(mine, mode, buffering=1 if text and i == 0 else -1))  # noqa: SIM115
            child.append(theirs)
            to_close.append(theirs)
        elif want == DEVNULL:
            fd = os.open(os.devnull, os.O_RDWR)
            child.append(fd)
            parent.append(None)
            to_close.append(fd)
        else:
            child.append(want)
            parent.append(None)
    return child, parent, to_close


def become_child(fds: list[int | None], keep_fds: Iterable[int] = (),
                 new_session: bool = False) -> None:
    """In a freshly forked child: standard streams from ``fds`` (and new ``sys.std*`` objects
    over them), every other descriptor closed but ``keep_fds``, default signal handlers, no
    wakeup fd shared with the parent."""
    with contextlib.suppress(ValueError, OSError):
        signal.set_wakeup_fd(-1)
    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGCHLD, signal.SIGPIPE):
        signal.signal(sig, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if new_session:
        os.setsid()
    for target, fd in enumerate(fds):
        if fd is not None and fd != target:
            os.dup2(fd, target)
    keep = {0, 1, 2, *keep_fds}
    for name in os.listdir("/proc/self/fd"):
        fd = int(name)
        if fd not in keep:
            with contextlib.suppress(OSError):
                os.close(fd)
    for fd in keep_fds:
        os.set_inheritable(fd, True)
    # the parent's stream objects may be anything (pytest's capture, say): new ones on 0-2
    for name, fd, mode, buffering in (("stdin", 0, "r", -1), ("stdout", 1, "w", -1),
                                      ("stderr", 2, "w", 1)):
        with contextlib.suppress(OSError):  # a closed standard fd stays closed
            setattr(sys, name, open(fd, mode, buffering=buffering, closefd=False))  # noqa: SIM115


def run_and_exit(fn: Callable[[], int | None]) -> None:
    """Run the child's work and leave with its status, never returning to the caller."""
    rc = 1
    try:
        rc = fn() or 0
    except SystemExit as exc:
        if isinstance(exc.code, int) or exc.code is None:
            rc = exc.code or 0
        else:
            print(exc.code, file=sys.stderr)
            rc = 1
    except BaseException:
        traceback.print_exc()
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(rc)


def fork_call(fn: Callable[[], int | None], *, stdin: int | None = None,
              stdout: int | None = None, stderr: int | None = None, text: bool = False,
              keep_fds: Iterable[int] = (), new_session: bool = False,
              args: Any = None, name: str | None = None) -> ForkedChild:
    """Run ``fn`` in a forked child; streams are PIPE, DEVNULL, None (inherit) or an fd;
    ``name``: the child's process name (:func:`name_process`)."""
    keep = list(keep_fds)
    child_fds, parent_files, to_close = open_streams(stdin, stdout, stderr, text)
    for stream in (sys.stdout, sys.stderr):
        stream.flush()  # nothing buffered is written twice
    pid = os.fork()
    if pid == 0:
        become_child(child_fds, keep, new_session)
        if name:
            name_process(name)
        run_and_exit(fn)
    for fd in to_close:
        os.close(fd)
    return ForkedChild(pid, *parent_files, args=args)

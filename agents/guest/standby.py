"""The guest waiting at the destination (like an incoming QEMU): a process forked from the
destination agent's warm interpreter, with the image memfd it will adopt, told to go once the
destination has decided, killed otherwise. The destination's protocol decides; this module
only starts, readies, resumes and stops the guest."""

from __future__ import annotations

import contextlib
import mmap
import os
import time

import trio

from agents.guest import workload
from agents.guest.identity import set_link
from agents.runtime.forking import DEVNULL, PIPE, ChildProcess, fork_call

_SHARED_POPULATE = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)
READY_TIMEOUT_S = 60.0
GO_TIMEOUT_S = 15.0


class StandbyError(RuntimeError):
    """The standby guest did not start, or did not come up when told to go."""


class StandbyGuest:
    """A guest process waiting for its image (``image``, a shared memfd mapping)."""

    def __init__(self, image: mmap.mmap, proc: ChildProcess) -> None:
        self.image, self.proc = image, proc

    @property
    def pid(self) -> int:
        return self.proc.pid

    @classmethod
    def start(cls, nbytes: int, service_args: list[str], keep_fds: list[int],
              disk: str | None = None) -> StandbyGuest:
        """Make the image memfd and fork the guest onto it (``workload --wait-go``)."""
        mfd = os.memfd_create("agents-image")
        try:
            os.ftruncate(mfd, nbytes)
            image = mmap.mmap(mfd, nbytes, flags=_SHARED_POPULATE)
            argv = ["--wait-go", "--resume", f"/dev/fd/{mfd}", *service_args,
                    *(["--disk", disk] if disk else [])]
            proc = fork_call(lambda: workload.cli(argv), keep_fds=[*keep_fds, mfd],
                             new_session=True, stdin=PIPE, stdout=PIPE, stderr=DEVNULL,
                             args=["workload", *argv], name="guest standby")
        finally:
            os.close(mfd)
        return cls(image, proc)

    async def ready(self, timeout: float = READY_TIMEOUT_S) -> None:
        """Wait until the guest has mapped the image: its page tables are built before round
        0, not while pages stream in (measured at 10 Gbit/s with a 1 GiB guest: goodput
        8.1-8.3 Gbit/s while it did, 8.9-9.1 without)."""
        assert self.proc.stdout is not None
        try:
            with trio.fail_after(timeout):
                line = await trio.to_thread.run_sync(self.proc.stdout.readline,
                                                     abandon_on_cancel=True)
        except trio.TooSlowError:
            raise StandbyError(f"standby guest not ready after {timeout:.0f} s") from None
        if line.strip() != b"standby":
            raise StandbyError(f"standby guest failed to start (status {self.proc.poll()})")

    async def go(self, guest_port: str | None = None,
                 timeout: float = GO_TIMEOUT_S) -> dict:
        """Connect its vSwitch port (if any), tell it to go, wait until its service is up;
        its pid and how long that took."""
        t0 = time.monotonic()
        proc = self.proc
        assert proc.stdin is not None and proc.stdout is not None
        if guest_port:
            try:
                set_link(guest_port, True)  # the guest is connected here now
            except OSError as exc:
                raise StandbyError(f"cannot connect the guest: {exc}") from None
        try:
            proc.stdin.write(b"go\n")
            proc.stdin.close()
        except OSError as exc:
            raise StandbyError(f"standby guest is gone: {exc}") from None
        try:
            with trio.fail_after(timeout):
                line = await trio.to_thread.run_sync(proc.stdout.readline,
                                                     abandon_on_cancel=True)
        except trio.TooSlowError:
            raise StandbyError(f"resumed guest not ready after {timeout:.0f} s") from None
        if not line:
            raise StandbyError(f"resumed guest exited (status {proc.wait()})")
        proc.stdout.close()
        return {"pid": proc.pid, "resume_ms": round((time.monotonic() - t0) * 1e3, 2)}

    def kill(self, guest_port: str | None = None) -> None:
        """Stop it (it never ran as the guest) and disconnect its port."""
        self.proc.kill()
        self.proc.wait()
        if guest_port:  # the guest stays at the source: disconnected here
            with contextlib.suppress(OSError):
                set_link(guest_port, False)

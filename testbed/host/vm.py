"""Re-execute a command inside a full Debian kernel with virtme-ng.

The guest sees the host's root filesystem read-only (with throwaway overlays on /etc, /var,
/tmp, ...), so the project's venv and code are used as they are; results come back through
``--rwdir`` directories. Output is streamed live, the exit status is propagated, and a guest
that does not start or hangs ends with a clear error within a bounded time.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

from .doctor import IN_VM_ENV

READY_MARKER = "@@testbed-guest-ready@@"
BOOT_TIMEOUT_S = float(os.environ.get("TESTBED_VM_BOOT_TIMEOUT", "240"))


class VMError(RuntimeError):
    """The guest could not be started or did not finish in time."""


def guest_command(argv: Sequence[str], env: dict[str, str]) -> str:
    """The shell line the guest runs: announce readiness, then exec ``argv`` with ``env``."""
    assigns = " ".join(f"{k}={shlex.quote(v)}" for k, v in sorted(env.items()))
    return f"echo {READY_MARKER}; cd {shlex.quote(os.getcwd())} && exec env {assigns} " \
           f"{shlex.join(list(argv))}"


def guest_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    venv_bin = str(Path(sys.executable).parent)
    env = {
        IN_VM_ENV: "1",
        "PATH": f"{venv_bin}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "HOME": "/tmp",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "TERM": os.environ.get("TERM", "dumb"),
    }
    for key in ("COLUMNS", "TESTBED_MININET_LOG", "CI"):
        if key in os.environ:
            env[key] = os.environ[key]
    return env | (extra or {})


def vng_command(kernel: str, accelerator: str, inner: str, rwdirs: Sequence[Path],
                cpus: int, memory: str, qemu_opts: Sequence[str] = ()) -> list[str]:
    """virtme-ng booting ``kernel`` to run ``inner``; ``qemu_opts`` are extra QEMU arguments
    (one ``--qemu-opt=ARG`` each: the ``=`` form, as vng would take ``-netdev`` for an
    option of its own)."""
    vng = str(Path(sys.executable).parent / "vng")
    cmd = [vng, "--run", kernel, "--cpus", str(cpus), "--memory", memory]
    if accelerator != "kvm":
        cmd.append("--disable-kvm")
    for d in rwdirs:
        cmd += ["--rwdir", str(d)]
    cmd += [f"--qemu-opt={opt}" for opt in qemu_opts]
    return cmd + ["--exec", inner]


def run_in_vm(argv: Sequence[str], kernel: str, accelerator: str = "tcg",
              rwdirs: Sequence[Path] = (), timeout_s: float | None = None,
              cpus: int | None = None, memory: str | None = None,
              extra_env: dict[str, str] | None = None) -> int:
    """Run ``argv`` in the guest; stream its output; return its exit status."""
    cpus = cpus or int(os.environ.get("TESTBED_VM_CPUS", str(os.cpu_count() or 2)))
    memory = memory or os.environ.get("TESTBED_VM_MEMORY", "4G")
    for d in rwdirs:
        d.mkdir(parents=True, exist_ok=True)
    # The command goes in a script file the guest reads from the host's filesystem: vng passes
    # --exec on the kernel command line, which the kernel cuts at 2048 bytes (a long pytest
    # node list made the guest hang silently).
    fd, script = tempfile.mkstemp(prefix="testbed-vm-", suffix=".sh", dir="/tmp")
    with os.fdopen(fd, "w") as f:
        f.write(guest_command(argv, guest_env(extra_env)) + "\n")
    try:
        return _run(kernel, accelerator, f"sh {script}", rwdirs, timeout_s, cpus, memory)
    finally:
        os.unlink(script)


def _run(kernel: str, accelerator: str, inner: str, rwdirs: Sequence[Path],
         timeout_s: float | None, cpus: int, memory: str) -> int:
    cmd = vng_command(kernel, accelerator, inner, [d.resolve() for d in rwdirs], cpus, memory)
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
    print(f"testbed: starting a {kernel.rsplit('/', 1)[-1]} guest ({accelerator}, {cpus} vCPU, "
          f"{memory}); boot takes ~20-60 s under software emulation", file=sys.stderr,
          flush=True)
    t0 = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, env=env, start_new_session=True)
    assert proc.stdout is not None
    ready = threading.Event()
    tail: deque[str] = deque(maxlen=40)

    def pump() -> None:
        assert proc.stdout is not None
        for raw in iter(proc.stdout.readline, b""):
            line = raw.decode(errors="replace")
            if not ready.is_set() and READY_MARKER in line:
                ready.set()
                print(f"testbed: guest up after {time.monotonic() - t0:.1f} s", file=sys.stderr,
                      flush=True)
                continue
            tail.append(line)
            if ready.is_set():
                sys.stdout.write(line)
                sys.stdout.flush()

    reader = threading.Thread(target=pump, daemon=True)
    reader.start()
    try:
        if not _wait_ready(proc, ready, BOOT_TIMEOUT_S):
            _kill(proc)
            raise VMError(
                f"the guest did not start within {BOOT_TIMEOUT_S:.0f} s "
                f"(vng exit {proc.poll()}); last output:\n{''.join(tail) or '(none)'}\n"
                "Check `testbed doctor`; raise TESTBED_VM_BOOT_TIMEOUT on a slow machine.")
        remaining = None if timeout_s is None else max(1.0, timeout_s - (time.monotonic() - t0))
        try:
            rc = proc.wait(timeout=remaining)
        except subprocess.TimeoutExpired:
            _kill(proc)
            raise VMError(f"the guest command did not finish within {timeout_s:.0f} s; "
                          "the VM was stopped") from None
    except BaseException:
        _kill(proc)
        raise
    reader.join(timeout=5)
    return rc


def _wait_ready(proc: subprocess.Popen[bytes], ready: threading.Event, limit: float) -> bool:
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline:
        if ready.wait(0.5):
            return True
        if proc.poll() is not None:
            return ready.is_set()
    return False


def _kill(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()

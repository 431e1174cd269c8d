"""The project's test utilities in one place (as trio keeps its own): agents on loopback or
in namespaces, the guest's counter, processes found by command line."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import trio

from agents.client import service
from agents.destination import Destination, DestinationConfig
from agents.memory.process import process_state
from agents.source import SourceConfig, migrate

PY = [sys.executable, "-m", "agents"]


def counter_of(address, timeout=1.0) -> int | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(timeout)
        s.sendto(service.request(b"t" * 8, 0), tuple(address))
        try:
            data, _ = s.recvfrom(64)
        except TimeoutError:
            return None
        answer = service.parse_reply(data)
        return None if answer is None else answer[0]


def assert_runs_on(info):
    """The guest is not stopped and its counter still moves: it runs on where it was."""
    assert process_state(info["pid"]) not in "tTZ"
    c1 = counter_of(info["service"])
    time.sleep(0.2)
    assert c1 is not None and counter_of(info["service"]) > c1


def migrate_in_process(src, **source):
    """Migrate memory source ``src`` to an in-process destination on loopback (``source``:
    further SourceConfig settings); the result and the destination's outcomes."""
    async def main():
        dest = Destination(DestinationConfig("127.0.0.1", 0, idle_timeout=10))
        async with trio.open_nursery() as n:
            port = await n.start(dest.serve, True)
            res = await migrate(src, SourceConfig("127.0.0.1", port, preflight="off",
                                                  **source), kind="pid")
        return res, dest.outcomes

    return trio.run(main)


def kill(pid):
    with contextlib.suppress(ProcessLookupError, TypeError):
        os.kill(pid, signal.SIGKILL)


@contextlib.contextmanager
def destination(*extra, netns=None):
    prefix = ["ip", "netns", "exec", netns] if netns else []
    proc = subprocess.Popen([*prefix, *PY, "destination", *extra], stdout=subprocess.PIPE,
                            text=True)
    try:
        port = json.loads(proc.stdout.readline())["listening"][1]
        yield proc, port
    finally:
        proc.kill()
        proc.wait()


@contextlib.contextmanager
def workload(*args):
    proc = subprocess.Popen([*PY, "workload", *args], stdout=subprocess.PIPE, text=True)
    try:
        info = json.loads(proc.stdout.readline())
        yield proc, info
    finally:
        proc.kill()
        proc.wait()


def run_source(*args, timeout=50):
    out = subprocess.run([*PY, "source", *args, "--json"], capture_output=True, text=True,
                         timeout=timeout)
    return out.returncode, json.loads(out.stdout)


def processes(prefix: str) -> list[tuple[int, str]]:
    """(pid, command line) of every process whose command line starts with ``prefix``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if cmd.startswith(prefix):
            found.append((int(pid), cmd))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs: gone and zombie both count as not running (in the VM, whose init
    does not reap orphans, an orphan that exited lingers as a zombie)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def run_spec(tmp_path: Path, toml: str, vm: str = "never") -> tuple[dict, Path]:
    """`testbed run` of the spec ``toml`` (exit 0 expected); its document and results dir."""
    spec = tmp_path / "spec.toml"
    spec.write_text(toml)
    out = tmp_path / "out"
    res = subprocess.run([sys.executable, "-m", "testbed", "--vm", vm, "run", str(spec),
                          "--out", str(out)], capture_output=True, text=True, timeout=900,
                         cwd=Path(__file__).parents[1])
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    name = spec.read_text().split('name = "')[1].split('"')[0]
    doc = json.loads((out / f"{name}.json").read_text())
    assert doc["status"] == "completed"
    return doc, out

"""A Soft-RoCE migration path for tests and benchmarks: two namespaces joined by a shaped veth
(``fault_harness.Net``), an rxe path over it (``testbed.host.rxe.RocePath``), and the agents run in
them (``ip netns exec``) with or without ``--rdma``."""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from testbed.host.rxe import Endpoint, RocePath
from tests.integration.fault_harness import Net, sh

PY = [sys.executable, "-m", "agents"]


class RdmaNet(Net):
    """``Net`` (tbf at ``rate_mbit`` on the migration veth, both ends) plus netem delay/loss
    and a Soft-RoCE path over it."""

    def __init__(self, rate_mbit: int = 300) -> None:
        super().__init__(rate_mbit)
        self.rate_mbit = rate_mbit
        self.path = RocePath(Endpoint(self.a, self.src), Endpoint(self.b, self.dst))

    def __enter__(self) -> RdmaNet:
        try:
            self.path.__enter__()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.down()
        self.close()

    def impair(self, delay_ms: float = 0.0, loss_pct: float = 0.0) -> None:
        """netem under the tbf on both ends of the migration veth: ``delay_ms`` each way
        (RTT = 2x), ``loss_pct`` % random loss each way; (0, 0) removes it."""
        for ns, dev in ((self.a, self.va), (self.b, self.vb)):
            sh("ip", "netns", "exec", ns, "tc", "qdisc", "del", "dev", dev, "root", check=False)
            burst = max(256 * 1024, self.rate_mbit * 125_000 // 100)
            if delay_ms or loss_pct:
                limit = max(1000, int(self.rate_mbit * 1e6 / 8 / 1500 * delay_ms / 1e3 * 4))
                sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root",
                   "handle", "1:", "netem", "delay", f"{delay_ms}ms", "loss", f"{loss_pct}%",
                   "limit", str(limit))
                sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "parent", "1:1",
                   "handle", "10:", "tbf", "rate", f"{self.rate_mbit}mbit", "burst",
                   str(burst), "latency", f"{50 + 2 * delay_ms:.0f}ms")
            else:
                sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                   "rate", f"{self.rate_mbit}mbit", "burst", str(burst), "latency", "50ms")

    def rx_bytes(self) -> int:
        """Bytes the destination's migration veth received (TCP and RoCE alike)."""
        out = subprocess.run(["ip", "-n", self.b, "-j", "-s", "link", "show", "dev", self.vb],
                             capture_output=True, text=True).stdout
        return json.loads(out)[0]["stats64"]["rx"]["bytes"] if out else 0


@contextlib.contextmanager
def destination(net: RdmaNet, *extra: str, rdma: bool = True) -> Iterator[tuple[Any, int]]:
    """A destination agent in the destination's namespace (``--rdma`` on its rxe device)."""
    args = ["--listen", f"{net.dst}:0", "--idle-timeout", "15", "--decision-linger", "2"]
    if rdma:
        args += ["--rdma", net.path.destination.rxe]
    proc = subprocess.Popen(["ip", "netns", "exec", net.b, *PY, "destination", *args, *extra],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        if not line:
            raise RuntimeError(f"destination agent did not start (exit {proc.wait()})")
        yield proc, json.loads(line)["listening"][1]
    finally:
        proc.kill()
        proc.wait()


def outcome(proc: Any, timeout: float = 30.0) -> dict | None:
    """The destination's outcome line (after its listening line), if it prints one."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            return None
        obj = json.loads(line)
        if "rejected" not in obj:
            return obj
    return None


def source(net: RdmaNet, pid: int, port: int, *extra: str, rdma: bool = True,
           timeout: float = 240.0) -> tuple[int, dict]:
    """Run the source agent for guest ``pid`` in the source's namespace; (exit, result)."""
    args = ["--pid", str(pid), "--to", f"{net.dst}:{port}", "--bind", net.src, "--json",
            "--idle-timeout", "15", "--commit-timeout", "20", "--resolve-timeout", "5"]
    if rdma:
        args += ["--rdma", net.path.source.rxe]
    out = subprocess.run(["ip", "netns", "exec", net.a, *PY, "source", *args, *extra],
                         capture_output=True, text=True, timeout=timeout)
    try:
        return out.returncode, json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise AssertionError(f"source printed no result (exit {out.returncode}): "
                             f"{out.stderr[-2000:]}") from None


@contextlib.contextmanager
def guest(size: str = "16M", dirty_rate: float = 10.0) -> Iterator[dict]:
    """A built-in workload in the initial namespace (its UDP service on loopback)."""
    p = subprocess.Popen([*PY, "workload", "--size", size, "--dirty-rate", str(dirty_rate)],
                         stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        yield json.loads(p.stdout.readline())
    finally:
        p.kill()
        p.wait()


def rule_table() -> str:
    return subprocess.run(["ip", "rule", "show"], capture_output=True, text=True).stdout


ROOT = Path(__file__).resolve().parents[2]

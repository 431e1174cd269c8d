"""The client probe against real guests: a paused guest, and a service that moves to another.

On loopback without namespaces a move is emulated by a UDP relay in the test that forwards
to guest A, then (after A is stopped) to guest B: another process with another counter.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

from agents.client import probe as clientprobe

pytestmark = pytest.mark.integration
PY = [sys.executable, "-m", "agents"]


@contextlib.contextmanager
def guest():
    """A running workload guest: (process, its first JSON line)."""
    proc = subprocess.Popen([*PY, "workload", "--size", "4M", "--port", "0", "--no-uffd"],
                            stdout=subprocess.PIPE, text=True)
    try:
        line = proc.stdout.readline()
        assert line, f"workload failed to start ({proc.wait()})"
        yield proc, json.loads(line)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGCONT)  # a stopped guest cannot act on SIGTERM
            proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        proc.stdout.close()


class Relay(threading.Thread):
    """Forwards datagrams from a fixed port to ``upstream`` (switchable) and answers back."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        super().__init__(daemon=True)
        self.upstream = upstream
        self.front = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.front.bind(("127.0.0.1", 0))
        self.back = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.back.bind(("127.0.0.1", 0))
        self.address = self.front.getsockname()
        self.done = threading.Event()
        self.client: tuple | None = None

    def run(self) -> None:
        while not self.done.is_set():
            for s in select.select([self.front, self.back], [], [], 0.05)[0]:
                with contextlib.suppress(OSError):
                    data, peer = s.recvfrom(512)
                    if s is self.front:
                        self.client = peer
                        self.back.sendto(data, self.upstream)
                    elif self.client is not None:
                        self.front.sendto(data, self.client)

    def close(self) -> None:
        self.done.set()
        self.join(2)
        self.front.close()
        self.back.close()


def probe_in_thread(target, **kw) -> tuple[threading.Thread, dict]:
    out: dict = {}

    def go():
        out.update(clientprobe.run(target, **kw))

    t = threading.Thread(target=go, daemon=True)
    t.start()
    return t, out


def test_paused_guest_is_an_outage_with_the_counter_carrying_on():
    with guest() as (proc, info):
        target = tuple(info["service"])
        # Requests queued while the guest is stopped are answered after SIGCONT: with a
        # 50 ms timeout those answered too late count as lost, as a client would see them.
        t, res = probe_in_thread(target, interval_s=0.001, duration_s=1.5, timeout_s=0.05)
        time.sleep(0.5)
        os.kill(proc.pid, signal.SIGSTOP)
        time.sleep(0.1)
        os.kill(proc.pid, signal.SIGCONT)
        t.join(timeout=5)
        assert not t.is_alive()
    assert res["locations"] == [info["pid"]]
    assert res["lost"] > 0 and res["late"] > 0
    assert 80 <= res["outage_ms"] <= 1000, res
    assert res["outage_resolved"] is True
    assert 0.3 < res["outage_start_s"] < 0.8
    assert res["gaps"] and res["gaps"][0][0] == res["outage_start_s"]
    assert res["switch_at_s"] is None
    assert res["counter_continuity_ok"] is None  # no move: a single location
    # ... but across the pause the counter carried on from where it stood, no reset:
    assert res["outage_counter_after"] >= res["outage_counter_before"] > 0
    assert res["answered"] > 1000
    assert 0.9 < res["achieved_interval_ms"] < 1.5


def test_relay_switch_to_another_guest_is_a_move():
    with guest() as (proc_a, a), guest() as (proc_b, b):
        relay = Relay(tuple(a["service"]))
        relay.start()
        try:
            t, res = probe_in_thread(relay.address, interval_s=0.001, duration_s=1.2)
            time.sleep(0.4)
            os.kill(proc_a.pid, signal.SIGSTOP)  # A stays stopped, as a migrated source
            time.sleep(0.05)
            relay.upstream = tuple(b["service"])
            t.join(timeout=5)
            assert not t.is_alive()
        finally:
            relay.close()
    assert res["locations"] == [a["pid"], b["pid"]]
    assert 0.4 < res["switch_at_s"] < 1.0
    assert res["lost"] > 0
    assert 30 <= res["outage_ms"] <= 1000, res
    assert res["outage_start_s"] <= res["switch_at_s"] <= res["outage_end_s"] + 1e-6
    assert res["counter_before"] is not None and res["counter_after"] is not None
    assert res["counter_continuity_ok"] in (True, False)  # two unrelated guests: either
    assert res["answers_from_old_after_switch"] == 0


def test_cli_prints_probing_then_the_summary_on_sigterm():
    with guest() as (_, info):
        host, port = info["service"]
        cli = subprocess.Popen([*PY[:2], "agents.client.probe", "--target", f"{host}:{port}",
                                "--interval-ms", "2", "--timeout-ms", "200"],
                               stdout=subprocess.PIPE, text=True)
        try:
            assert json.loads(cli.stdout.readline()) == {"probing": [host, port]}
            time.sleep(0.5)
            cli.send_signal(signal.SIGTERM)
            out, _ = cli.communicate(timeout=5)
            assert cli.returncode == 0
        finally:
            cli.kill()
            cli.wait()
    res = json.loads(out)
    assert res["target"] == [host, port] and res["interval_ms"] == 2.0
    assert res["requests"] > 100 and res["lost"] == 0 and res["locations"] == [info["pid"]]
    assert res["rtt_p50_ms"] is not None and res["outage_ms"] is None

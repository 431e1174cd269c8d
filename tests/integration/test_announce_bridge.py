"""Self-announce on a real Linux bridge: the guest's MAC is learnt on its port, and moves to
the other port when the guest announces from there (the MAC move after a live migration).

Three namespaces: ``tbt-br-*`` holds the bridge with ports ``pa``/``pb``, whose peers (``eth0``)
sit in the guest namespaces ``tbt-ga-*``/``tbt-gb-*``. IPv6 is off everywhere so that nothing
but the announcement teaches the bridge the guest's MAC."""

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass

import pytest

from agents.guest.announce import AnnounceSchedule

pytestmark = pytest.mark.integration

GUEST_MAC = "52:54:00:a1:b2:c3"
GUEST_IP = "10.9.0.7"

_ANNOUNCE = """
import json, sys, threading, time
from agents.guest.announce import AnnounceSchedule, announce, announce_in_background
a = json.loads(sys.argv[1])
sched = AnnounceSchedule.parse(a["schedule"])
kinds = tuple(a["kinds"])
err = None
try:
    if a["stop_after"] is None:
        sent = announce(a["ifname"], a["mac"], a["ip"], sched, kinds)
    else:
        stop = threading.Event()
        t = announce_in_background(a["ifname"], a["mac"], a["ip"], sched, kinds, stop=stop)
        time.sleep(a["stop_after"])
        stop.set()
        t.join(10)
        sent, err = t.sent, t.error and str(t.error)
except OSError as e:
    sent, err = [], str(e)
print(json.dumps({"sent": sent, "error": err}))
"""


def _sh(*args: str) -> str:
    res = subprocess.run(list(args), capture_output=True, text=True, timeout=30)
    assert res.returncode == 0, f"{' '.join(args)}: {res.stderr.strip()}"
    return res.stdout


@dataclass
class Fabric:
    br: str
    guests: dict[str, str]  # port in the bridge namespace -> guest namespace

    def fdb(self, mac: str) -> list[str]:
        """The bridge ports on which ``mac`` is learnt (not the permanent entries)."""
        entries = json.loads(_sh("bridge", "-n", self.br, "-j", "fdb", "show", "br", "br0"))
        return [e["ifname"] for e in entries
                if e["mac"].lower() == mac.lower() and e.get("state") != "permanent"
                and "self" not in e.get("flags", [])]

    def wait_forwarding(self, port: str, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            links = json.loads(_sh("bridge", "-n", self.br, "-j", "link", "show", "dev", port))
            if links and links[0].get("state") == "forwarding":
                return
            assert time.monotonic() < deadline, f"port {port} not forwarding: {links}"
            time.sleep(0.05)

    def guest(self, port: str, *args: str) -> str:
        return _sh("ip", "-n", self.guests[port], *args)

    def announce(self, port: str, mac: str = GUEST_MAC, ip: str | None = GUEST_IP,
                 schedule: str = "", kinds: tuple[str, ...] = ("garp", "rarp"),
                 stop_after: float | None = None) -> dict:
        """Run ``announce`` on ``eth0`` inside the guest namespace behind ``port``."""
        arg = json.dumps({"ifname": "eth0", "mac": mac, "ip": ip, "schedule": schedule,
                          "kinds": list(kinds), "stop_after": stop_after})
        out = _sh("ip", "netns", "exec", self.guests[port], sys.executable, "-c", _ANNOUNCE, arg)
        return json.loads(out)


@pytest.fixture
def fabric():
    tag = os.urandom(4).hex()
    br, ga, gb = f"tbt-br-{tag}", f"tbt-ga-{tag}", f"tbt-gb-{tag}"
    made: list[str] = []
    try:
        for ns in (br, ga, gb):
            _sh("ip", "netns", "add", ns)
            made.append(ns)
            _sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1",
                "net.ipv6.conf.default.disable_ipv6=1")
        _sh("ip", "-n", br, "link", "add", "br0", "type", "bridge")
        _sh("ip", "-n", br, "link", "set", "br0", "up")
        for port, ns in (("pa", ga), ("pb", gb)):
            _sh("ip", "-n", br, "link", "add", port, "type", "veth", "peer", "name", "eth0",
                "netns", ns)
            _sh("ip", "netns", "exec", ns, "sysctl", "-qw", "net.ipv6.conf.eth0.disable_ipv6=1")
            _sh("ip", "netns", "exec", br, "sysctl", "-qw",
                f"net.ipv6.conf.{port}.disable_ipv6=1")
            _sh("ip", "-n", br, "link", "set", port, "master", "br0")
            _sh("ip", "-n", br, "link", "set", port, "up")
        yield Fabric(br, {"pa": ga, "pb": gb})
    finally:
        for ns in reversed(made):
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _check_spacing(sent: list[float], schedule: AnnounceSchedule) -> None:
    """Each round no earlier than the schedule allows, and not grossly late (noisy hosts)."""
    delays = schedule.delays_s()
    assert len(sent) == schedule.rounds
    assert sent == sorted(sent)
    for k in range(1, len(sent)):
        due = sum(delays[1:k + 1])
        elapsed = sent[k] - sent[0]
        assert elapsed >= due - 0.005, f"round {k} early: {elapsed:.3f}s < {due:.3f}s"
        assert elapsed <= due + 0.5, f"round {k} late: {elapsed:.3f}s > {due:.3f}s"
        gap = sent[k] - sent[k - 1]
        assert gap >= delays[k] * 0.5 - 0.005, f"round {k} gap {gap:.3f}s vs {delays[k]}s"


def test_announce_teaches_the_bridge_and_moves_the_mac(fabric):
    fabric.guest("pa", "link", "set", "eth0", "address", GUEST_MAC)
    fabric.guest("pa", "link", "set", "eth0", "up")
    fabric.wait_forwarding("pa")
    time.sleep(0.2)
    assert fabric.fdb(GUEST_MAC) == [], "the bridge learnt the MAC before any announcement"

    qemu = AnnounceSchedule()
    res = fabric.announce("pa")
    assert res["error"] is None
    _check_spacing(res["sent"], qemu)
    assert fabric.fdb(GUEST_MAC) == ["pa"]

    # the migration: the guest stops at the source and resumes behind the other port
    fabric.guest("pa", "link", "set", "eth0", "down")
    fabric.guest("pb", "link", "set", "eth0", "address", GUEST_MAC)
    fabric.guest("pb", "link", "set", "eth0", "up")
    fabric.wait_forwarding("pb")
    fast = AnnounceSchedule.parse("rounds=3,initial=20,step=30,max=40")
    res = fabric.announce("pb", schedule="rounds=3,initial=20,step=30,max=40")
    assert res["error"] is None
    _check_spacing(res["sent"], fast)
    assert fabric.fdb(GUEST_MAC) == ["pb"]


def test_rarp_alone_moves_the_mac_while_the_old_port_stays_up(fabric):
    """No IP needed (QEMU's RARP); a learnt entry is re-pointed, not just re-created."""
    fabric.guest("pa", "link", "set", "eth0", "address", GUEST_MAC)
    fabric.guest("pb", "link", "set", "eth0", "address", "52:54:00:00:00:02")
    for port in ("pa", "pb"):
        fabric.guest(port, "link", "set", "eth0", "up")
        fabric.wait_forwarding(port)
    res = fabric.announce("pa", ip=None, kinds=("garp", "rarp"), schedule="rounds=1")
    assert res["error"] is None and len(res["sent"]) == 1
    assert fabric.fdb(GUEST_MAC) == ["pa"]

    fabric.guest("pb", "link", "set", "eth0", "address", GUEST_MAC)
    res = fabric.announce("pb", ip=None, kinds=("rarp",), schedule="rounds=2,initial=10")
    assert res["error"] is None and len(res["sent"]) == 2
    assert fabric.fdb(GUEST_MAC) == ["pb"]


def test_stop_ends_a_background_announce_early(fabric):
    fabric.guest("pa", "link", "set", "eth0", "address", GUEST_MAC)
    fabric.guest("pa", "link", "set", "eth0", "up")
    fabric.wait_forwarding("pa")
    # 20 rounds 1 s apart; stopped after ~0.3 s, in the first wait
    res = fabric.announce("pa", schedule="rounds=20,initial=1000,max=1000,step=0",
                          stop_after=0.3)
    assert res["error"] is None
    assert len(res["sent"]) == 1
    assert fabric.fdb(GUEST_MAC) == ["pa"]


def test_a_down_interface_is_an_error_naming_it(fabric):
    res = fabric.announce("pa", schedule="rounds=1")  # eth0 was never brought up
    assert res["sent"] == []
    assert "eth0" in res["error"] and "down" in res["error"]
    res = fabric.announce("pa", schedule="rounds=1", stop_after=0.1)  # same, in the thread
    assert res["sent"] == []
    assert "eth0" in res["error"] and "down" in res["error"]

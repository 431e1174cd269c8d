"""Self-announce: frame layouts (decoded by scapy), QEMU's schedule, parse errors."""

import struct
import subprocess
import sys
import threading

import pytest
from scapy.layers.l2 import ARP, Ether

from agents.guest.announce import (
    AnnounceSchedule,
    announce,
    announce_in_background,
    garp_frame,
    rarp_frame,
)

MAC = "52:54:00:12:34:56"
MAC_RAW = bytes.fromhex("525400123456")


def test_garp_frame_layout():
    frame = garp_frame(MAC, "10.0.0.7")
    assert len(frame) == 60
    eth = Ether(frame)
    assert eth.dst == "ff:ff:ff:ff:ff:ff"
    assert eth.src == MAC
    assert eth.type == 0x0806
    arp = eth[ARP]
    assert (arp.hwtype, arp.ptype, arp.hwlen, arp.plen) == (1, 0x0800, 6, 4)
    assert arp.op == 1
    assert arp.hwsrc == MAC
    assert arp.psrc == arp.pdst == "10.0.0.7"
    assert arp.hwdst == "00:00:00:00:00:00"
    assert frame[42:] == bytes(18)


def test_rarp_frame_layout_is_qemus():
    frame = rarp_frame(MAC.upper())
    assert len(frame) == 60
    assert frame[0:6] == b"\xff" * 6
    assert frame[6:12] == MAC_RAW
    assert struct.unpack("!H", frame[12:14])[0] == 0x8035
    htype, ptype, hlen, plen, op = struct.unpack("!HHBBH", frame[14:22])
    assert (htype, ptype, hlen, plen, op) == (1, 0x0800, 6, 4, 3)
    assert frame[22:28] == MAC_RAW  # sender MAC
    assert frame[28:32] == bytes(4)  # sender IP
    assert frame[32:38] == MAC_RAW  # target MAC
    assert frame[38:42] == bytes(4)  # target IP
    assert frame[42:] == bytes(18)
    assert Ether(frame).src == MAC


@pytest.mark.parametrize("mac", ["52:54:00:12:34", "52:54:00:12:34:56:78", "zz:54:00:12:34:56",
                                 "525400123456", "52:54:00:12:34:+5", "", "01:00:5e:00:00:01",
                                 "ff:ff:ff:ff:ff:ff", "00:00:00:00:00:00"])
def test_bad_macs_are_refused(mac):
    with pytest.raises(ValueError, match="MAC"):
        rarp_frame(mac)


def test_dashes_in_a_mac_are_accepted():
    assert rarp_frame("52-54-00-12-34-56") == rarp_frame(MAC)


@pytest.mark.parametrize("ip", ["10.0.0", "10.0.0.256", "fe80::1", "host"])
def test_bad_ips_are_refused(ip):
    with pytest.raises(ValueError, match="IPv4"):
        garp_frame(MAC, ip)


def test_qemu_default_schedule():
    assert AnnounceSchedule().delays_s() == pytest.approx([0.0, 0.05, 0.15, 0.25, 0.35])
    assert AnnounceSchedule.parse("rounds=5,initial=50,max=550,step=100") == AnnounceSchedule()


def test_max_caps_the_delays():
    sched = AnnounceSchedule(rounds=7, initial_ms=50, max_ms=200, step_ms=100)
    assert sched.delays_s() == pytest.approx([0.0, 0.05, 0.15, 0.2, 0.2, 0.2, 0.2])
    # an initial delay above max is capped too
    assert AnnounceSchedule(rounds=3, initial_ms=900).delays_s() == pytest.approx(
        [0.0, 0.55, 0.55])


def test_one_round_has_no_delay():
    assert AnnounceSchedule(rounds=1).delays_s() == [0.0]


def test_parse_subsets_and_spaces():
    assert AnnounceSchedule.parse("") == AnnounceSchedule()
    assert AnnounceSchedule.parse(" rounds = 3 , step=20 ") == AnnounceSchedule(rounds=3,
                                                                                step_ms=20)
    assert AnnounceSchedule.parse("max=0.5") == AnnounceSchedule(max_ms=0.5)
    assert AnnounceSchedule.parse("initial_ms=10") == AnnounceSchedule(initial_ms=10)


@pytest.mark.parametrize("text,match", [
    ("rounds=0", "rounds='0'"),
    ("rounds=-1", "rounds"),
    ("rounds=2.5", "rounds='2.5' is not an integer"),
    ("initial=-5", "initial='-5'"),
    ("max=abc", "max='abc' is not a number"),
    ("step=nan", "step='nan'"),
    ("max=inf", "max='inf'"),
    ("delay=5", "unknown key 'delay'"),
    ("rounds", "'rounds' is not key=value"),
    ("rounds=5,,step=1", "'' is not key=value"),
    ("=5", "'=5' is not key=value"),
    ("step=1,step=2", "'step' given twice"),
])
def test_parse_errors_name_the_bad_item(text, match):
    with pytest.raises(ValueError, match=match):
        AnnounceSchedule.parse(text)


@pytest.mark.parametrize("kw", [{"rounds": 0}, {"rounds": 1.5}, {"rounds": True},
                                {"initial_ms": -1}, {"max_ms": float("nan")}, {"step_ms": "1"}])
def test_direct_construction_is_validated(kw):
    with pytest.raises(ValueError, match="announce schedule"):
        AnnounceSchedule(**kw)


def test_argument_errors_come_before_any_socket():
    with pytest.raises(ValueError, match="unknown announce kind"):
        announce("lo", MAC, None, AnnounceSchedule(), kinds=("ndp",))
    with pytest.raises(ValueError, match="nothing to announce"):
        announce("lo", MAC, None, AnnounceSchedule(), kinds=("garp",))
    with pytest.raises(ValueError, match="MAC"):
        announce_in_background("lo", "nope", "10.0.0.1", AnnounceSchedule())


def test_a_missing_interface_is_named():
    with pytest.raises(OSError, match="tbt-nosuch0") as exc:
        announce("tbt-nosuch0", MAC, "10.0.0.1", AnnounceSchedule(rounds=1))
    assert exc.value.errno == 19  # ENODEV
    thread = announce_in_background("tbt-nosuch0", MAC, None, AnnounceSchedule(rounds=1),
                                    stop=threading.Event())
    thread.join(5)
    assert not thread.is_alive() and thread.daemon
    assert isinstance(thread.error, OSError) and "tbt-nosuch0" in str(thread.error)
    assert thread.sent == []


def test_import_is_light():
    code = ("import sys, agents.guest.announce; "
            "print(sorted(m for m in sys.modules if m.split('.')[0] in "
            "{'scapy', 'trio', 'pyroute2', 'xxhash', 'zstandard', 'pydantic'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip() == "[]"

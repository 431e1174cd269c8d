"""Self-announce after a live migration: tell the switches where the guest's MAC lives now.

Like QEMU's announce (``announce-initial``/``-max``/``-rounds``/``-step``): round 0 goes at
once, the delay before round k >= 1 is ``min(initial + (k-1)*step, max)``. Each round sends a
gratuitous ARP (when the guest has an IPv4 address) and QEMU's RARP frame, from the guest's
MAC, on an AF_PACKET socket bound to the interface, in the calling thread's network
namespace. Only the standard library (and agents.guest.identity, which needs no more) is imported:
this runs in freshly forked processes.
"""

from __future__ import annotations

import errno
import math
import os
import socket
import struct
import threading
import time
from dataclasses import dataclass

from agents.guest.identity import hwaddr, ipv4addr, link_is_up

BROADCAST = b"\xff" * 6
ETH_P_ARP = 0x0806
ETH_P_RARP = 0x8035
ARP_REQUEST = 1
RARP_REQUEST_REVERSE = 3
MIN_FRAME = 60  # Ethernet minimum without the FCS
KINDS = ("garp", "rarp")

_ETH = struct.Struct("!6s6sH")
_ARP = struct.Struct("!HHBBH6s4s6s4s")  # htype ptype hlen plen op sha spa tha tpa
_HEX = set("0123456789abcdefABCDEF")
_KEYS = {"rounds": "rounds", "initial": "initial_ms", "max": "max_ms", "step": "step_ms"}


@dataclass(frozen=True)
class AnnounceSchedule:
    """QEMU's announce timing (milliseconds): its defaults are 5 rounds, 50/550/100 ms."""

    rounds: int = 5
    initial_ms: float = 50
    max_ms: float = 550
    step_ms: float = 100

    def __post_init__(self) -> None:
        if isinstance(self.rounds, bool) or not isinstance(self.rounds, int) or self.rounds < 1:
            raise ValueError(f"announce schedule: rounds must be an integer >= 1, "
                             f"not {self.rounds!r}")
        for name in ("initial_ms", "max_ms", "step_ms"):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, int | float)
                    or not math.isfinite(value) or value < 0):
                raise ValueError(f"announce schedule: {name} must be a finite number >= 0, "
                                 f"not {value!r}")

    def delays_s(self) -> list[float]:
        """The sleep (seconds) before each round: 0.0 first, then min(initial+(k-1)*step, max)."""
        return [0.0] + [min(self.initial_ms + (k - 1) * self.step_ms, self.max_ms) / 1000.0
                        for k in range(1, self.rounds)]

    @classmethod
    def parse(cls, text: str) -> AnnounceSchedule:
        """Parse ``"rounds=5,initial=50,max=550,step=100"`` (any subset; times in ms)."""
        values: dict[str, int | float] = {}
        keys = ", ".join(_KEYS)
        for item in (text.split(",") if text.strip() else []):
            key, sep, raw = (part.strip() for part in item.partition("="))
            if not sep or not key:
                raise ValueError(f"announce schedule: {item.strip()!r} is not key=value "
                                 f"(keys: {keys})")
            field = _KEYS.get(key) or (key if key in _KEYS.values() else None)
            if field is None:
                raise ValueError(f"announce schedule: unknown key {key!r} (keys: {keys})")
            if field in values:
                raise ValueError(f"announce schedule: {key!r} given twice")
            try:
                value: int | float = int(raw) if field == "rounds" else float(raw)
            except ValueError:
                kind = "an integer" if field == "rounds" else "a number of milliseconds"
                raise ValueError(f"announce schedule: {key}={raw!r} is not {kind}") from None
            if field == "rounds" and value < 1:
                raise ValueError(f"announce schedule: rounds={raw!r} must be >= 1")
            if field != "rounds" and not (math.isfinite(value) and value >= 0):
                raise ValueError(f"announce schedule: {key}={raw!r} must be a finite time >= 0")
            values[field] = value
        return cls(**values)  # type: ignore[arg-type]


def _mac(mac: str) -> bytes:
    parts = mac.replace("-", ":").split(":") if isinstance(mac, str) else []
    ok = len(parts) == 6 and all(0 < len(p) <= 2 and set(p) <= _HEX for p in parts)
    raw = bytes(int(p, 16) for p in parts) if ok else b""
    if not ok:
        raise ValueError(f"bad MAC address {mac!r} (expected aa:bb:cc:dd:ee:ff)")
    if raw[0] & 1 or raw == bytes(6):
        raise ValueError(f"MAC address {mac!r} is not a unicast address; switches ignore it")
    return raw


def _ipv4(ip: str) -> bytes:
    try:
        return socket.inet_pton(socket.AF_INET, ip)
    except (OSError, TypeError):
        raise ValueError(f"bad IPv4 address {ip!r}") from None


def _pad(frame: bytes) -> bytes:
    return frame.ljust(MIN_FRAME, b"\0")


def garp_frame(mac: str, ip: str) -> bytes:
    """Gratuitous ARP: a broadcast ARP request for ``ip`` from ``ip`` at ``mac`` (60 bytes)."""
    sha, addr = _mac(mac), _ipv4(ip)
    arp = _ARP.pack(1, 0x0800, 6, 4, ARP_REQUEST, sha, addr, bytes(6), addr)
    return _pad(_ETH.pack(BROADCAST, sha, ETH_P_ARP) + arp)


def rarp_frame(mac: str) -> bytes:
    """QEMU's self-announce frame: broadcast RARP request-reverse for ``mac`` (60 bytes)."""
    sha = _mac(mac)
    arp = _ARP.pack(1, 0x0800, 6, 4, RARP_REQUEST_REVERSE, sha, bytes(4), sha, bytes(4))
    return _pad(_ETH.pack(BROADCAST, sha, ETH_P_RARP) + arp)


def _frames(mac: str, ip: str | None, kinds: tuple[str, ...]) -> list[bytes]:
    unknown = [k for k in kinds if k not in KINDS]
    if unknown:
        raise ValueError(f"unknown announce kind(s) {unknown} (known: {', '.join(KINDS)})")
    frames = []
    for kind in dict.fromkeys(kinds):
        if kind == "garp" and ip is not None:
            frames.append(garp_frame(mac, ip))
        elif kind == "rarp":
            frames.append(rarp_frame(mac))
    if not frames:
        _mac(mac)
        raise ValueError(f"nothing to announce for {mac}: kinds {kinds} and ip {ip!r} "
                         "(garp needs an IPv4 address)")
    return frames


def _oserror(err: OSError, ifname: str, what: str) -> OSError:
    code = err.errno or errno.EIO
    return OSError(code, f"announce on {ifname!r}: {what}: {os.strerror(code)}")


def _open(ifname: str) -> socket.socket:
    """An AF_PACKET raw socket bound to an interface that exists and is up."""
    try:
        socket.if_nametoindex(ifname)
    except OSError:
        raise OSError(errno.ENODEV, f"announce on {ifname!r}: no such network interface "
                                    "in this network namespace") from None
    try:
        sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except OSError as e:
        raise _oserror(e, ifname, "cannot open a raw packet socket") from e
    try:
        if not link_is_up(ifname):
            raise OSError(errno.ENETDOWN, f"announce on {ifname!r}: interface is down")
        sock.bind((ifname, 0))
    except OSError as e:
        sock.close()
        if e.errno == errno.ENETDOWN:
            raise
        raise _oserror(e, ifname, "cannot bind") from e
    return sock


def _run(ifname: str, frames: list[bytes], schedule: AnnounceSchedule,
         stop: threading.Event | None, sent: list[float]) -> list[float]:
    with _open(ifname) as sock:
        due = time.monotonic()
        for delay in schedule.delays_s():
            due += delay  # deadlines, so a late round does not push the later ones back
            wait = due - time.monotonic()
            if stop is not None:
                if stop.wait(max(wait, 0.0)):
                    break
            elif wait > 0:
                time.sleep(wait)
            sent.append(time.monotonic())
            for frame in frames:
                try:
                    sock.send(frame)
                except OSError as e:
                    raise _oserror(e, ifname, f"sending round {len(sent) - 1}") from e
    return sent


def announce(ifname: str, mac: str, ip: str | None, schedule: AnnounceSchedule,
             kinds: tuple[str, ...] = KINDS, stop: threading.Event | None = None) -> list[float]:
    """Send each kind's frame once per round on ``ifname``; return each round's monotonic time.

    ``garp`` is skipped when ``ip`` is None; setting ``stop`` ends it before the next round.
    Bad arguments raise ValueError; a missing or down interface (or a failed send) raises
    OSError naming the interface."""
    return _run(ifname, _frames(mac, ip, kinds), schedule, stop, [])


class AnnounceThread(threading.Thread):
    """A background announce: ``sent`` fills as rounds go, ``error`` holds what stopped it."""

    def __init__(self, ifname: str, frames: list[bytes], schedule: AnnounceSchedule,
                 stop: threading.Event | None) -> None:
        super().__init__(name=f"announce-{ifname}", daemon=True)
        self.sent: list[float] = []
        self.error: BaseException | None = None
        self._job = (ifname, frames, schedule, stop)

    def run(self) -> None:
        try:
            _run(*self._job, self.sent)
        except Exception as e:
            self.error = e


def announce_in_background(ifname: str, mac: str, ip: str | None, schedule: AnnounceSchedule,
                           kinds: tuple[str, ...] = KINDS,
                           stop: threading.Event | None = None) -> AnnounceThread:
    """Start :func:`announce` in a daemon thread (same namespace as the caller's thread).

    Bad arguments raise ValueError here; interface errors end up in ``thread.error``."""
    thread = AnnounceThread(ifname, _frames(mac, ip, kinds), schedule, stop)
    thread.start()
    return thread


def announce_from(dev: str, announce: str | None) -> object | None:
    """Announce the guest from its interface ``dev`` in the background (``announce``: an
    ``AnnounceSchedule`` spec, e.g. "rounds=5,initial=50"; None: no announcement)."""
    if announce is None:
        return None
    return announce_in_background(dev, hwaddr(dev), ipv4addr(dev),
                                  AnnounceSchedule.parse(announce))

"""The guest's network identity on a hypervisor, and the hooks that move it.

A guest with an identity lives in its own network namespace with its own interface (MAC and
IP) on a port of the hypervisor's virtual switch. Where it is prepared but not running (the
migration's destination) that port is down (disconnected); when the guest resumes there, the
port comes up and the guest is announced (gratuitous ARP and RARP, ``agents.guest.announce``) so
switches and VTEPs learn its new location; the source's port goes down once the original has
ended. Anything else the network must change (a /32 host route
moved from one leaf to another, say) is a hook command given by whoever built the network.
"""

from __future__ import annotations

import fcntl
import socket
import struct
import subprocess
import time

SIOCGIFFLAGS, SIOCSIFFLAGS = 0x8913, 0x8914
SIOCGIFADDR, SIOCGIFHWADDR = 0x8915, 0x8927
IFF_UP = 0x1


def _ifreq(dev: str, payload: bytes = b"") -> bytes:
    name = dev.encode()
    if not 0 < len(name) < 16:
        raise OSError(f"bad interface name {dev!r}")
    return struct.pack("16s", name) + payload.ljust(24, b"\0")


def _flags(s: socket.socket, dev: str) -> int:
    return struct.unpack_from("H", fcntl.ioctl(s, SIOCGIFFLAGS, _ifreq(dev)), 16)[0]


def link_is_up(dev: str) -> bool:
    """Whether ``dev`` (in this process's namespace) is administratively up."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        return bool(_flags(s, dev) & IFF_UP)


def set_link(dev: str, up: bool) -> None:
    """Bring ``dev`` (in this process's namespace) up or down, like ``ip link set``."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            flags = _flags(s, dev)
            flags = flags | IFF_UP if up else flags & ~IFF_UP
            fcntl.ioctl(s, SIOCSIFFLAGS, _ifreq(dev, struct.pack("H", flags)))
        except OSError as exc:
            raise OSError(exc.errno, f"interface {dev}: {exc.strerror}") from None


def hwaddr(dev: str) -> str:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        raw = fcntl.ioctl(s, SIOCGIFHWADDR, _ifreq(dev))
    return ":".join(f"{b:02x}" for b in raw[18:24])


def ipv4addr(dev: str) -> str | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            raw = fcntl.ioctl(s, SIOCGIFADDR, _ifreq(dev))
        except OSError:
            return None
    return socket.inet_ntoa(raw[20:24])


def run_hook(cmd: str | None, timeout: float = 30.0) -> dict | None:
    """Run a hook; what it did, how long it took, whether it failed.

    ``cmd`` is a shell command (``sh -c``), or ``unix:PATH``: a management-plane callback over
    the Unix stream socket at PATH (one line ``resume`` sent, one line back: ``ok`` or
    ``error <why>``), for a network that prepared its change beforehand and only applies it.
    """
    if not cmd:
        return None
    t0 = time.monotonic()
    if cmd.startswith("unix:"):
        rc, err = _notify(cmd[len("unix:"):], timeout)
    else:
        try:
            proc = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True,
                                  timeout=timeout)
            rc, err = proc.returncode, proc.stderr
        except subprocess.TimeoutExpired:
            rc, err = -1, f"timed out after {timeout} s"
    return {"rc": rc, "ms": round((time.monotonic() - t0) * 1e3, 2), "stderr": err[-500:]}


def _notify(path: str, timeout: float) -> tuple[int, str]:
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
            s.settimeout(timeout)
            s.connect(path)
            s.sendall(b"resume\n")
            answer = s.makefile("r").readline().strip()
    except OSError as exc:
        return -1, f"{path}: {exc}"
    return (0, "") if answer == "ok" else (1, answer or "no answer")

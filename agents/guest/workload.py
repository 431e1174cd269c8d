"""The built-in guest: an arena of realistic pages, dirtied at a target rate, with a counter.

Everything that defines the guest's state lives in its arena (one shared memfd mapping):
page 0 holds a header with the counter and the dirtying parameters, so a copy of the arena
started elsewhere (``--resume IMAGE``) carries on from exactly that memory. A tiny UDP
service answers ``C`` with the counter (clients see the migration gap) and ``I`` with the
arena description. The arena is registered with userfaultfd WP_ASYNC when the kernel allows,
so a source agent can track dirty pages with PAGEMAP_SCAN.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import fcntl
import json
import mmap
import os
import random
import signal
import socket
import struct
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from agents.client import service
from agents.memory.dirty import register_uffd_wp_async

PAGE = mmap.PAGESIZE
MAGIC = b"AGWL0001"
TICK_S = 0.01  # the dirtier's period: each tick bumps the counter and writes its share
HDR = struct.Struct("<8sQQ")  # magic, counter, config length
COUNTER_OFF = 8
CONFIG_OFF = HDR.size
INFO_DIR = Path("/tmp/agents-workload")
_WORDS_TEXT = (
    "the of and to in is was for on that with as by at from host page memory migrate network "
    "switch round copy dirty vmotion kernel socket buffer latency bandwidth cluster storage "
    "replica guest workload counter frame batch stream digest"
)
WORDS = tuple(_WORDS_TEXT.split())


@dataclass
class Config:
    size_bytes: int
    dirty_rate_mbps: float = 20.0
    hot_fraction: float = 0.1
    hot_share: float = 0.9
    mix: tuple[float, float, float, float] = (0.25, 0.25, 0.25, 0.25)  # zero text comp random
    seed: int = 1
    disk_rate_mbps: float = 0.0  # blocks written to the guest's disk file (if it has one)


def start_ticks(pid: int | str = "self") -> int:
    """When the process started (clock ticks since boot): with the PID, names one process
    for good, even a forked guest whose command line is its parent's."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return int(stat.rsplit(")", 1)[1].split()[19])


def parse_size(text: str) -> int:
    """'64M', '1G', '4096K' or plain bytes."""
    t = text.strip().upper().removesuffix("IB").removesuffix("B")
    mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(t[-1:], 1)
    return int(float(t[:-1] if mult > 1 else t) * mult)


def parse_mix(text: str) -> tuple[float, float, float, float]:
    """'zero=25,text=25,comp=25,random=25' (any scale) -> fractions."""
    parts = dict(kv.split("=") for kv in text.split(","))
    vals = [float(parts.get(k, 0)) for k in ("zero", "text", "comp", "random")]
    unknown = set(parts) - {"zero", "text", "comp", "random"}
    if unknown or sum(vals) <= 0:
        raise ValueError(f"bad mix {text!r}")
    s = sum(vals)
    return tuple(v / s for v in vals)  # type: ignore[return-value]


def parse_fraction(text: str) -> float:
    """A share in (0, 1], e.g. '0.1'."""
    try:
        v = float(text)
    except ValueError:
        v = -1.0
    if not 0.0 < v <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r} is not a fraction in (0, 1]")
    return v


def fill_arena(arena: mmap.mmap, cfg: Config) -> None:
    """Fill pages 1.. with the configured mix of zero, text, compressible and random pages."""
    rng = random.Random(cfg.seed)
    npages = len(arena) // PAGE
    text = " ".join(rng.choices(WORDS, k=16_384)).encode()  # ~110 KB to cut pages from
    records = b"".join(struct.pack("<IHHQ", i, i % 7, 0, i * 3) for i in range(8192))
    kinds = rng.choices(range(4), weights=cfg.mix, k=npages)
    rand_pages = [i for i in range(1, npages) if kinds[i] == 3]
    rand = os.urandom(len(rand_pages) * PAGE)
    for j, p in enumerate(rand_pages):
        arena[p * PAGE : (p + 1) * PAGE] = rand[j * PAGE : (j + 1) * PAGE]
    for p in range(1, npages):
        k = kinds[p]
        if k == 1:
            o = rng.randrange(0, len(text) - PAGE)
            arena[p * PAGE : (p + 1) * PAGE] = text[o : o + PAGE]
        elif k == 2:
            o = rng.randrange(0, len(records) - PAGE, 16)
            arena[p * PAGE : (p + 1) * PAGE] = records[o : o + PAGE]


class Guest:
    """A running guest over an arena (fresh or resumed)."""

    def __init__(self, arena: Arena, cfg: Config, sock: socket.socket,
                 use_uffd: bool = True, disk: str | None = None) -> None:
        self.arena_fd, self.arena = arena.fd, arena.map
        self.cfg, self.sock = cfg, sock
        self.disk_fd = os.open(disk, os.O_RDWR) if disk else -1
        self.disk_blocks = os.fstat(self.disk_fd).st_size // PAGE if disk else 0
        self.addr = ctypes.addressof(ctypes.c_char.from_buffer(self.arena))
        self.uffd = -1
        if use_uffd:
            try:
                self.uffd = register_uffd_wp_async(self.addr, len(self.arena))
            except OSError:
                self.uffd = -1
        self.stop = threading.Event()
        self.info_path = INFO_DIR / f"{os.getpid()}.json"

    @property
    def counter(self) -> int:
        return struct.unpack_from("<Q", self.arena, COUNTER_OFF)[0]

    def info(self) -> dict:
        host, port = self.sock.getsockname()[:2]
        return {"pid": os.getpid(), "start_ticks": start_ticks(), "arena_addr": self.addr,
                "arena_bytes": len(self.arena), "arena_fd": self.arena_fd, "page_size": PAGE,
                "uffd_wp": self.uffd >= 0,
                "service": [host, port], "counter": self.counter,
                # how it writes: page writes at this rate, hot_share of them into the first
                # hot_fraction of the arena's pages, the rest anywhere (the model reads it)
                "write_pattern": {"dirty_rate_mbs": self.cfg.dirty_rate_mbps,
                                  "hot_fraction": self.cfg.hot_fraction,
                                  "hot_share": self.cfg.hot_share}}

    def publish(self) -> None:
        INFO_DIR.mkdir(exist_ok=True)
        tmp = self.info_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.info()))
        tmp.rename(self.info_path)
        print(json.dumps(self.info()), flush=True)

    def serve(self) -> None:
        self.sock.settimeout(0.2)
        while not self.stop.is_set():
            try:
                data, peer = self.sock.recvfrom(512)
            except TimeoutError:
                continue
            except OSError:
                return
            if data[:1] == service.COUNTER:
                reply = service.reply(self.counter, os.getpid(), data)
            elif data[:1] == service.INFO:
                reply = b"I" + json.dumps(self.info()).encode()
            else:
                continue
            with contextlib.suppress(OSError):
                self.sock.sendto(reply, peer)

    def run_dirtier(self, duration: float | None) -> None:
        """Dirty pages at the target rate (hot/cold skew); bump the counter every tick."""
        cfg, arena = self.cfg, self.arena
        npages = len(arena) // PAGE
        rng = random.Random(cfg.seed ^ self.counter)
        hot = max(1, int((npages - 1) * cfg.hot_fraction))
        per_s = cfg.dirty_rate_mbps * 1e6 / PAGE
        disk_per_s = cfg.disk_rate_mbps * 1e6 / PAGE if self.disk_blocks else 0.0
        start = last = time.monotonic()
        carry = disk_carry = 0.0
        rnd = rng.random
        while not self.stop.is_set():
            now = time.monotonic()
            if duration is not None and now - start >= duration:
                break
            want = (now - last) * per_s + carry
            disk_want = min((now - last) * disk_per_s + disk_carry,
                            disk_per_s * 2 * TICK_S + 1)
            last = now
            n = int(want)
            carry = want - n
            if n > per_s * 2 * TICK_S + 1:  # after a stop: no catch-up burst
                n, carry = int(per_s * 2 * TICK_S) + 1, 0.0
            c = self.counter + 1
            struct.pack_into("<Q", arena, COUNTER_OFF, c)
            stamp = struct.pack("<Q", c)
            for _ in range(min(n, 100_000)):
                span = hot if rnd() < cfg.hot_share else npages - 1
                p = 1 + int(rnd() * span)
                o = p * PAGE + (int(rnd() * 512) << 3)
                arena[o : o + 8] = stamp
            nd = int(disk_want)
            disk_carry = disk_want - nd
            for _ in range(nd):  # the guest's block writes: whole blocks stamped with c
                os.pwrite(self.disk_fd, stamp * (PAGE // 8), int(rnd() * self.disk_blocks) * PAGE)
            time.sleep(TICK_S)

    def close(self) -> None:
        self.stop.set()
        if self.disk_fd >= 0:
            os.close(self.disk_fd)
            self.disk_fd = -1
        with contextlib.suppress(OSError):
            self.info_path.unlink()


MADV_POPULATE_WRITE = 23  # Linux >= 5.14


class Arena:
    """The guest's memory: a memfd mapped shared, in 4 KiB pages, populated.

    Shared like QEMU's ``memory-backend-memfd,share=on``: a source agent maps the same pages
    (``fd`` is published in the guest's info) and copies them out with one memory copy
    instead of reading /proc/PID/mem, and a destination's received image becomes the resumed
    guest's memory as it is, with nothing copied in the downtime.

    Not in transparent huge pages (the default of many kernels, Debian's among them): there a
    write marks a whole 2 MiB page soft-dirty, and every pre-copy round would re-send every
    present page (measured in the VM: all 1,572 non-zero pages of an 8 MiB guest, each round).
    """

    def __init__(self, size: int, fd: int | None = None) -> None:
        self.size = max(2 * PAGE, (size + PAGE - 1) // PAGE * PAGE)
        if fd is None:
            fd = os.memfd_create("agents-guest", os.MFD_CLOEXEC)
            os.ftruncate(fd, self.size)
        self.fd = fd
        self.map = mmap.mmap(fd, self.size, flags=mmap.MAP_SHARED)
        with contextlib.suppress(OSError, AttributeError):
            self.map.madvise(mmap.MADV_NOHUGEPAGE)
        try:  # the page faults are paid now (a standby: before the image arrives)
            self.map.madvise(MADV_POPULATE_WRITE)
        except OSError:  # read faults only: an adopted image may be written meanwhile
            for off in range(0, self.size, PAGE):
                _ = self.map[off]

    @classmethod
    def adopt(cls, fd: int) -> Arena | None:
        """Map an existing memfd as the arena (a received image), or None if ``fd`` is not
        a memfd of whole pages (a regular image file is copied into a new arena instead)."""
        try:
            fcntl.fcntl(fd, fcntl.F_GET_SEALS)  # EINVAL unless memfd/shmem
        except OSError:
            return None
        size = os.fstat(fd).st_size
        if size < 2 * PAGE or size % PAGE:
            return None
        return cls(size, os.open(f"/proc/self/fd/{fd}", os.O_RDWR | os.O_CLOEXEC))


def new_arena(size: int) -> mmap.mmap:
    """A fresh arena's mapping (tests and tools that only need the memory)."""
    return Arena(size).map


def write_header(arena: mmap.mmap, cfg: Config, counter: int = 0) -> None:
    blob = json.dumps(asdict(cfg)).encode()
    HDR.pack_into(arena, 0, MAGIC, counter, len(blob))
    arena[CONFIG_OFF : CONFIG_OFF + len(blob)] = blob


def read_header(image: bytes | mmap.mmap) -> tuple[Config, int]:
    magic, counter, blen = HDR.unpack_from(image, 0)
    if magic != MAGIC or blen > PAGE - CONFIG_OFF:
        raise ValueError("not a workload arena image")
    d = json.loads(bytes(image[CONFIG_OFF : CONFIG_OFF + blen]))
    d["mix"] = tuple(d["mix"])
    return Config(**d), counter


def _resume_arena(image: str, wait_go: bool) -> Arena | None:
    """The arena to carry on from: a received memfd image is mapped as it is (mapped and
    populated now, before ``go``: nothing is copied in the downtime); an image file is
    copied into a new arena. None when a standby is told not to go."""
    fd = os.open(image, os.O_RDONLY)
    try:
        size = os.fstat(fd).st_size
        adopted = Arena.adopt(fd)
        arena = adopted or Arena(size)
        if wait_go:  # mapped and populated: say so, then wait
            print("standby", flush=True)
            if sys.stdin.readline().strip() != "go":
                return None
        if adopted is None:
            view, done = memoryview(arena.map), 0
            while done < size:
                n = os.preadv(fd, [view[done:size]], done)
                if n <= 0:
                    raise SystemExit(f"workload: image {image} truncated at {done} bytes")
                done += n
            view.release()
        return arena
    finally:
        os.close(fd)


def main(size: int | None, mix: tuple, rate: float, hot_fraction: float, hot_share: float,
         host: str, port: int, resume: str | None, service_fd: int | None,
         duration: float | None, use_uffd: bool, seed: int, wait_go: bool = False,
         disk: str | None = None, disk_rate: float = 0.0, markers: int = 0,
         netns: str | None = None, announce_on: str | None = None,
         announce: str | None = None) -> int:
    """Start (or resume) the guest; runs until SIGTERM/SIGINT or ``duration``.

    With ``wait_go`` the process is a warm standby (like an incoming QEMU): it is started
    before the image is complete and reads it only when told to go. ``netns``: the guest's
    own network namespace (its service is bound there); ``announce_on``: once running,
    announce the guest from that interface (``announce`` schedule; see agents.guest.identity)."""
    sys.setswitchinterval(0.0005)
    if netns:
        from agents.runtime.forking import setns

        setns(netns)
    if service_fd is not None:
        sock = socket.socket(fileno=service_fd)
    else:  # bound before any image arrives: nothing of this is paid in the downtime
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.bind((host, port))
    if resume:
        arena = _resume_arena(resume, wait_go)
        if arena is None:
            return 3
        cfg, _ = read_header(arena.map)
    else:
        if not size:
            raise SystemExit("workload: --size is required unless --resume")
        cfg = Config(size, rate, hot_fraction, hot_share, mix, seed, disk_rate)
        arena = Arena(size)
        fill_arena(arena.map, cfg)
        write_header(arena.map, cfg)
        if markers:
            from agents.guest.markers import plant

            plant(arena.map, markers, PAGE)
    if announce_on:
        from agents.guest.announce import announce_from

        announce_from(announce_on, announce)
    guest = Guest(arena, cfg, sock, use_uffd, disk)

    def on_signal(signum, frame):
        guest.stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server = threading.Thread(target=guest.serve, daemon=True)
    server.start()
    guest.publish()
    try:
        guest.run_dirtier(duration)
    finally:
        guest.close()
        server.join(1.0)
    return 0


def add_arguments(w: argparse.ArgumentParser) -> None:
    """The ``workload`` command's options (``python -m agents workload``)."""
    w.add_argument("--size", type=parse_size, help="arena size, e.g. 64M")
    w.add_argument("--mix", type=parse_mix, default=(0.25, 0.25, 0.25, 0.25),
                   help="page content mix, e.g. zero=25,text=25,comp=25,random=25")
    w.add_argument("--dirty-rate", type=float, default=20.0, help="MB/s written")
    w.add_argument("--hot-fraction", type=parse_fraction, default=0.1)
    w.add_argument("--hot-share", type=parse_fraction, default=0.9)
    w.add_argument("--host", default="127.0.0.1")
    w.add_argument("--port", type=int, default=0, help="UDP service port")
    w.add_argument("--resume", metavar="IMAGE", help="carry on from a received arena image")
    w.add_argument("--service-fd", type=int, help="an already bound UDP socket to serve on")
    w.add_argument("--wait-go", action="store_true",
                   help="standby: read the image only after a line on stdin (EOF: exit)")
    w.add_argument("--duration", type=float)
    w.add_argument("--no-uffd", action="store_true", help="do not register for PAGEMAP_SCAN")
    w.add_argument("--seed", type=int, default=1)
    w.add_argument("--disk", metavar="PATH", help="the guest's disk image (it writes blocks)")
    w.add_argument("--disk-rate", type=float, default=0.0, help="MB/s of disk blocks written")
    w.add_argument("--markers", type=int, default=0,
                   help="plant N plaintext marker strings in the arena (agents/guest/markers.py)")
    w.add_argument("--netns", metavar="PATH", help="run in this network namespace (the "
                   "guest's own, e.g. /run/netns/NAME)")
    w.add_argument("--announce-on", metavar="DEV",
                   help="once running, announce the guest from DEV (see --announce)")
    w.add_argument("--announce", metavar="SPEC", default="rounds=5,initial=50,max=550,step=100",
                   help="gratuitous ARP + RARP rounds and spacing in ms (QEMU's defaults); "
                        "'none' for no announcement")


def from_args(args: argparse.Namespace) -> int:
    """Run the guest as ``args`` (from :func:`add_arguments`) say."""
    return main(args.size, args.mix, args.dirty_rate, args.hot_fraction, args.hot_share,
                args.host, args.port, args.resume, args.service_fd, args.duration,
                not args.no_uffd, args.seed, args.wait_go, args.disk, args.disk_rate,
                args.markers, args.netns, args.announce_on,
                None if args.announce == "none" else args.announce)


def cli(argv: list[str]) -> int:
    """``python -m agents workload ARGS``, callable in a forked child."""
    ap = argparse.ArgumentParser(prog="python -m agents workload")
    add_arguments(ap)
    return from_args(ap.parse_args(argv))

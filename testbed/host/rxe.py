"""Soft-RoCE (rdma_rxe) links for a migration path between two namespaces, and their teardown.

Why the devices sit in the initial namespace. In Debian's 6.1 kernel (the full-kernel VM) rxe
is not namespace-aware: it has ONE UDP socket for RoCE v2 (port 4791) in the initial network
namespace, and it looks its routes up there (``rxe_net.c``: ``recv_sockets``,
``ip_route_output_key(&init_net, ...)``). Measured in the VM: an rxe device on a veth inside a
namespace registers (GIDs appear) but every RDMA WRITE fails (``ib_write_bw``: "Failed status
2", local QP operation error); with both ends enslaved to VRFs in the initial namespace the
requests reach the far device but are never answered (a VRF slave's packets are handed up with
the VRF as their device, in which rxe finds no device of its own).

What works, and what this module builds: each end of the path gets an *anchor*, a veth pair
whose root end (with the rxe device and an address of 198.18/15, the benchmarking range) is in
the initial namespace and whose other end is in the node's namespace; the node forwards RoCE
over its migration link to the other node, which hands it to the far anchor. So the RDMA
traffic crosses exactly the link (and its tbf/netem shaping) that the node's TCP migration
crosses. Both anchor addresses are local to the initial namespace, so the local-table rule is
moved after a source-address rule per anchor (``iif lo from A lookup T``): rxe's packets leave
by the anchor instead of looping back; the far anchor accepts a local source
(``accept_local``). Everything is recorded (``RECORD_DIR``) and removed on exit, or by
``clean()`` once its owner is gone; the local rule goes back to preference 0 with the last path.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

RXE_PREFIX = "tbrxe"
LINK_PREFIX = "tbrx"
RULE_PREF = 1818
LOCAL_PREF_MOVED = 32000
TABLE_BASE = 18000
RECORD_DIR = Path(os.environ.get("TESTBED_RXE_DIR", "/run/testbed-rxe"))


class RxeError(RuntimeError):
    """An rxe link or its path could not be made; the message says which step and why."""


def _run(*cmd: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(list(cmd), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise RxeError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc


def _ns(ns: str, *cmd: str) -> list[str]:
    """``cmd`` run in namespace ``ns``: a name (ip netns) or ``pid:N`` (a Mininet node)."""
    if ns.startswith("pid:"):
        return ["nsenter", "-t", ns[4:], "-n", *cmd]
    return ["ip", "netns", "exec", ns, *cmd]


def load_module() -> bool:
    """Load rdma_rxe if it is a module; True when rxe devices can be made."""
    if shutil.which("modprobe"):
        subprocess.run(["modprobe", "-q", "rdma_rxe"], capture_output=True)
    return Path("/sys/module/rdma_rxe").exists()


def rxe_links() -> list[dict[str, str]]:
    """Every RDMA link of this kernel: ``{"ifname": "tbrxe1a2bs/1", "netdev": "..."}``."""
    if not shutil.which("rdma"):
        return []
    proc = _run("rdma", "-j", "link", "show", check=False)
    try:
        return [{"ifname": str(x.get("ifname", "")), "netdev": str(x.get("netdev", ""))}
                for x in json.loads(proc.stdout or "[]")]
    except ValueError:
        return []


def add_rxe(name: str, netdev: str, ns: str | None = None) -> None:
    """``rdma link add NAME type rxe netdev NETDEV`` (in ``ns``, where the netdev is)."""
    cmd = ["rdma", "link", "add", name, "type", "rxe", "netdev", netdev]
    _run(*(_ns(ns, *cmd) if ns else cmd))


def del_rxe(name: str) -> bool:
    return _run("rdma", "link", "delete", name, check=False).returncode == 0


def probe(ns: str, netdev: str) -> bool:
    """Doctor's check: an rxe device can be made on ``netdev`` in scratch namespace ``ns``."""
    if not load_module() or not shutil.which("rdma"):
        return False
    name = f"{RXE_PREFIX}probe{os.getpid() % 100000}"
    try:
        add_rxe(name, netdev, ns)
    except RxeError:
        return False
    del_rxe(name)
    return True


@dataclass
class Endpoint:
    """One end of the path: the node's namespace and its address on the migration link."""

    ns: str
    migration_ip: str


@dataclass
class Anchor:
    rxe: str  # the rdma device name (what the agents open)
    root_dev: str
    node_dev: str
    ip: str  # the rxe device's address (its RoCE v2 GID)
    node_ip: str
    table: int


@dataclass
class PathRecord:
    ident: int
    owner: int
    anchors: list[Anchor] = field(default_factory=list)
    routes: list[tuple[str, str]] = field(default_factory=list)  # (ns, prefix) added in nodes
    moved_local: bool = False


def _local_rule_at(pref: int) -> bool:
    out = _run("ip", "-j", "rule", "show", check=False).stdout or "[]"
    return any(r.get("priority") == pref and r.get("table") == "local"
               for r in json.loads(out))


def _move_local_rule() -> bool:
    """Put the local table after the anchors' rules; True if this call moved it."""
    if not _local_rule_at(0):
        return False
    if not _local_rule_at(LOCAL_PREF_MOVED):
        _run("ip", "rule", "add", "pref", str(LOCAL_PREF_MOVED), "lookup", "local")
    _run("ip", "rule", "del", "pref", "0", "lookup", "local")
    return True


def _restore_local_rule() -> None:
    if not _local_rule_at(0):
        _run("ip", "rule", "add", "pref", "0", "lookup", "local", check=False)
    while _local_rule_at(LOCAL_PREF_MOVED):
        if _run("ip", "rule", "del", "pref", str(LOCAL_PREF_MOVED), "lookup", "local",
                check=False).returncode:
            break


def _records() -> list[PathRecord]:
    out = []
    for p in sorted(RECORD_DIR.glob("*.json")) if RECORD_DIR.is_dir() else []:
        with contextlib.suppress(OSError, ValueError, TypeError):
            d = json.loads(p.read_text())
            out.append(PathRecord(d["ident"], d["owner"], [Anchor(**a) for a in d["anchors"]],
                                  [tuple(r) for r in d["routes"]], d["moved_local"]))
    return out


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RocePath:
    """Soft-RoCE between two namespaces over their migration link (see the module doc).

    ``with RocePath(Endpoint("S", "10.0.0.1"), Endpoint("D", "10.0.0.2")) as p:`` gives
    ``p.source.rxe`` / ``p.destination.rxe``: the device names the agents open (``--rdma``).
    """

    def __init__(self, source: Endpoint, destination: Endpoint) -> None:
        self.ends = (source, destination)
        used = {r.ident for r in _records()}
        free = [i for i in range(1, 255) if i not in used]
        if not free:
            raise RxeError("no free Soft-RoCE path number (254 in use): run testbed clean")
        self.rec = PathRecord(random.choice(free), os.getpid())

    @property
    def source(self) -> Anchor:
        return self.rec.anchors[0]

    @property
    def destination(self) -> Anchor:
        return self.rec.anchors[1]

    def __enter__(self) -> RocePath:
        try:
            self.up()
        except BaseException:
            self.down()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        self.down()

    def _save(self) -> None:
        RECORD_DIR.mkdir(parents=True, exist_ok=True)
        path = RECORD_DIR / f"{self.rec.ident}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self.rec)))
        tmp.rename(path)

    def up(self) -> None:
        if not load_module():
            raise RxeError("rdma_rxe is not available in kernel "
                           f"{os.uname().release} (CONFIG_RDMA_RXE unset or no module): "
                           "run in the full-kernel VM (testbed doctor says where)")
        k = self.rec.ident
        self._save()  # recorded before anything exists: clean finds a half-built path
        for i, (end, side) in enumerate(zip(self.ends, "sd", strict=True)):
            net = f"198.{18 + i}.{k}"
            a = Anchor(rxe=f"{RXE_PREFIX}{k}{side}", root_dev=f"{LINK_PREFIX}{k}{side}",
                       node_dev=f"{LINK_PREFIX}{k}{side}n", ip=f"{net}.1", node_ip=f"{net}.2",
                       table=TABLE_BASE + 2 * k + i)
            self.rec.anchors.append(a)
            self._save()
            _run("ip", "link", "add", a.root_dev, "type", "veth", "peer", "name", a.node_dev)
            if end.ns.startswith("pid:"):
                _run("ip", "link", "set", a.node_dev, "netns", end.ns[4:])
            else:
                _run("ip", "link", "set", a.node_dev, "netns", end.ns)
            _run("ip", "addr", "add", f"{a.ip}/30", "dev", a.root_dev)
            _run("ip", "link", "set", a.root_dev, "up")
            for key, val in (("accept_local", "1"), ("rp_filter", "0")):
                _run("sysctl", "-qw", f"net.ipv4.conf.{a.root_dev}.{key}={val}")
            _run(*_ns(end.ns, "ip", "addr", "add", f"{a.node_ip}/30", "dev", a.node_dev))
            _run(*_ns(end.ns, "ip", "link", "set", a.node_dev, "up"))
            _run(*_ns(end.ns, "sysctl", "-qw", "net.ipv4.ip_forward=1"))
        if _run("sysctl", "-n", "net.ipv4.conf.all.rp_filter").stdout.strip() == "1":
            raise RxeError("net.ipv4.conf.all.rp_filter=1 (strict) in the initial namespace "
                           "drops RoCE arriving at the far anchor; set it to 2 (loose)")
        src, dst = self.rec.anchors
        for near, far, end, other in ((src, dst, self.ends[0], self.ends[1]),
                                      (dst, src, self.ends[1], self.ends[0])):
            # the node hands RoCE for the far anchor to the other node over the migration link
            _run(*_ns(end.ns, "ip", "route", "add", f"{far.ip.rsplit('.', 1)[0]}.0/30",
                      "via", other.migration_ip))
            self.rec.routes.append((end.ns, f"{far.ip.rsplit('.', 1)[0]}.0/30"))
            _run("ip", "route", "add", f"{far.ip.rsplit('.', 1)[0]}.0/30", "via", near.node_ip,
                 "dev", near.root_dev, "table", str(near.table))
            _run("ip", "rule", "add", "pref", str(RULE_PREF), "iif", "lo", "from", near.ip,
                 "lookup", str(near.table))
        self.rec.moved_local = _move_local_rule() or any(r.moved_local for r in _records()
                                                         if r.ident != self.rec.ident)
        self._save()
        for a in self.rec.anchors:
            add_rxe(a.rxe, a.root_dev)
        names = {x["ifname"].split("/")[0] for x in rxe_links()}
        missing = [a.rxe for a in self.rec.anchors if a.rxe not in names]
        if missing:
            raise RxeError(f"rxe device(s) {', '.join(missing)} not listed after creation")

    def down(self) -> None:
        _teardown(self.rec)


def _teardown(rec: PathRecord) -> list[str]:
    """Remove everything of one path (idempotent); returns what was removed."""
    gone = []
    for a in rec.anchors:
        if del_rxe(a.rxe):
            gone.append(f"rdma link {a.rxe}")
        while _run("ip", "rule", "del", "pref", str(RULE_PREF), "from", a.ip, "lookup",
                   str(a.table), check=False).returncode == 0:
            pass
        _run("ip", "route", "flush", "table", str(a.table), check=False)
        if _run("ip", "link", "del", a.root_dev, check=False).returncode == 0:  # and its peer
            gone.append(f"link {a.root_dev}")
    for ns, prefix in rec.routes:
        _run(*_ns(ns, "ip", "route", "del", prefix), check=False)
    with contextlib.suppress(OSError):
        (RECORD_DIR / f"{rec.ident}.json").unlink()
    others = [r for r in _records() if r.ident != rec.ident]
    if not others:
        _restore_local_rule()
    return gone


def clean() -> list[str]:
    """Remove the paths whose owner process is gone (what ``testbed clean`` calls)."""
    gone = []
    for rec in _records():
        if not _alive(rec.owner):
            gone += _teardown(rec)
    return gone

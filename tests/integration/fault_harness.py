"""Fault cases for the agents' switchover: run one migration with one fault, settle it, and
say what is left: how many copies of the guest run, whether one is frozen or throttled,
whether any progress was lost, whether a process was left behind.

Used by tests/integration/test_agents_faults.py (one assertion set per case) and by
benchmarks/fault_bench.py (the table). Faults inside the agents come from AGENTS_FAULT
(agents/runtime/faults.py); external ones are kill -9 (the same SIGKILL, at a named step), nftables
drops (partition, 5 % loss) and ``ip link set down`` (flap), in namespaces made here.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

PY = [sys.executable, "-m", "agents"]
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class Case:
    name: str
    fault: str  # what is injected, for the table
    env_source: str = ""  # AGENTS_FAULT for the source agent (and its guard)
    env_dest: str = ""  # AGENTS_FAULT for the destination agent
    net: str | None = None  # None: loopback | partition-stop | partition-decided | loss | flap
    guest: str = "workload"  # workload | shared | unreadable | growing
    expect: tuple[str, ...] = ()  # acceptable outcomes ("" : no result, the agent died)
    size: str = "8M"
    cap_mbit: float | None = None
    source_args: tuple[str, ...] = ()


@dataclass
class Verdict:
    case: Case
    outcome: str = ""  # the source's (or the resolver's) outcome
    copies: int = 0  # running copies of the guest at the end
    paused: int = 0  # stopped copies at the end
    throttled: bool = False
    lost: bool = False  # the running copy's counter is behind what a client already saw
    leftovers: list[int] = field(default_factory=list)
    resolved_by: str = ""  # source | guard | resolver
    mgmt: str = ""  # the destination's management address (network cases)
    detail: str = ""
    seconds: float = 0.0
    result: dict = field(default_factory=dict)

    @property
    def survived(self) -> bool:
        return self.copies == 1 and self.paused == 0 and not self.throttled and \
            not self.lost and not self.leftovers


# --- the cases ---
DONE, BACK, RESOLVED = "completed", "rolled-back", "indeterminate-then-resolved"

CASES = [
    # kill -9 of the source agent at each step (its guard settles): "" = no result printed
    Case("src-kill-hello", "kill -9 source after HELLO", env_source="source:hello:crash"),
    Case("src-kill-precopy", "kill -9 source in pre-copy", env_source="source:precopy:crash"),
    Case("src-kill-stopped", "kill -9 source, guest stopped",
         env_source="source:stopped:crash"),
    Case("src-kill-commit", "kill -9 source after COMMIT", env_source="source:commit:crash"),
    Case("src-kill-go", "kill -9 source before GO", env_source="source:go:crash"),
    Case("src-kill-decided", "kill -9 source after DECISION",
         env_source="source:decided:crash"),
    # kill -9 of the destination agent at each step
    Case("dst-kill-hello", "kill -9 destination at HELLO", env_dest="destination:hello:crash",
         expect=(BACK,)),
    Case("dst-kill-precopy", "kill -9 destination in pre-copy",
         env_dest="destination:precopy:crash", expect=(BACK,)),
    Case("dst-kill-prepared", "kill -9 destination before PREPARED",
         env_dest="destination:prepared:crash", expect=(BACK,)),
    Case("dst-kill-go", "kill -9 destination at GO", env_dest="destination:go:crash"),
    Case("dst-kill-decided", "kill -9 destination after deciding",
         env_dest="destination:decided:crash"),
    # lost messages and a stalled peer
    Case("ack-lost", "DECISION (ACK) lost", env_dest="destination:decided:drop",
         expect=(RESOLVED,)),
    Case("go-lost", "GO lost", env_source="source:go:drop", expect=(BACK, RESOLVED)),
    Case("dst-stall-go", "destination stalls after GO", env_dest="destination:go:stall",
         expect=(RESOLVED,)),
    # the network
    Case("timeout-at-decision", "source --timeout waiting for DECISION",
         env_dest="destination:go:stall", source_args=("--timeout", "3"),
         expect=(RESOLVED,)),
    Case("partition-stop", "partition in the stop phase", env_source="source:stopped:delay",
         net="partition-stop"),
    Case("partition-decided", "partition after the decision",
         env_dest="destination:decided:delay", net="partition-decided", expect=(RESOLVED,)),
    Case("partition-mgmt", "migration path cut after the decision; asked via management",
         env_dest="destination:decided:delay", net="partition-decided-mgmt",
         expect=(RESOLVED,)),
    Case("loss-5", "5 % loss both ways", net="loss", expect=(DONE,)),
    Case("flap-4s", "4 s link flap in pre-copy", net="flap", cap_mbit=40, size="16M",
         expect=(DONE,)),
    # what the image must not leave out
    Case("shared", "32 MiB rw-s shared mapping", guest="shared", expect=(DONE,)),
    Case("unreadable", "unreadable mapped pages", guest="unreadable", expect=(BACK,)),
    Case("growing", "mapping added mid-migration", guest="growing", cap_mbit=150,
         expect=(BACK,)),
]


# --- processes ------------------------------------------------------------------------------
def state(pid: int | None) -> str:
    """One letter of /proc/PID/stat, or X if gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, TypeError):
        return "X"
    return stat[stat.rindex(")") + 2]


def kill(pid: int | None) -> None:
    with contextlib.suppress(ProcessLookupError, TypeError, PermissionError):
        os.kill(pid, signal.SIGKILL)


def pids_with(*words: str) -> list[int]:
    """Live processes whose command line holds every word (forked agents keep theirs)."""
    out = []
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = (d / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            if all(w in cmd for w in words) and state(int(d.name)) not in "ZX":
                out.append(int(d.name))
    return out


def throttled(pid: int) -> bool:
    with contextlib.suppress(OSError):
        return "agents-throttle" in Path(f"/proc/{pid}/cgroup").read_text()
    return False


# --- network --------------------------------------------------------------------------------
def sh(*cmd: str, check: bool = True) -> None:
    subprocess.run(cmd, check=check, capture_output=True)


class Net:
    """Two namespaces joined by a tbf-shaped veth (the migration path: src 10.N.0.1, dst
    10.N.0.2) and a second, unshaped one (the management path: 10.N.1.1, 10.N.1.2)."""

    def __init__(self, rate_mbit: int = 300) -> None:
        tag = uuid.uuid4().hex[:6]
        self.a, self.b = f"tfa{tag}", f"tfb{tag}"
        self.va, self.vb = f"tf{tag}a", f"tf{tag}b"
        n = int(tag[:2], 16) % 200 + 20
        self.src, self.dst = f"10.{n}.0.1", f"10.{n}.0.2"
        self.msrc, self.mdst = f"10.{n}.1.1", f"10.{n}.1.2"
        sh("ip", "netns", "add", self.a)
        sh("ip", "netns", "add", self.b)
        sh("ip", "link", "add", self.va, "netns", self.a, "type", "veth", "peer", "name",
           self.vb, "netns", self.b)
        sh("ip", "link", "add", f"{self.va}m", "netns", self.a, "type", "veth", "peer", "name",
           f"{self.vb}m", "netns", self.b)
        for ns, dev, ip in ((self.a, self.va, self.src), (self.b, self.vb, self.dst),
                            (self.a, f"{self.va}m", self.msrc),
                            (self.b, f"{self.vb}m", self.mdst)):
            sh("ip", "-n", ns, "addr", "add", f"{ip}/24", "dev", dev)
            sh("ip", "-n", ns, "link", "set", dev, "up")
            sh("ip", "-n", ns, "link", "set", "lo", "up")
            if not dev.endswith("m"):
                sh("ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", dev, "root", "tbf",
                   "rate", f"{rate_mbit}mbit", "burst", "256k", "latency", "50ms")

    def nft(self, *rules: str) -> None:
        """Rules in an ``inet fault`` table of the destination's namespace, on its veth only
        (input and output)."""
        sh("ip", "netns", "exec", self.b, "nft", "add", "table", "inet", "fault")
        for hook, match in (("input", "iifname"), ("output", "oifname")):
            sh("ip", "netns", "exec", self.b, "nft", "add", "chain", "inet", "fault", hook,
               f"{{ type filter hook {hook} priority 0 ; }}")
            for rule in rules:
                sh("ip", "netns", "exec", self.b, "nft", "add", "rule", "inet", "fault", hook,
                   match, self.vb, *rule.split())

    def heal(self) -> None:
        sh("ip", "netns", "exec", self.b, "nft", "delete", "table", "inet", "fault",
           check=False)

    def partition(self) -> None:
        self.nft(f"ip saddr {self.src} drop", f"ip daddr {self.src} drop")

    def loss(self, percent: int) -> None:
        self.nft(f"numgen random mod 100 < {percent} drop")

    def link(self, up: bool) -> None:
        sh("ip", "-n", self.a, "link", "set", self.va, "up" if up else "down")

    def tx_bytes(self) -> int:
        out = subprocess.run(["ip", "-n", self.a, "-j", "-s", "link", "show", "dev", self.va],
                             capture_output=True, text=True).stdout
        return json.loads(out)[0]["stats64"]["tx"]["bytes"] if out else 0

    def close(self) -> None:
        for ns in (self.a, self.b):
            sh("ip", "netns", "del", ns, check=False)


def socket_in(netns: str | None) -> socket.socket:
    """A UDP socket created inside ``netns`` (by a thread that enters it, then ends)."""
    if netns is None:
        return socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    from agents.runtime.forking import setns

    box: list[socket.socket] = []

    def make() -> None:
        setns(f"/run/netns/{netns}")
        box.append(socket.socket(socket.AF_INET, socket.SOCK_DGRAM))

    t = threading.Thread(target=make)
    t.start()
    t.join()
    return box[0]


def counter(service: list | tuple | None, netns: str | None = None,
            timeout: float = 0.3, tries: int = 1) -> int | None:
    if not service:
        return None
    with socket_in(netns) as s:
        s.settimeout(timeout)
        for _ in range(tries):
            with contextlib.suppress(OSError):
                s.sendto(b"C" + b"f" * 8, (service[0], int(service[1])))
                data, _ = s.recvfrom(64)
                return struct.unpack_from("<Q", data, 1)[0]
    return None


class Watcher:
    """A client of the original guest: the highest counter it ever answered."""

    def __init__(self, service: list) -> None:
        self.service, self.best = service, 0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            c = counter(self.service, timeout=0.05)
            if c is not None:
                self.best = max(self.best, c)
            time.sleep(0.02)

    def stop(self) -> int:
        self._stop.set()
        self._t.join()
        return self.best


# --- guests ---------------------------------------------------------------------------------
FOREIGN = {  # foreign processes (no resume at the destination): what the image must cover
    "shared": """
import mmap, time
m = mmap.mmap(-1, 32 << 20, flags=mmap.MAP_SHARED)   # rw-s anonymous shared
for i in range(0, 32 << 20, 4096):
    m[i:i + 8] = i.to_bytes(8, "little")
print("ready", flush=True)
n = 0
while True:
    m[(n % 8192) * 4096 + 8:(n % 8192) * 4096 + 16] = n.to_bytes(8, "little"); n += 1
    time.sleep(0.0005)
""",
    "unreadable": """
import mmap, os, tempfile, time
f = tempfile.TemporaryFile()
f.truncate(8 << 20)
m = mmap.mmap(f.fileno(), 8 << 20)   # rw-s file mapping
m[0:4] = b"live"
f.truncate(4096)                      # its tail can no longer be read (SIGBUS / EFAULT)
print("ready", flush=True)
while True:
    m[8:16] = os.urandom(8); time.sleep(0.01)
""",
    "growing": """
import mmap, time
keep = []
print("ready", flush=True)
while True:
    m = mmap.mmap(-1, 4 << 20); m[0:8] = b"grown..."; keep.append(m); time.sleep(0.15)
""",
}


def start_guest(kind: str, size: str) -> tuple[subprocess.Popen, int, list | None]:
    """(process, pid, UDP service of a built-in workload or None)."""
    if kind == "workload":
        p = subprocess.Popen([*PY, "workload", "--size", size, "--dirty-rate", "20"],
                             stdout=subprocess.PIPE, text=True, start_new_session=True)
        info = json.loads(p.stdout.readline())
        return p, info["pid"], info["service"]
    p = subprocess.Popen([sys.executable, "-c", FOREIGN[kind]], stdout=subprocess.PIPE,
                         text=True, start_new_session=True)
    assert p.stdout.readline().strip() == "ready"
    time.sleep(0.3)
    return p, p.pid, None


# --- one case -------------------------------------------------------------------------------
def run_case(case: Case) -> Verdict:
    t0 = time.monotonic()
    v = Verdict(case)
    records = tempfile.mkdtemp(prefix="faults-")
    env = {**os.environ, "AGENTS_DECISION_DIR": records, "PYTHONPATH": str(ROOT),
           "AGENTS_GUARD_DIR": f"{records}/guard"}
    net = Net() if case.net else None
    guest, gpid, service = start_guest(case.guest, case.size)
    watcher = Watcher(service) if service else None
    dproc = sproc = None
    to = "?"
    try:
        host = net.dst if net else "127.0.0.1"
        prefix_d = ["ip", "netns", "exec", net.b] if net else []
        prefix_s = ["ip", "netns", "exec", net.a] if net else []
        idle = "8" if case.net else "3"
        dargs = ["destination", "--listen", f"{host}:0", "--idle-timeout", idle,
                 "--decision-linger", "25", "--resume-host", "127.0.0.1" if not net else host]
        if case.guest != "workload":
            dargs.append("--no-resume")
        if net:
            dargs += ["--also-listen", f"{net.mdst}:0"]
            v.mgmt = net.mdst
        dproc = subprocess.Popen([*prefix_d, *PY, *dargs, "--json", f"--decision-dir={records}"],
                                 stdout=subprocess.PIPE, text=True,
                                 env={**env, "AGENTS_FAULT": case.env_dest})
        ready = json.loads(dproc.stdout.readline())
        port = ready["listening"][1]
        to = f"{host}:{port}"
        sargs = ["source", "--pid", str(gpid), "--to", to, "--preflight", "off",
                 "--idle-timeout", idle, "--commit-timeout", "4" if not case.net else "3",
                 "--resolve-timeout", "6", "--json", "--probe-interval-ms", "0"]
        if case.cap_mbit:
            sargs += ["--bandwidth-cap", str(case.cap_mbit)]
        sargs += case.source_args
        if net:  # the management path, for RESOLVE
            sargs += ["--resolve-via", ":".join(map(str, ready["also_listening"][0]))]
        sproc = subprocess.Popen([*prefix_s, *PY, *sargs], stdout=subprocess.PIPE,
                                 stderr=subprocess.PIPE, text=True,
                                 env={**env, "AGENTS_FAULT": case.env_source})
        if net:
            _network_fault(case, net, gpid, records)
        out, err = sproc.communicate(timeout=90)
        v.result = json.loads(out.strip().splitlines()[-1]) if out.strip() else {}
        v.outcome = v.result.get("outcome", "")
        v.resolved_by = "source" if v.outcome else "guard"
        if sproc.returncode < 0 or not out.strip():
            v.detail = f"source agent died (rc {sproc.returncode})"
        if v.outcome == "indeterminate":
            if case.env_dest.endswith(":stall"):
                kill(dproc.pid)  # the stalled agent is gone: its records settle it
                dproc.wait()
            r = subprocess.run([*PY, "resolve", "--migration", v.result["migration"], "--pid",
                                str(gpid), "--to", to, "--records", records, "--timeout", "5"],
                               capture_output=True, text=True, env=env, timeout=30)
            settled = json.loads(r.stdout)
            v.outcome = f"indeterminate, then resolver: {settled.get('decision')}"
            v.resolved_by = "resolver"
        _settle(v, gpid, service, records, net)
    finally:
        best = watcher.stop() if watcher else 0
        running = _running_copy(v, gpid, service, records, net)
        if watcher and running is not None:
            c = counter(running[1], running[0], tries=5)
            v.lost = c is None or c < best
            v.detail += f" counter {c} vs {best} seen"
        for p in (sproc, dproc):
            if p is not None and p.poll() is None:
                p.kill()
                p.wait()
        v.leftovers += _lingering(to, records, _guest_pids(gpid, records))
        for p in v.leftovers:
            kill(p)
        kill(gpid)
        for p in _guest_pids(gpid, records):
            kill(p)
        guest.wait()
        if net:
            net.close()
        v.seconds = round(time.monotonic() - t0, 1)
    return v


def _lingering(to: str, records: str, guests: set[int], within: float = 3.0) -> list[int]:
    """Agent processes (agents, guards, standbys: forks keep the agent's command line) still
    there ``within`` seconds after the agents were ended, the guests aside."""
    deadline = time.monotonic() + within
    while True:
        left = (set(pids_with("-m agents", to)) | set(pids_with("-m agents", records))) - guests
        if not left or time.monotonic() >= deadline:
            return sorted(left)
        time.sleep(0.05)


def _network_fault(case: Case, net: Net, gpid: int, records: str) -> None:
    deadline = time.monotonic() + 40

    def wait_for(cond: Callable[[], bool]) -> bool:
        while time.monotonic() < deadline:
            if cond():
                return True
            time.sleep(0.005)
        return False

    if case.net == "partition-stop":  # the guest stopped for the switchover
        if wait_for(lambda: state(gpid) in "tT"):
            net.partition()
            time.sleep(6)
            net.heal()
    elif case.net == "partition-decided":  # the destination has decided (committed)
        if wait_for(lambda: any('"committed"' in p.read_text() for p in
                                Path(records).glob("*.json"))):
            net.partition()
            time.sleep(6)
            net.heal()
    elif case.net == "partition-decided-mgmt" and wait_for(
            lambda: any('"committed"' in p.read_text() for p in Path(records).glob("*.json"))):
        net.partition()  # for good: only the management path reaches the destination
    elif case.net == "loss":
        net.loss(5)
    elif case.net == "flap" and wait_for(lambda: net.tx_bytes() > 2 << 20):  # in round 0
        net.link(False)
        time.sleep(4)
        net.link(True)


def _records(records: str) -> list[dict]:
    out = []
    for p in Path(records).glob("*.json"):
        with contextlib.suppress(OSError, ValueError):
            out.append(json.loads(p.read_text()))
    return out


def _guest_pids(gpid: int, records: str) -> set[int]:
    return {gpid} | {r["guest_pid"] for r in _records(records) if r.get("guest_pid")}


def _running_copy(v: Verdict, gpid: int, service: list | None, records: str,
                  net: Net | None) -> tuple[str | None, list] | None:
    """(netns, service) of the one running copy, if exactly one runs."""
    if state(gpid) not in "tTZX":
        return None, service
    for r in _records(records):
        if r.get("state") == "committed" and state(r.get("guest_pid")) not in "tTZX":
            return (net.b if net else None), r.get("service")
    return None


def _settle(v: Verdict, gpid: int, service: list | None, records: str,
            net: Net | None) -> None:
    """Wait for the guard (when the source agent died) and until no copy is stopped, then
    count."""
    deadline = time.monotonic() + 20
    guard_acts = not v.result
    while time.monotonic() < deadline and (
            state(gpid) in "tT" or guard_acts and not list(Path(records, "guard").glob("*"))):
        time.sleep(0.05)
    copies = paused = 0
    s = state(gpid)
    if s in "tT":
        paused += 1
    elif s not in "ZX":
        copies += 1
    v.throttled = s not in "ZX" and throttled(gpid)
    for g in Path(records, "guard").glob("*.json"):
        v.detail += f" guard: {g.read_text()}"
    standby_deadline = time.monotonic() + 5  # the destination agent itself discards them
    for r in _records(records):
        if r.get("state") == "committed":
            copies += state(r.get("guest_pid")) not in "ZX"
            continue
        while state(r.get("guest_pid")) not in "ZX" and time.monotonic() < standby_deadline:
            time.sleep(0.05)
        if state(r.get("guest_pid")) not in "ZX":
            v.leftovers.append(r["guest_pid"])  # a standby that outlived its migration
    v.copies, v.paused = copies, paused


def table(verdicts: list[Verdict]) -> str:
    rows = ["| fault | outcome | copies running | survived | data lost | s |",
            "|---|---|---|---|---|---|"]
    for v in verdicts:
        rows.append(f"| {v.case.fault} | {v.outcome or 'agent died; guard'} | {v.copies} | "
                    f"{'yes' if v.survived else 'NO'} | {'yes' if v.lost else '0'} | "
                    f"{v.seconds} |")
    ok = sum(v.survived for v in verdicts)
    rows.append(f"\n{len(verdicts)} faults injected, {ok} survived, "
                f"{sum(v.copies == 1 for v in verdicts)} with exactly one copy, "
                f"{sum(v.lost for v in verdicts)} with data lost")
    return "\n".join(rows)

"""The impairment appliance: one full-kernel VM that carries the lab's netem links.

On a kernel without ``sch_netem`` the lab still runs natively (namespaces, veth, tbf/htb,
policy-routed stacks, agents, probes); only the links that need netem (delay, jitter, loss)
pass through this VM, a virtme-ng guest of Debian's kernel::

    node a                       appliance (Debian kernel, TCG)                 node b
    a-r-b = tap  ==virtio NIC==  [ nicA ]--bridge--[ nicB ]  ==virtio NIC==  tap = b-r-a
    tbf (rate a->b)              netem b->a    netem a->b                  tbf (rate b->a)

Each impaired link takes one *port*: two taps and the guest's two NICs, bridged inside. QEMU
runs in a holding namespace of its own (it reaches nothing else); a lab moves a port's taps
into the namespaces of the link's nodes (renamed to the link's interface names) and moves
them back when it stops. Rate stays on the host (tbf is exact there); delay, jitter and loss
are netem qdiscs on the guest NICs' egress, one per direction. The guest is driven over its
script stdin/stdout (``testbed.host.appliance_guest``); when this process dies, the guest's stdin
ends and the VM powers off, and ``testbed clean`` removes it after a kill -9 all the same.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import state
from .appliance_guest import READY
from .nsexec import CommandError, ns_prefix, run

GUEST_SCRIPT = Path(__file__).with_name("appliance_guest.py")
DEFAULT_PORTS = int(os.environ.get("TESTBED_APPLIANCE_PORTS", "4"))
MEMORY = os.environ.get("TESTBED_APPLIANCE_MEMORY", "1G")
BOOT_TIMEOUT_S = float(os.environ.get("TESTBED_VM_BOOT_TIMEOUT", "240"))
CALL_TIMEOUT_S = 120.0


class ApplianceError(RuntimeError):
    """The appliance could not be started, or a command inside it failed."""


@dataclass
class Port:
    """One impaired link's way through the appliance: a tap and a guest NIC per link end."""

    index: int
    taps: tuple[str, str]
    macs: tuple[str, str]
    nics: tuple[str, str] = ("", "")
    bridge: str = ""
    in_use: bool = False


@dataclass
class Appliance:
    """A running appliance VM with ``len(ports)`` link ports. Start with :meth:`start`."""

    kernel: str
    accelerator: str = "tcg"
    nports: int = DEFAULT_PORTS
    ident: str = field(default_factory=lambda: uuid.uuid4().hex[:5])
    ports: list[Port] = field(default_factory=list)
    boot_s: float = 0.0

    def __post_init__(self) -> None:
        self.netns = f"tb-appl-{self.ident}"
        self.state = state.RunState(f"appliance-{os.getpid()}-{self.ident}", os.getpid())
        self._proc: subprocess.Popen[str] | None = None
        self._answers: queue.Queue[dict[str, Any] | None] = queue.Queue()
        self._lock = threading.Lock()
        self._next_id = 0
        self._tail: list[str] = []
        for i in range(self.nports):
            taps = (f"tq{self.ident}{i}a", f"tq{self.ident}{i}b")
            macs = tuple(f"52:54:{int(self.ident[:2], 16):02x}:{int(self.ident[2:4], 16):02x}:"
                         f"{i:02x}:0{side}" for side in (1, 2))
            self.ports.append(Port(i, taps, macs))  # type: ignore[arg-type]

    # -- lifecycle ---------------------------------------------------------------------------
    def qemu_options(self) -> list[str]:
        """The QEMU arguments of the ports' NICs (taps QEMU creates in its namespace)."""
        opts: list[str] = []
        for port in self.ports:
            for tap, mac in zip(port.taps, port.macs, strict=True):
                opts += ["-netdev", f"tap,id={tap},ifname={tap},script=no,downscript=no",
                         "-device", f"virtio-net-pci,netdev={tap},mac={mac}"]
        return opts

    def command(self) -> list[str]:
        """The virtme-ng command that boots the guest and runs the control loop."""
        from .vm import vng_command

        return vng_command(self.kernel, self.accelerator,
                           f"/usr/bin/python3 -I -S {GUEST_SCRIPT}", (), cpus=1,
                           memory=MEMORY, qemu_opts=self.qemu_options())

    def start(self) -> Appliance:
        t0 = time.monotonic()
        self.state.named_netns = [self.netns]
        self.state.save()  # first: a crash from here on leaves nothing `clean` misses
        run(["ip", "netns", "add", self.netns])
        env = dict(os.environ)
        env["PATH"] = f"{Path(sys.executable).parent}:{env.get('PATH', '/usr/bin:/bin')}"
        self._proc = subprocess.Popen(
            ns_prefix(f"/run/netns/{self.netns}") + self.command(), stdin=subprocess.PIPE,
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
            start_new_session=True)
        self.state.processes = [self._proc.pid]
        self.state.save()
        threading.Thread(target=self._read_answers, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()
        try:
            first = self._answers.get(timeout=BOOT_TIMEOUT_S)
        except queue.Empty:
            first = None
        if first is None or first.get("ready") is not True:
            tail = "".join(self._tail[-20:]) or "(none)"
            self.stop()
            raise ApplianceError(f"the impairment appliance did not start within "
                                 f"{BOOT_TIMEOUT_S:.0f} s (kernel {self.kernel}); last "
                                 f"output:\n{tail}")
        try:
            self._setup_ports()
        except BaseException:
            self.stop()
            raise
        self.boot_s = round(time.monotonic() - t0, 1)
        return self

    def _read_answers(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            if line.strip() == READY:
                self._answers.put({"ready": True})
            elif line.startswith("{"):
                with contextlib.suppress(ValueError):
                    self._answers.put(json.loads(line))
            else:
                self._tail.append(line)
                del self._tail[:-50]
        self._answers.put(None)  # the guest is gone

    def _read_stderr(self) -> None:
        assert self._proc is not None and self._proc.stderr is not None
        for line in self._proc.stderr:
            self._tail.append(line)
            del self._tail[:-50]

    def _setup_ports(self) -> None:
        found = self._request({"nics": True})["nics"]
        cmds = [["modprobe", "sch_netem"], ["modprobe", "bridge"],
                ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"]]
        for port in self.ports:
            try:
                port.nics = (found[port.macs[0]], found[port.macs[1]])
            except KeyError:
                raise ApplianceError(f"the appliance has no NIC for port {port.index} "
                                     f"(MACs {port.macs}; it has {found})") from None
            port.bridge = f"br{port.index}"
            cmds += [["ip", "link", "add", port.bridge, "type", "bridge", "stp_state", "0",
                      "forward_delay", "0"]]
            for nic in port.nics:
                cmds += [["ip", "link", "set", nic, "master", port.bridge],
                         ["ip", "link", "set", nic, "up"]]
            cmds.append(["ip", "link", "set", port.bridge, "up"])
        self.call(cmds)
        for port in self.ports:  # the taps wait in the holding namespace, up
            for tap in port.taps:
                run(["ip", "link", "set", tap, "up"], f"/run/netns/{self.netns}")

    def stop(self) -> None:
        """Power the guest off (its stdin ends), kill what is left, remove the namespace."""
        proc, self._proc = self._proc, None
        if proc is not None:
            with contextlib.suppress(OSError):
                assert proc.stdin is not None
                proc.stdin.close()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        from .clean import CleanReport, remove_named_namespaces

        remove_named_namespaces(CleanReport(), only={self.netns})
        self.state.remove()

    @property
    def alive(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    # -- control -----------------------------------------------------------------------------
    def _request(self, req: dict[str, Any]) -> dict[str, Any]:
        with self._lock:
            if not self.alive:
                raise ApplianceError("the impairment appliance is not running")
            assert self._proc is not None and self._proc.stdin is not None
            self._next_id += 1
            req = {**req, "id": self._next_id}
            self._proc.stdin.write(json.dumps(req) + "\n")
            self._proc.stdin.flush()
            while True:
                try:
                    answer = self._answers.get(timeout=CALL_TIMEOUT_S)
                except queue.Empty:
                    raise ApplianceError(f"the appliance did not answer within "
                                         f"{CALL_TIMEOUT_S:.0f} s") from None
                if answer is None:
                    raise ApplianceError("the impairment appliance stopped: "
                                         + "".join(self._tail[-10:]))
                if answer.get("id") == req["id"]:
                    return answer

    def call(self, cmds: list[list[str]], check: bool = True) -> list[str]:
        """Run ``cmds`` in order inside the guest; their stdout, or an error naming the one
        that failed (``check=False``: every command runs, failures are ignored)."""
        if not cmds:
            return []
        results = self._request({"cmds": cmds, "keep_going": not check})["results"]
        for argv, res in zip(cmds, results, strict=False):
            if res["rc"] != 0 and check:
                raise CommandError(f"`{' '.join(argv)}` in the impairment appliance failed "
                                   f"({res['rc']}): {(res['err'] or res['out']).strip()}")
        return [str(r["out"]) for r in results]

    # -- ports -------------------------------------------------------------------------------
    def acquire(self) -> Port:
        for port in self.ports:
            if not port.in_use:
                port.in_use = True
                return port
        raise ApplianceError(f"all {len(self.ports)} ports of the impairment appliance are "
                             f"in use (TESTBED_APPLIANCE_PORTS sizes it)")

    def release(self, port: Port) -> None:
        """Take a port back once its taps are home again (their netem removed)."""
        with contextlib.suppress(CommandError, ApplianceError):
            self.call([["tc", "qdisc", "del", "dev", nic, "root"] for nic in port.nics],
                      check=False)
        port.in_use = False

    def holding(self) -> str:
        return f"/run/netns/{self.netns}"

    def free_ports(self) -> int:
        return sum(not p.in_use for p in self.ports)


#: "auto": netem links go through the appliance when this kernel has no netem; "always":
#: through it even where the kernel has netem (to test the appliance there); "never": a lab
#: with netem links fails on a kernel without netem.
POLICY = os.environ.get("TESTBED_APPLIANCE", "auto")


@functools.cache
def _kernel_has_netem() -> bool:
    from .doctor import probe_network

    return probe_network()["netem"]


def needed() -> bool:
    """Whether netem links must pass through the appliance: this kernel has no netem."""
    from .doctor import IN_VM_ENV

    if os.environ.get(IN_VM_ENV) == "1":
        return False
    if POLICY == "always":
        return True
    if _kernel_has_netem():
        return False
    if POLICY == "never":
        raise ApplianceError("this kernel has no netem and the impairment appliance is "
                             "switched off (--vm never / TESTBED_APPLIANCE=never)")
    return True


_shared: Appliance | None = None
_shared_lock = threading.Lock()


def shared(ports: int = 1) -> Appliance:
    """This process's appliance with at least ``ports`` free ports, booted on first use (one
    boot per process; a bigger one replaces an idle one that is too small). Stopped at exit."""
    global _shared
    with _shared_lock:
        if _shared is not None and _shared.alive and _shared.free_ports() >= ports:
            return _shared
        if _shared is not None:
            if any(p.in_use for p in _shared.ports) and _shared.alive:
                raise ApplianceError(f"the impairment appliance has "
                                     f"{_shared.free_ports()} free ports, {ports} needed")
            _shared.stop()
        from . import doctor

        tools = doctor.probe_tools()  # the tools only: the kernel was probed already
        need = ("full_kernel", "vng", "qemu", "busybox_static")
        absent = [t for t in need if not tools[t]]
        if absent:
            raise ApplianceError("an impairment appliance needs a full kernel, virtme-ng, "
                                 "qemu and busybox-static: "
                                 + "; ".join(f"{t}: {doctor.FIXES[t]}" for t in absent))
        kernel = str(tools["full_kernel"])
        kvm_ok, _ = doctor.kvm_can_boot(Path(kernel), tools["vng"])
        accel = "kvm" if kvm_ok else "tcg"
        print(f"testbed: booting the impairment appliance ({Path(kernel).name}, {accel}, "
              f"{max(ports, DEFAULT_PORTS)} link ports) for the netem links", file=sys.stderr,
              flush=True)
        _shared = Appliance(str(kernel), accel, max(ports, DEFAULT_PORTS)).start()
        print(f"testbed: impairment appliance up after {_shared.boot_s:.0f} s",
              file=sys.stderr, flush=True)
        return _shared


def current() -> Appliance | None:
    """The shared appliance if one is running."""
    return _shared if _shared is not None and _shared.alive else None


def shutdown() -> None:
    """Stop the shared appliance (idempotent)."""
    global _shared
    with _shared_lock:
        if _shared is not None:
            _shared.stop()
            _shared = None


atexit.register(shutdown)

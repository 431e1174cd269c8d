"""Bring a :class:`topologies.model.Network` to life with Mininet, and always tear it down.

Nodes are Mininet hosts (one network namespace each, a shell started by ``mnexec``); links
are veth pairs. Addresses, forwarding, link shaping (``testbed.lab.shaping``), routes and the
topology's own commands are applied through the node's namespace. Every node and process is
recorded in the run registry (``testbed.host.state``) so a crashed run can be cleaned up.
"""

from __future__ import annotations

import contextlib
import json
import os
import statistics
import subprocess
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from topologies.model import Link, Network

from ..host import appliance, state
from ..host.nsexec import ns_prefix, run
from . import batch, firewall, routing, services, shaping, zygote

TAP_QUEUE_PKTS = 20_000
CALIBRATION_STEPS = 3


class LabError(RuntimeError):
    """The lab could not be built; the message names the node or link."""


@dataclass
class ApplianceLink:
    """A netem link carried by the impairment appliance (``testbed.host.appliance``)."""

    link: Link
    port: appliance.Port
    calibration: dict[str, Any] = field(default_factory=dict)
    guest_plans: tuple[shaping.QdiscPlan, ...] = ()


class Lab:
    """A running network. Use as a context manager: ``with Lab(net) as lab: ...``."""

    def __init__(self, network: Network, run_id: str | None = None) -> None:
        self.network = network
        self.run_id = run_id or f"run-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.state = state.RunState(self.run_id, os.getpid())
        self.qdisc_plans: dict[tuple[str, str], shaping.QdiscPlan] = {}
        self.stack_mode: str | None = None  # "vrf" or "policy" once stacks are set up
        self._net: Any = None
        self._procs: list[subprocess.Popen[Any] | zygote.ZygoteChild] = []
        self.appliance: appliance.Appliance | None = None
        self.appliance_links: list[ApplianceLink] = []
        self._on_stop: list[Callable[[], object]] = []

    # -- lifecycle ---------------------------------------------------------------------------
    def __enter__(self) -> Lab:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, et: type[BaseException] | None, ev: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def start(self) -> None:
        from mininet.link import Link as MnLink
        from mininet.log import setLogLevel
        from mininet.net import Mininet

        setLogLevel(os.environ.get("TESTBED_MININET_LOG", "warning"))
        services.ensure_congestion_control(self.network.host_tcp.congestion)
        switches = [n for n in self.network.nodes.values() if n.role == "switch"]
        if any(n.kind == "ovs" for n in switches):
            services.ensure_ovs()  # only when the topology uses Open vSwitch
        # switches live in the root namespace: recorded by name, never by namespace
        self.state.ovs_bridges = [n.name for n in switches if n.kind == "ovs"]
        self.state.root_links = [n.name for n in switches if n.kind == "bridge"] + [
            end.name for li in self.network.links for end in (li.a, li.b)
            if end.node in {n.name for n in switches}]
        self.state.save()
        impaired = [li for li in self.network.links
                    if li.a_to_b.needs_netem or li.b_to_a.needs_netem]
        if impaired and appliance.needed():
            self.appliance = appliance.shared(len(impaired))
        else:
            impaired = []
        net = Mininet(controller=None, build=False, autoSetMacs=False, waitConnected=False)
        self._net = net
        for node in self.network.nodes.values():
            if node.role == "switch":
                net.addSwitch(node.name, **_switch_params(node.kind))
            else:
                net.addHost(node.name, ip=None)
        for link in self.network.links:
            if link in impaired:
                continue  # its ends are the appliance's taps
            net.addLink(link.a.node, link.b.node, cls=MnLink, intfName1=link.a.name,
                        intfName2=link.b.name, addr1=link.a.mac, addr2=link.b.mac)
        net.build()
        for sw in switches:
            net[sw.name].start([])
        for name, node in self.network.nodes.items():
            if node.role == "switch":
                continue
            pid = net[name].pid
            self.state.node_pids[name] = pid
            self.state.netns_inodes[name] = state.netns_inode(pid) or 0
        self.state.save()
        for link in impaired:
            self._attach(link)
        self._configure()
        for al in self.appliance_links:
            self._impair(al)

    def on_stop(self, undo: Callable[[], object]) -> None:
        """Call ``undo`` first when the lab stops (last registered, first called; errors
        noted and the rest of the teardown done): for what was added to a running lab
        outside its nodes, e.g. a Soft-RoCE path (``testbed.lab.roce``)."""
        self._on_stop.append(undo)

    def stop(self) -> None:
        undo, self._on_stop = self._on_stop[::-1], []
        failed: list[str] = []
        for fn in undo:
            try:
                fn()
            except Exception as exc:  # the nodes, links and processes still go
                failed.append(f"{getattr(fn, '__qualname__', fn)}: {exc}")
        try:
            self._stop_network()
        finally:
            if failed:
                raise LabError("lab teardown: " + "; ".join(failed))

    def _stop_network(self) -> None:
        for al in self.appliance_links:
            self._detach(al)
        self.appliance_links.clear()
        for proc in self._procs:
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        self._procs.clear()
        # Anything else started in the nodes (a resumed guest, a detached helper) goes too.
        from ..host.clean import CleanReport, kill_namespaces, remove_named_namespaces

        inodes = {ino: name for name, ino in self.state.netns_inodes.items() if ino}
        kill_namespaces(inodes, CleanReport(), spare={p for p in self.state.node_pids.values()})
        if self.state.named_netns:
            remove_named_namespaces(CleanReport(), only=set(self.state.named_netns))
        if self._net is not None:
            from mininet.log import setLogLevel

            setLogLevel("error")
            try:
                self._net.stop()
            finally:
                self._net = None
        self.state.remove()

    # -- configuration -----------------------------------------------------------------------
    def _configure(self) -> None:
        """Every node's setup, batched per node (few processes: see ``testbed.lab.batch``)."""
        rtt = _path_rtt_guess(self.network)
        base: dict[str, list[list[str]]] = {name: [] for name in self.network.nodes}
        for node in self.network.nodes.values():
            if node.role == "switch":
                continue  # the root namespace: never touch its sysctls
            fwd = "1" if node.forwarding else "0"
            base[node.name] += [["ip", "link", "set", "lo", "up"],
                                ["sysctl", "-qw", f"net.ipv4.ip_forward={fwd}"]]
            sysctls = node.sysctls + (self.network.host_tcp.sysctls() if node.role == "host"
                                      else ())
            base[node.name] += [["sysctl", "-qw", f"{k}={v}"] for k, v in sysctls]
        for link in self.network.links:
            for end in (link.a, link.b):
                cmds = base[end.node]
                cmds += [["ip", "addr", "add", addr, "dev", end.name] for addr in end.addrs]
                cmds.append(["ip", "link", "set", end.name, "up"])
                spec, burst = link.spec_from(end.node), 0
                if self._carried(link):  # the appliance does delay, jitter and loss
                    spec, burst = shaping.host_part(spec), shaping.GSO_BURST
                if spec.shaped:  # a new veth has no root qdisc: skip the plan's "del"
                    qplan = shaping.plan(end.name, spec, rtt_ms=rtt, min_burst=burst)
                    cmds += [list(c) for c in qplan.commands[1:]]
                    self.qdisc_plans[(end.node, end.name)] = qplan
        for node, cmds in base.items():
            self.run_many(node, cmds)
        self.stack_mode = routing.setup_stacks(self)  # VRFs/rules before their routes
        routes: dict[str, list[list[str]]] = {}
        for route in self.network.routes:
            routes.setdefault(route.node, []).append(route.command())
        for node, cmds in routes.items():
            self.run_many(node, cmds)
        routing.apply_caps(self)
        firewall.apply(self)
        for node, cmds in self.network.commands.items():
            self.run_many(node, cmds)
        if self.network.guests is not None:
            self._make_guest_slots()

    # -- links through the impairment appliance --------------------------------------------
    def _carried(self, link: Link) -> bool:
        return any(al.link is link for al in self.appliance_links)

    def _attach(self, link: Link) -> None:
        """Give ``link`` a port of the appliance: its taps become the link's two ends."""
        assert self.appliance is not None
        for end in (link.a, link.b):
            if self.pid(end.node) is None:
                raise LabError(f"link {link.a.node}-{link.b.node}: a netem link through the "
                               f"impairment appliance cannot end at switch {end.node!r}")
        port = self.appliance.acquire()
        self.appliance_links.append(ApplianceLink(link, port))
        for end, tap in zip((link.a, link.b), port.taps, strict=True):
            run(["ip", "link", "set", tap, "netns", str(self.pid(end.node))],
                self.appliance.holding())
            # a deep tap queue: QEMU reads it in bursts between guest time slices
            cmds = [["ip", "link", "set", "dev", tap, "name", end.name],
                    ["ip", "link", "set", "dev", end.name, "txqueuelen", str(TAP_QUEUE_PKTS)]]
            if end.mac:
                cmds.append(["ip", "link", "set", "dev", end.name, "address", end.mac])
            if link.spec_from(end.node).loss_pct or link.spec_from(end.node).jitter_ms:
                # one segment per packet: netem drops or delays whole GSO super-packets
                cmds.append(["ethtool", "-K", end.name, "tso", "off", "gso", "off"])
            self.run_many(end.node, cmds)

    def _impair(self, al: ApplianceLink) -> None:
        """Calibrate the appliance's own delay on ``al``'s link and install netem for the rest
        of the asked delay, per direction: the RTT without netem first, then (netem's timers
        cost a TCG guest more) corrected by what the RTT measured with it is off."""
        assert self.appliance is not None
        link, (nic_a, nic_b) = al.link, al.port.nics
        rtt = _path_rtt_guess(self.network)
        target = _peer_ip(link)
        asked = link.a_to_b.delay_ms + link.b_to_a.delay_ms
        dirs = ((nic_b, link.a_to_b), (nic_a, link.b_to_a))  # netem on the egress towards
        floor = self._rtt_ms(link.a.node, target, warm=True) if target else None
        own = floor / 2 if floor is not None else 0.0  # per direction, assumed symmetric
        steps: list[dict[str, float | None]] = []
        for _ in range(CALIBRATION_STEPS):
            applied = [max(0.0, spec.delay_ms - own) for _, spec in dirs]
            plans = tuple(shaping.appliance_plan(nic, spec, d, rtt)
                          for (nic, spec), d in zip(dirs, applied, strict=True))
            self.appliance.call([list(c) for p in plans for c in p.commands])
            measured = self._rtt_ms(link.a.node, target) if target else None
            steps.append({"applied_delay_ms": round(applied[0], 3), "rtt_ms": measured})
            if measured is None or abs(measured - asked) <= max(0.005 * asked, 0.1) \
                    or not any(applied):
                break
            own += (measured - asked) / 2
        al.guest_plans = plans
        al.calibration = {
            "appliance_rtt_ms": floor, "asked_rtt_ms": asked,
            "applied_delay_ms": [round(d, 3) for d in applied], "steps": steps,
            "measured_rtt_ms": measured,
            "below_floor": floor is not None and asked < floor}

    def _rtt_ms(self, node: str, ip: str, warm: bool = False) -> float | None:
        """The median ping RTT from ``node`` to ``ip`` (after a warm-up: the first packets
        through a cold TCG guest take hundreds of ms)."""
        from ..measure.path import ping

        if warm:
            ping(self, node, ip, count=5, interval_s=0.05)
        got = ping(self, node, ip, count=20, interval_s=0.02)
        return statistics.median(got["rtts_ms"]) if got.get("rtts_ms") else None

    def _detach(self, al: ApplianceLink) -> None:
        """Bring the port's taps home to the appliance's namespace (best effort)."""
        assert self.appliance is not None
        for end, tap in zip((al.link.a, al.link.b), al.port.taps, strict=True):
            with contextlib.suppress(Exception):
                self.run_many(end.node, [
                    ["ip", "link", "set", "dev", end.name, "down"],
                    ["ip", "addr", "flush", "dev", end.name],
                    ["ip", "link", "set", "dev", end.name, "name", tap],
                    ["ip", "link", "set", "dev", tap, "netns", self.appliance.netns]])
            with contextlib.suppress(Exception):
                holding = self.appliance.holding()
                run(["tc", "qdisc", "del", "dev", tap, "root"], holding, check=False)
                run(["ip", "link", "set", tap, "up"], holding)
        self.appliance.release(al.port)

    def _make_guest_slots(self) -> None:
        """Each guest slot: a named namespace, its ``eth0`` joined to port ``vm<N>`` of the
        host's vSwitch (up at the guest's home, down where it may be migrated to)."""
        from topologies.guests import GUEST_DEV, VSWITCH

        plan = self.network.guests
        names = [self.slot_netns(slot.guest, slot.host) for slot in plan.slots]
        self.state.named_netns.extend(names)
        self.state.save()  # recorded first: a crash from here on leaves nothing `clean` misses
        batch.run_many([["ip", "netns", "add", ns] for ns in names], None)
        per_host: dict[str, list[list[str]]] = {}
        for slot, ns in zip(plan.slots, names, strict=True):
            port = slot.vswitch_port
            per_host.setdefault(slot.host, []).extend([
                ["ip", "link", "add", port, "type", "veth", "peer", "name", GUEST_DEV,
                 "netns", ns],
                ["ip", "link", "set", port, "master", VSWITCH],
                ["ip", "link", "set", port, "up" if slot.home else "down"]])
        for host, cmds in per_host.items():
            self.run_many(host, cmds)
        for slot, ns in zip(plan.slots, names, strict=True):
            batch.run_many(plan.guest_commands(slot), self.netns(ns))

    def slot_netns(self, guest: str, host: str) -> str:
        """The named namespace of ``guest``'s slot on ``host``."""
        slot = self.network.guests.slot(guest, host)
        return f"tb-{self.run_id.rsplit('-', 1)[-1]}-g{slot.index}"

    # -- use ---------------------------------------------------------------------------------
    def pid(self, node: str) -> int | None:
        """The PID whose network namespace is ``node``'s (None: a switch, root namespace)."""
        if node in self.network.nodes and self.network.nodes[node].role == "switch":
            return None
        try:
            return self.state.node_pids[node]
        except KeyError:
            raise LabError(f"no node {node!r} in topology {self.network.name!r}") from None

    def netns(self, where: str) -> int | str | None:
        """A node's namespace (its PID) or a guest slot's (its path)."""
        if where in self.state.named_netns:
            return f"/run/netns/{where}"
        return self.pid(where)

    def run(self, node: str, argv: Sequence[str], check: bool = True,
            timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
        """Run a command in ``node``'s network namespace and wait for it."""
        return run(argv, self.pid(node), check=check, timeout=timeout)

    def run_many(self, node: str, cmds: Sequence[Sequence[str]]) -> None:
        """Run configuration commands in ``node`` with as few processes as possible."""
        batch.run_many(cmds, self.pid(node))

    def popen(self, node: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen[Any]:
        """Start a process in ``node``'s namespace (a node, or a guest slot's namespace name);
        it is killed when the lab stops."""
        return self._track(subprocess.Popen(ns_prefix(self.netns(node)) + list(argv), **kw))

    def _track(self, proc: Any) -> Any:
        """Record a started process: killed at stop, and in the registry for ``clean``."""
        self._procs.append(proc)
        self.state.processes.append(proc.pid)
        self.state.save()
        return proc

    def spawn_agent(self, node: str, args: Sequence[str], *, stdin: int | None = None,
                    stdout: int | None = None, stderr: int | None = None,
                    text: bool = False, entry: str = "agents"
                    ) -> subprocess.Popen[Any] | zygote.ZygoteChild:
        """Start ``python -m agents ARGS`` (``entry``: another of ``zygote.ENTRIES``) in
        ``node``'s namespace (a node, or a guest slot's namespace name), forked from the warm
        fork server (``testbed.lab.zygote``) when there is one; killed when the lab stops."""
        zyg = zygote.shared()
        if zyg is None:
            module = [sys.executable, "-m", zygote.ENTRIES[entry]]
            return self.popen(node, [*module, *args], stdin=stdin, stdout=stdout,
                              stderr=stderr, text=text)
        return self._track(zyg.spawn(list(args), self.netns(node),
                                     stdin=subprocess.DEVNULL if stdin is None else stdin,
                                     stdout=stdout, stderr=stderr, text=text, entry=entry))

    def links_readback(self) -> list[dict[str, object]]:
        """Each shaped interface: what was asked and what the kernel holds; for links through
        the impairment appliance also its netem (asked, held by the guest's kernel) and the
        calibration (the appliance's own RTT, the delays applied, the RTT measured)."""
        out: list[dict[str, object]] = []
        for (node, dev), qplan in self.qdisc_plans.items():
            out.append({"node": node, "dev": dev, "asked": shaping.describe(qplan),
                        "kernel": shaping.readback(dev, self.pid(node))})
        for al in self.appliance_links:
            out.append({"node": "appliance", "dev": f"{al.link.a.name}<->{al.link.b.name}",
                        "link": [f"{al.link.a.node}:{al.link.a.name}",
                                 f"{al.link.b.node}:{al.link.b.name}"],
                        "asked": [shaping.describe(p) for p in al.guest_plans],
                        "kernel": self.appliance_qdiscs(al),
                        "calibration": al.calibration})
        return out

    def appliance_qdiscs(self, al: ApplianceLink) -> list[dict[str, object]]:
        """What the appliance's kernel holds on the link's two guest NICs."""
        assert self.appliance is not None
        outs = self.appliance.call([["tc", "-s", "-j", "qdisc", "show", "dev", nic]
                                    for nic in al.port.nics])
        return [q for out in outs for q in json.loads(out or "[]")]

    def emulator_drops(self) -> dict[str, int]:
        """Packets dropped by the emulation, per shaped interface (its bottleneck queue) and
        per appliance link (its netem queues and the taps' rings towards QEMU: never the
        network's, always the emulator's)."""
        drops = {f"{n}:{d}": shaping.qdisc_drops(d, self.pid(n)) for n, d in self.qdisc_plans}
        for al in self.appliance_links:
            rings = sum(_tx_dropped(end.name, self.pid(end.node))
                        for end in (al.link.a, al.link.b))
            drops[f"appliance:{al.link.a.name}<->{al.link.b.name}"] = rings + sum(
                int(q.get("drops", 0)) for q in self.appliance_qdiscs(al))
        return drops


def _switch_params(kind: str | None) -> dict[str, Any]:
    if kind == "ovs":
        from mininet.node import OVSSwitch

        return {"cls": OVSSwitch, "failMode": "standalone", "inNamespace": False}
    from mininet.nodelib import LinuxBridge

    return {"cls": LinuxBridge, "inNamespace": False}


def _tx_dropped(dev: str, pid: int | None) -> int:
    """The kernel's count of packets ``dev`` dropped on transmit (a tap: its ring was full)."""
    out = run(["ip", "-s", "-j", "link", "show", "dev", dev], pid).stdout
    return int(json.loads(out)[0]["stats64"]["tx"]["dropped"])


def _peer_ip(link: Link) -> str | None:
    """Link end b's first address, the target of a calibration ping from end a."""
    import ipaddress

    for addr in link.b.addrs:
        ip = ipaddress.ip_interface(addr)
        if ip.version == 4 and link.a.addrs:
            return str(ip.ip)
    return None


def _path_rtt_guess(network: Network) -> float:
    """The largest configured round trip over one link, used to size bottleneck queues."""
    rtts = [li.a_to_b.delay_ms + li.b_to_a.delay_ms for li in network.links]
    return max(rtts, default=0.0)

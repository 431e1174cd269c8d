"""The network plan: pure data that says WHAT a topology is.

A topology builder returns a :class:`Network`; the lab (``testbed.lab.lab``) turns it into
Mininet nodes, veth links, addresses, shaping and routes. Nothing here touches the kernel.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any, Literal

NodeRole = Literal["host", "router", "gateway", "switch"]


@dataclass(frozen=True)
class LinkSpec:
    """Impairments of one direction of a link, applied on the sending interface's egress.

    ``delay_ms`` is the one-way delay in this direction (an RTT of 2*d needs d each way).
    """

    bw_mbps: float | None = None
    delay_ms: float = 0.0
    jitter_ms: float = 0.0
    loss_pct: float = 0.0
    reorder: bool = False
    queue_pkts: int | None = None

    def __post_init__(self) -> None:
        checks = [
            (self.bw_mbps is None or self.bw_mbps > 0, "bw_mbps must be > 0"),
            (self.delay_ms >= 0, "delay_ms must be >= 0"),
            (self.jitter_ms >= 0, "jitter_ms must be >= 0"),
            (0 <= self.loss_pct <= 100, "loss_pct must be within 0..100"),
            (self.queue_pkts is None or self.queue_pkts > 0, "queue_pkts must be > 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(f"{msg} (got {self})")

    @property
    def needs_netem(self) -> bool:
        return bool(self.delay_ms or self.jitter_ms or self.loss_pct)

    @property
    def shaped(self) -> bool:
        return self.bw_mbps is not None or self.needs_netem


@dataclass(frozen=True)
class Interface:
    """One end of a link: node, interface name and its addresses (CIDR strings)."""

    node: str
    name: str
    addrs: tuple[str, ...] = ()
    mac: str | None = None


@dataclass(frozen=True)
class Link:
    """A point-to-point link (a veth pair) with per-direction impairments."""

    a: Interface
    b: Interface
    a_to_b: LinkSpec = field(default_factory=LinkSpec)
    b_to_a: LinkSpec = field(default_factory=LinkSpec)

    def spec_from(self, node: str) -> LinkSpec:
        """Impairments on the egress of ``node``'s end."""
        return self.a_to_b if node == self.a.node else self.b_to_a


@dataclass(frozen=True)
class Route:
    """A route on ``node``. Several next hops make an ECMP (multipath) route."""

    node: str
    dst: str
    via: tuple[str, ...] = ()
    dev: str | None = None
    table: int | None = None
    src: str | None = None

    def command(self) -> list[str]:
        """The ``ip route replace`` command that installs this route on its node."""
        cmd = ["ip", "route", "replace", self.dst]
        if len(self.via) == 1:
            cmd += ["via", self.via[0]]
        for hop in self.via if len(self.via) > 1 else ():
            cmd += ["nexthop", "via", hop]
        if self.dev:
            cmd += ["dev", self.dev]
        if self.src:
            cmd += ["src", self.src]
        if self.table is not None:
            cmd += ["table", str(self.table)]
        return cmd


@dataclass(frozen=True)
class Node:
    """A network node. A ``switch`` is a virtual switch (``kind`` "ovs" or "bridge") in the
    root namespace; every other role is a network namespace of its own."""

    name: str
    role: NodeRole = "host"
    forwarding: bool = False
    sysctls: tuple[tuple[str, str], ...] = ()
    kind: str | None = None


StackMode = Literal["auto", "vrf", "policy"]


@dataclass(frozen=True)
class FunctionStack:
    """One routed function stack of a hypervisor host (management, migration, replication).

    The stack owns interface ``dev`` with address ``addr`` (CIDR), routing table ``table`` whose
    default route goes to ``gateway``. In VRF mode the interface is enslaved to VRF device
    ``vrf`` (bound to ``table``); in policy mode ``ip rule from <addr> lookup <table>`` selects
    the table. Either way a process that binds the stack's address uses the stack's gateway.
    ``rate_mbps`` caps the stack's egress with an HTB class; ``dscp`` (e.g. ``"af41"``) marks
    its packets.
    """

    node: str
    function: str
    dev: str
    addr: str
    gateway: str
    table: int
    vrf: str
    rate_mbps: float | None = None
    dscp: str | None = None

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_interface(self.addr).ip)

    @property
    def subnet(self) -> str:
        return str(ipaddress.ip_interface(self.addr).network)


@dataclass(frozen=True)
class PortForward:
    """A published service: ``proto`` ``port`` on the gateway's public address -> inside."""

    proto: str
    port: int
    to_addr: str
    to_port: int


@dataclass(frozen=True)
class GatewayPolicy:
    """NAT and firewall of a gateway node (rendered to nftables by the lab).

    Everything arriving on ``outside_dev`` is dropped, except replies to connections made from
    inside and the ``published`` port forwards (DNAT from ``public_addr``). Connections from
    ``inside_nets`` to the outside are masqueraded behind ``public_addr``.
    """

    node: str
    outside_dev: str
    public_addr: str
    inside_nets: tuple[str, ...]
    published: tuple[PortForward, ...] = ()
    masquerade: bool = True


CONGESTION_CONTROLS = ("cubic", "bbr", "reno")


@dataclass(frozen=True)
class HostTcp:
    """The TCP stack of every host (role ``host``): congestion control and socket memory.

    Pinned by the topology, never inherited from the machine, so a figure does not change
    with the machine it ran on (measured: this CI machine's kernel defaults to BBR, Debian's
    and Ubuntu's to cubic). ``mem_max_bytes``: tcp_rmem / tcp_wmem max, enough for 1 Gbit/s
    at 300 ms RTT in one socket.
    """

    congestion: str = "cubic"
    mem_max_bytes: int = 64 << 20

    def __post_init__(self) -> None:
        if self.congestion not in CONGESTION_CONTROLS:
            raise ValueError(f"congestion control {self.congestion!r}: expected one of "
                             f"{', '.join(CONGESTION_CONTROLS)}")

    def sysctls(self) -> tuple[tuple[str, str], ...]:
        return (("net.ipv4.tcp_congestion_control", self.congestion),
                ("net.ipv4.tcp_rmem", f"4096 131072 {self.mem_max_bytes}"),
                ("net.ipv4.tcp_wmem", f"4096 16384 {self.mem_max_bytes}"))


@dataclass
class Network:
    """A whole topology: nodes, links, routes and per-node setup commands."""

    name: str
    params: dict[str, object] = field(default_factory=dict)
    nodes: dict[str, Node] = field(default_factory=dict)
    links: list[Link] = field(default_factory=list)
    routes: list[Route] = field(default_factory=list)
    commands: dict[str, list[list[str]]] = field(default_factory=dict)
    stacks: list[FunctionStack] = field(default_factory=list)
    stack_mode: StackMode = "auto"
    gateways: list[GatewayPolicy] = field(default_factory=list)
    guests: Any = None  # a topologies.guests.GuestPlan when the guests have an identity
    host_tcp: HostTcp = field(default_factory=HostTcp)  # every host's TCP (the lab sets it)

    def add_node(self, name: str, role: NodeRole = "host", forwarding: bool = False,
                 sysctls: tuple[tuple[str, str], ...] = (), kind: str | None = None) -> Node:
        if name in self.nodes:
            raise ValueError(f"node {name!r} defined twice")
        if role == "switch" and kind not in ("ovs", "bridge"):
            raise ValueError(f"switch {name!r}: kind must be 'ovs' or 'bridge' (got {kind!r})")
        node = Node(name, role, forwarding or role in ("router", "gateway"), tuple(sysctls),
                    kind)
        self.nodes[name] = node
        return node

    def add_stack(self, stack: FunctionStack) -> FunctionStack:
        if stack.node not in self.nodes:
            raise ValueError(f"stack {stack.function!r} on unknown node {stack.node!r}")
        if not any(i.name == stack.dev for i in self.interfaces(stack.node)):
            raise ValueError(f"stack {stack.function!r}: {stack.node} has no interface "
                             f"{stack.dev!r}")
        for other in self.stacks:
            if other.node == stack.node and (other.table == stack.table
                                             or other.function == stack.function):
                raise ValueError(f"{stack.node}: stack {stack.function!r} clashes with "
                                 f"{other.function!r} (same function or table)")
        self.stacks.append(stack)
        return stack

    def stacks_of(self, node: str) -> dict[str, FunctionStack]:
        return {s.function: s for s in self.stacks if s.node == node}

    def add_link(self, a: Interface, b: Interface, a_to_b: LinkSpec | None = None,
                 b_to_a: LinkSpec | None = None) -> Link:
        for end in (a, b):
            if end.node not in self.nodes:
                raise ValueError(f"link end {end.node}:{end.name}: unknown node")
            if len(end.name) > 15:
                raise ValueError(f"interface name {end.name!r} longer than 15 characters")
        spec = a_to_b or LinkSpec()
        link = Link(a, b, spec, b_to_a if b_to_a is not None else spec)
        self.links.append(link)
        return link

    def add_route(self, route: Route) -> None:
        if route.node not in self.nodes:
            raise ValueError(f"route on unknown node {route.node!r}")
        self.routes.append(route)

    def interfaces(self, node: str) -> list[Interface]:
        return [end for link in self.links for end in (link.a, link.b) if end.node == node]

    def address(self, node: str, intf: str | None = None) -> str:
        """First IPv4 address (without prefix) of ``node`` (on ``intf`` if given)."""
        for end in self.interfaces(node):
            if intf in (None, end.name) and end.addrs:
                return str(ipaddress.ip_interface(end.addrs[0]).ip)
        raise KeyError(f"{node}{':' + intf if intf else ''} has no address")

    def describe(self) -> dict[str, object]:
        """A JSON-able description: nodes, links (with both directions' settings), routes."""
        from dataclasses import asdict

        return {
            "name": self.name,
            "params": self.params,
            "nodes": [asdict(n) for n in self.nodes.values()],
            "links": [asdict(li) for li in self.links],
            "routes": [asdict(r) for r in self.routes],
            "stack_mode": self.stack_mode,
            "host_tcp": asdict(self.host_tcp),
            "stacks": [asdict(s) for s in self.stacks],
            "gateways": [asdict(g) for g in self.gateways],
            "commands": {k: [list(c) for c in v] for k, v in self.commands.items()},
        }

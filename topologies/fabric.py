"""Building blocks shared by the builders: the address plan, hosts with function stacks,
spine-leaf sites.

Address plan (deterministic: the same parameters always give the same addresses):

- each leaf (or router with hosts) gets a host block ``10.N.0.0/16``, N = 1, 2, ... in build
  order; host ``h`` on it has ``10.N.h.0/24``, split into one ``/29`` per function ``k``
  (management 0, migration 1, replication 2): gateway ``10.N.h.(8k+1)``, host ``10.N.h.(8k+2)``;
- router-to-router links inside a site take ``/31``s from ``10.254.0.0/16``;
- WAN links take ``/31``s from ``10.253.0.0/16``;
- cloud networks live in ``172.16.0.0/16`` (see ``topologies.cloud``).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from .model import FunctionStack, Interface, LinkSpec, Network, Route

FUNCTIONS = ("management", "migration", "replication")
SHORT = {"management": "mgmt", "migration": "mig", "replication": "repl"}
TABLES = {"management": 10, "migration": 20, "replication": 30}
#: fib_multipath_hash_policy per ``ecmp_hash``. "l4" is the custom policy (3) over the 5-tuple
#: (fib_multipath_hash_fields 0x37: addresses, protocol, ports), not policy 1: policy 1 takes
#: the hash a forwarded packet already carries (route.c, "short-circuit if we already have L4
#: hash present"), and a veth hands the leaf the sending socket's own hash, which TCP draws
#: anew after every retransmission timeout (sk_rethink_txhash). A connection then hops from
#: spine to spine mid-transfer (the default suite's bursts: 1 to 5 of 39 migrations per run
#: sent 1-41 % of their data over the other spine), where a switch, hashing the headers,
#: keeps it on one path for its life.
ECMP_HASH = {"l3": "0", "l4": "3"}
L4_HASH_FIELDS = "0x0037"
MAX_BLOCKS = 250


class PlanError(ValueError):
    """A topology's parameters are invalid; the message names the parameter."""


@dataclass
class AddressPlan:
    next_block: int = 1
    next_p2p: dict[str, int] = field(default_factory=lambda: {"fabric": 0, "wan": 0})

    POOLS = {"fabric": "10.254.0.0/16", "wan": "10.253.0.0/16"}

    def host_block(self) -> int:
        if self.next_block > MAX_BLOCKS:
            raise PlanError(f"more than {MAX_BLOCKS} leaves/site routers: address plan full")
        self.next_block += 1
        return self.next_block - 1

    def p2p(self, pool: str = "fabric") -> tuple[str, str]:
        """Two ends of the next /31 of ``pool`` (CIDR strings)."""
        net = ipaddress.ip_network(self.POOLS[pool])
        i = self.next_p2p[pool]
        if 2 * i + 1 >= net.num_addresses:
            raise PlanError(f"{pool} link pool {net} exhausted")
        self.next_p2p[pool] = i + 1
        base = net.network_address + 2 * i
        return f"{base}/31", f"{base + 1}/31"


def function_subnet(block: int, host: int, k: int) -> tuple[str, str]:
    """(gateway CIDR, host CIDR) of function ``k`` of host ``host`` in block ``block``."""
    if not 1 <= host <= 254:
        raise PlanError(f"host index {host} outside 1..254")
    return f"10.{block}.{host}.{8 * k + 1}/29", f"10.{block}.{host}.{8 * k + 2}/29"


@dataclass(frozen=True)
class StackOptions:
    """Which function stacks each hypervisor host gets, and their caps and marks."""

    functions: tuple[str, ...] = FUNCTIONS
    rate_mbps: Mapping[str, float] = field(default_factory=dict)
    dscp: Mapping[str, str] = field(default_factory=dict)

    @classmethod
    def from_params(cls, stacks: bool | Sequence[str], rate: Mapping[str, float] | None,
                    dscp: Mapping[str, str] | None) -> StackOptions | None:
        if stacks is False:
            if rate or dscp:
                raise PlanError("stack_rate_mbps/stack_dscp given but stacks=False")
            return None
        funcs = FUNCTIONS if stacks is True else tuple(stacks)
        if not funcs:
            raise PlanError("stacks: give at least one function, or stacks=False")
        for f in funcs:
            if f not in FUNCTIONS:
                raise PlanError(f"stacks: unknown function {f!r} (known: {', '.join(FUNCTIONS)})")
        if len(set(funcs)) != len(funcs):
            raise PlanError(f"stacks: a function is listed twice in {list(funcs)}")
        for name, mapping in (("stack_rate_mbps", rate or {}), ("stack_dscp", dscp or {})):
            for f in mapping:
                if f not in funcs:
                    raise PlanError(f"{name}: {f!r} is not one of the stacks {list(funcs)}")
        for f, r in (rate or {}).items():
            if not r > 0:
                raise PlanError(f"stack_rate_mbps[{f!r}] must be > 0 (got {r})")
        for f, d in (dscp or {}).items():
            if not _dscp_ok(d):
                raise PlanError(f"stack_dscp[{f!r}]: {d!r} is not a DSCP name (cs0-cs7, af11-"
                                f"af43, ef) or number 0-63")
        return cls(funcs, dict(rate or {}), dict(dscp or {}))


def _dscp_ok(d: str) -> bool:
    names = {f"cs{i}" for i in range(8)} | {f"af{i}{j}" for i in (1, 2, 3, 4)
                                            for j in (1, 2, 3)} | {"ef", "be"}
    return str(d).lower() in names or (str(d).isdigit() and 0 <= int(d) <= 63)


def attach_hosts(net: Network, plan: AddressPlan, router: str, count: int, host_prefix: str,
                 link: LinkSpec, stacks: StackOptions | None) -> list[str]:
    """Hosts ``{host_prefix}{i}`` on ``router``; returns their names.

    Each host gets one link per function stack (or one plain link ``-eth0``); the router's
    address on a function's link is that function's default gateway.
    """
    block = plan.host_block()
    hosts = []
    for h in range(1, count + 1):
        host = f"{host_prefix}{h}"
        net.add_node(host, "host")
        hosts.append(host)
        funcs = stacks.functions if stacks else ("data",)
        first_gw = None
        for k, func in enumerate(funcs):
            gw, addr = function_subnet(block, h, FUNCTIONS.index(func) if stacks else 0)
            short = SHORT.get(func, "eth0")
            host_if = f"{host}-{short}"
            rtr_if = f"{router}-h{h}" + (f"-{short}" if stacks else "")
            net.add_link(Interface(router, rtr_if, (gw,)), Interface(host, host_if, (addr,)),
                         link)
            gw_ip = str(ipaddress.ip_interface(gw).ip)
            if k == 0:
                first_gw = gw_ip
            if stacks:
                net.add_stack(FunctionStack(
                    host, func, host_if, addr, gw_ip, TABLES[func], f"vrf-{short}",
                    stacks.rate_mbps.get(func), stacks.dscp.get(func)))
                subnet = str(ipaddress.ip_interface(addr).network)
                src = str(ipaddress.ip_interface(addr).ip)
                net.add_route(Route(host, subnet, dev=host_if, table=TABLES[func], src=src))
                net.add_route(Route(host, "default", (gw_ip,), host_if, TABLES[func], src))
        assert first_gw is not None
        net.add_route(Route(host, "default", (first_gw,)))
    return hosts


def host_block_prefix(net: Network, router: str) -> str:
    """The /16 host block of the hosts attached to ``router``."""
    for end in net.interfaces(router):
        if end.name.startswith(f"{router}-h") and end.addrs:
            ip = ipaddress.ip_interface(end.addrs[0]).ip
            return str(ipaddress.ip_network(f"{ip}/16", strict=False))
    raise KeyError(f"{router} has no hosts")


def router_sysctls(ecmp_hash: str) -> tuple[tuple[str, str], ...]:
    if ecmp_hash not in ECMP_HASH:
        raise PlanError(f"ecmp_hash must be one of {sorted(ECMP_HASH)} (got {ecmp_hash!r})")
    fields = (("net.ipv4.fib_multipath_hash_fields", L4_HASH_FIELDS),) \
        if ecmp_hash == "l4" else ()
    return (("net.ipv4.fib_multipath_hash_policy", ECMP_HASH[ecmp_hash]), *fields,
            ("net.ipv4.conf.all.rp_filter", "0"), ("net.ipv4.conf.default.rp_filter", "0"))


@dataclass(frozen=True)
class Site:
    """What a site builder made: its routers (to join to a WAN) and hypervisor hosts."""

    name: str
    border: list[str]
    leaves: list[str]
    spines: list[str]
    hosts: list[str]
    announce: dict[str, list[str]]


def fabric_site(net: Network, plan: AddressPlan, prefix: str, spines: int, leaves: int,
                hosts_per_leaf: int, host_link: LinkSpec, fabric_link: LinkSpec,
                stacks: StackOptions | None, ecmp_hash: str) -> Site:
    """A spine-leaf fabric: every leaf linked to every spine, hosts on the leaves."""
    for name, value, lo in (("spines", spines, 1), ("leaves", leaves, 1),
                            ("hosts_per_leaf", hosts_per_leaf, 1)):
        if not isinstance(value, int) or isinstance(value, bool) or value < lo:
            raise PlanError(f"{name} must be an integer >= {lo} (got {value!r})")
    if hosts_per_leaf > 99 or leaves > 99 or spines > 99:
        raise PlanError("at most 99 spines, leaves and hosts per leaf (interface names)")
    sysctls = router_sysctls(ecmp_hash)
    spine_names = [f"{prefix}s{j}" for j in range(1, spines + 1)]
    leaf_names = [f"{prefix}l{i}" for i in range(1, leaves + 1)]
    for s in spine_names:
        net.add_node(s, "router", sysctls=sysctls)
    hosts: list[str] = []
    announce: dict[str, list[str]] = {}
    for i, leaf in enumerate(leaf_names, start=1):
        net.add_node(leaf, "router", sysctls=sysctls)
        hosts += attach_hosts(net, plan, leaf, hosts_per_leaf, f"{prefix}h{i}-", host_link,
                              stacks)
        announce[leaf] = [host_block_prefix(net, leaf)]
    for j, spine in enumerate(spine_names, start=1):
        for i, leaf in enumerate(leaf_names, start=1):
            a, b = plan.p2p("fabric")
            net.add_link(Interface(spine, f"{spine}-l{i}", (a,)),
                         Interface(leaf, f"{leaf}-s{j}", (b,)), fabric_link)
    return Site(prefix.rstrip("-") or "fabric", spine_names, leaf_names, spine_names, hosts,
                announce)


def router_site(net: Network, plan: AddressPlan, prefix: str, hosts: int, host_link: LinkSpec,
                stacks: StackOptions | None, ecmp_hash: str) -> Site:
    """A single router with hosts: the smallest site."""
    if not isinstance(hosts, int) or hosts < 1 or hosts > 99:
        raise PlanError(f"hosts per site must be an integer in 1..99 (got {hosts!r})")
    router = f"{prefix}r"
    net.add_node(router, "router", sysctls=router_sysctls(ecmp_hash))
    names = attach_hosts(net, plan, router, hosts, f"{prefix}h", host_link, stacks)
    return Site(prefix.rstrip("-"), [router], [router], [], names,
                {router: [host_block_prefix(net, router)]})


def check_rate(name: str, value: float | None) -> None:
    if value is not None and (isinstance(value, bool) or not value > 0):
        raise PlanError(f"{name} must be > 0 Mbit/s or None (got {value!r})")

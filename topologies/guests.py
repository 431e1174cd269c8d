"""Guests with a network identity on a spine-leaf fabric, and how that identity moves.

Every hypervisor host gets a virtual switch (a Linux bridge ``vmbr0`` in its namespace) with
an uplink ``<host>-vm`` of its own, apart from its function stacks. A guest lives in a *slot*:
a network namespace on a host whose interface ``eth0`` (the guest's MAC and IP, the same in
every slot) hangs off port ``vm<N>`` of that host's vSwitch. The guest's home slot's port is
up; its slots on other hosts wait, port down (disconnected), for a migration to bring the
guest there: the destination connects the port when the guest resumes, the source
disconnects its port once the original has ended.

How the network keeps reaching a guest that moved (``mode``):

- ``l2``: across vSwitches over a stretched VLAN: each leaf has an L2 switch for the VM
  network, the leaves' switches are joined (a leaf pair's peer link), the uplinks are access
  ports. The resumed guest announces itself (gratuitous ARP + RARP) and the switches relearn.
- ``vxlan``: a stretched L2 segment over the routed fabric: every vSwitch has a VXLAN port
  (VNI 4242, head-end replication to every other hypervisor's tunnel endpoint on its uplink,
  flood-and-learn); the announcements teach the remote VTEPs the new location.
- ``hostroute``: pure L3: the guest has a /32 and a link-local anycast gateway that every
  vSwitch answers; every router has a host route towards the guest's current leaf and
  hypervisor. At switchover the /32 is moved (the source leaf loses it, the destination leaf
  gets it, the spines follow), which is what a host-route advertisement would do.

A ``client`` slot (never moved) on another host stands for the guest's users.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field

from .model import Interface, LinkSpec, Network, Route
from .paths import compute_routes

MODES = ("l2", "vxlan", "hostroute")
VSWITCH = "vmbr0"
GUEST_DEV = "eth0"
GUEST_NET = "10.200.0.0/24"
TEP_POOL = "10.199.0.0/16"  # hypervisor uplinks (VXLAN underlay / routed guest uplinks)
ANYCAST_GW = "169.254.0.1"
ANYCAST_MAC = "02:00:00:00:00:fe"
VNI = 4242
SERVICE_PORT = 7000


@dataclass(frozen=True)
class GuestSlot:
    """A place guest ``guest`` can run: a namespace on ``host`` holding its interface."""

    guest: str
    host: str
    index: int  # unique per slot in the plan (names the namespace and the vSwitch port)
    mac: str
    addr: str  # CIDR
    home: bool
    mtu: int = 1500

    @property
    def ip(self) -> str:
        return str(ipaddress.ip_interface(self.addr).ip)

    @property
    def vswitch_port(self) -> str:
        return f"vm{self.index}"


@dataclass
class GuestPlan:
    """The guests of a network: their slots and the mobility mode."""

    mode: str
    slots: list[GuestSlot] = field(default_factory=list)
    uplinks: dict[str, tuple[str, str]] = field(default_factory=dict)  # host -> (leaf, ip)
    leaf_of: dict[str, str] = field(default_factory=dict)
    service_port: int = SERVICE_PORT

    def slot(self, guest: str, host: str) -> GuestSlot:
        for s in self.slots:
            if s.guest == guest and s.host == host:
                return s
        raise KeyError(f"guest {guest!r} has no slot on {host!r}")

    def home(self, guest: str) -> GuestSlot:
        return next(s for s in self.slots if s.guest == guest and s.home)

    def guest_commands(self, slot: GuestSlot) -> list[list[str]]:
        """Inside the slot's namespace: the guest's interface, addresses and routes. It is
        always up there; whether the guest is connected is its vSwitch port's state."""
        cmds = [["ip", "link", "set", "lo", "up"],
                # IPv4 only: IPv6 neighbour discovery would announce the guest by itself
                ["sysctl", "-qw", "net.ipv6.conf.all.disable_ipv6=1"],
                ["sysctl", "-qw", "net.ipv6.conf.default.disable_ipv6=1"],
                ["sysctl", "-qw", f"net.ipv6.conf.{GUEST_DEV}.disable_ipv6=1"],
                ["sysctl", "-qw", "net.ipv4.conf.all.accept_redirects=0"],
                ["ip", "link", "set", GUEST_DEV, "address", slot.mac, "mtu", str(slot.mtu)],
                ["ip", "addr", "add", slot.addr, "dev", GUEST_DEV],
                ["ip", "link", "set", GUEST_DEV, "up"]]
        if self.mode == "hostroute":
            cmds += [["ip", "route", "add", ANYCAST_GW, "dev", GUEST_DEV],
                     ["ip", "route", "add", "default", "via", ANYCAST_GW, "dev", GUEST_DEV]]
        return cmds

    def move_commands(self, net: Network, guest: str, src: str, dst: str
                      ) -> tuple[dict[str, list[list[str]]], dict[str, list[list[str]]]]:
        """What the network does when ``guest`` moves from ``src`` to ``dst``: commands per
        node at the destination's resume (before its ACK) and at the source's end."""
        on_resume = {node: [r.command() for r in routes]
                     for node, routes in self.resume_routes(net, guest, dst).items()}
        on_end: dict[str, list[list[str]]] = {}
        if self.mode == "hostroute":
            ip = self.slot(guest, dst).ip
            on_end.setdefault(src, []).append(["ip", "route", "del", f"{ip}/32", "dev", VSWITCH])
        return on_resume, on_end

    def resume_routes(self, net: Network, guest: str, dst: str) -> dict[str, list[Route]]:
        """The routes each node must hold once ``guest`` runs on ``dst`` (``hostroute``: its
        /32 towards ``dst``; the other modes move nothing at L3)."""
        routes: dict[str, list[Route]] = {}
        if self.mode == "hostroute":
            for route in host_routes(net, self, f"{self.slot(guest, dst).ip}/32", dst):
                routes.setdefault(route.node, []).append(route)
        return routes


def host_routes(net: Network, plan: GuestPlan, prefix: str, host: str) -> list[Route]:
    """Routes for a guest /32 living on ``host``: its hypervisor, its leaf, every router."""
    leaf, _ = plan.uplinks[host]
    uplink = next(li for li in net.links if {li.a.node, li.b.node} == {host, leaf}
                  and f"{host}-vm" in (li.a.name, li.b.name))
    host_end = uplink.a if uplink.a.node == host else uplink.b
    hv_ip = str(ipaddress.ip_interface(host_end.addrs[0]).ip)
    routes = [Route(host, prefix, dev=VSWITCH), Route(leaf, prefix, (hv_ip,))]
    return routes + compute_routes(net, {leaf: [prefix]})


def _mac(index: int) -> str:
    return f"52:54:00:00:{index // 256:02x}:{index % 256:02x}"


def add_guests(net: Network, mode: str, guests: dict[str, str],
               slots_on: list[str] | dict[str, list[str]], client_on: str | None = None,
               leaf_of: dict[str, str] | None = None) -> GuestPlan:
    """Give ``net``'s hosts a VM network and the guests slots.

    ``guests``: guest name -> home host. ``slots_on``: the hosts where every guest may be
    migrated to (a slot each), or guest name -> such hosts. ``client_on``: the host of the
    ``client`` slot. ``leaf_of``: host -> its leaf (default: the router it is linked to).
    """
    if mode not in MODES:
        raise ValueError(f"guest network mode must be one of {', '.join(MODES)} (got {mode!r})")
    targets = slots_on if isinstance(slots_on, dict) else {g: list(slots_on) for g in guests}
    hosts = list(dict.fromkeys([*guests.values(), *(h for hs in targets.values() for h in hs),
                                *([client_on] if client_on else [])]))
    for h in hosts:
        if h not in net.nodes or net.nodes[h].role != "host":
            raise ValueError(f"guests: {h!r} is not a host of topology {net.name!r}")
    leaf_of = dict(leaf_of or {})
    for h in hosts:
        leaf_of.setdefault(h, _router_of(net, h))
    plan = GuestPlan(mode, leaf_of=leaf_of)
    _uplinks(net, plan, hosts)
    subnet = ipaddress.ip_network(GUEST_NET)
    mtu = 1450 if mode == "vxlan" else 1500
    names = [*guests, *(["client"] if client_on else [])]
    index = 0
    for n, guest in enumerate(names, start=1):
        ip = subnet.network_address + 10 + n
        addr = f"{ip}/32" if mode == "hostroute" else f"{ip}/{subnet.prefixlen}"
        home = guests.get(guest, client_on)
        where = [home] if guest == "client" else list(dict.fromkeys(
            [home, *targets.get(guest, [])]))
        for h in where:
            index += 1
            plan.slots.append(GuestSlot(guest, h, index, _mac(n), addr, h == home, mtu))
    for h in hosts:
        net.commands.setdefault(h, []).extend(_vswitch_commands(plan, h, hosts))
    if mode == "hostroute":
        for slot in plan.slots:
            if slot.home:
                for route in host_routes(net, plan, f"{slot.ip}/32", slot.host):
                    if route.node == slot.host:  # via the vSwitch: made by the commands above
                        net.commands[slot.host].append(
                            ["ip", "route", "add", route.dst, "dev", VSWITCH])
                    else:
                        net.add_route(route)
    net.guests = plan
    return plan


def _router_of(net: Network, host: str) -> str:
    for li in net.links:
        for me, other in ((li.a, li.b), (li.b, li.a)):
            if me.node == host and net.nodes[other.node].role == "router":
                return other.node
    raise ValueError(f"guests: host {host!r} is linked to no router")


def _uplinks(net: Network, plan: GuestPlan, hosts: list[str]) -> None:
    """Each host's VM uplink: an access port on its leaf's L2 switch (l2), or a routed /31
    towards its leaf from ``TEP_POOL`` (vxlan, hostroute)."""
    leaves = list(dict.fromkeys(plan.leaf_of[h] for h in hosts))
    if plan.mode == "l2":
        switches = {leaf: f"v{leaf}" for leaf in leaves}
        for sw in switches.values():
            net.add_node(sw, "switch", kind="bridge")
        for a, b in zip(leaves, leaves[1:], strict=False):  # the leaf pair's peer link
            net.add_link(Interface(switches[a], f"{switches[a]}-{switches[b]}"),
                         Interface(switches[b], f"{switches[b]}-{switches[a]}"), LinkSpec())
        for h in hosts:
            sw = switches[plan.leaf_of[h]]
            net.add_link(Interface(h, f"{h}-vm"), Interface(sw, f"{sw}-{h}"), LinkSpec())
            plan.uplinks[h] = (plan.leaf_of[h], "")
        return
    pool = ipaddress.ip_network(TEP_POOL)
    per_leaf: dict[str, int] = {}
    announce: dict[str, list[str]] = {}
    for h in hosts:
        leaf = plan.leaf_of[h]
        li = leaves.index(leaf) + 1
        k = per_leaf[leaf] = per_leaf.get(leaf, 0) + 1
        base = pool.network_address + li * 256 + 2 * k
        net.add_link(Interface(leaf, f"{leaf}-{h}-vm", (f"{base}/31",)),
                     Interface(h, f"{h}-vm", (f"{base + 1}/31",)), LinkSpec())
        plan.uplinks[h] = (leaf, str(base + 1))
        announce[leaf] = [f"{pool.network_address + li * 256}/24"]
        net.add_route(Route(h, TEP_POOL, (str(base),)))
        if plan.mode == "hostroute":  # other guests: through the leaf, not a function stack
            net.add_route(Route(h, GUEST_NET, (str(base),)))
    for route in compute_routes(net, announce):
        net.add_route(route)


def _vswitch_commands(plan: GuestPlan, host: str, hosts: list[str]) -> list[list[str]]:
    cmds = [["ip", "link", "add", VSWITCH, "type", "bridge"],
            ["ip", "link", "set", VSWITCH, "up"]]
    if plan.mode == "l2":
        cmds.append(["ip", "link", "set", f"{host}-vm", "master", VSWITCH])
    elif plan.mode == "vxlan":
        tep = plan.uplinks[host][1]
        cmds += [["ip", "link", "add", "vx0", "type", "vxlan", "id", str(VNI), "local", tep,
                  "dstport", "4789", "dev", f"{host}-vm"],
                 ["ip", "link", "set", "vx0", "master", VSWITCH],
                 ["ip", "link", "set", "vx0", "up"]]
        cmds += [["bridge", "fdb", "append", "00:00:00:00:00:00", "dev", "vx0", "dst",
                  plan.uplinks[other][1]] for other in hosts if other != host]
    else:  # hostroute: the vSwitch is the guests' anycast gateway; the host routes
        cmds += [["ip", "link", "set", VSWITCH, "address", ANYCAST_MAC],
                 ["ip", "addr", "add", f"{ANYCAST_GW}/32", "dev", VSWITCH],
                 ["sysctl", "-qw", "net.ipv4.ip_forward=1"],
                 # two guests on one host talk through it: no ICMP redirect may send one
                 # straight to the other (it would keep going there after a move)
                 ["sysctl", "-qw", "net.ipv4.conf.all.send_redirects=0"],
                 ["sysctl", "-qw", f"net.ipv4.conf.{VSWITCH}.send_redirects=0"],
                 ["sysctl", "-qw", "net.ipv4.conf.all.rp_filter=0"],
                 ["sysctl", "-qw", f"net.ipv4.conf.{VSWITCH}.rp_filter=0"]]
    return cmds

"""An on-prem site reaching a cloud site over a WAN, through a NAT/firewall gateway.

::

    on-prem site a (router or fabric) -- a-r ==== WAN ==== cgw -- c-h1, c-h2, ...
                                                           |  migration net 172.16.h.8/29
                                                           |  management net 172.17.h.0/29

``cgw`` publishes only the migration service: TCP ``service_port + i - 1`` on its WAN
address forwards (DNAT) to cloud host ``c-h<i>``'s migration address, port ``service_port``.
Everything else arriving from the WAN is dropped, including anything addressed to the cloud's
management network, although the on-prem routers do have a route to it through ``cgw`` (so
it is the firewall, not a missing route, that keeps it unreachable). Cloud hosts' own
connections out leave masqueraded behind the gateway's WAN address, from the migration net
only.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

from .fabric import TABLES, AddressPlan, PlanError, StackOptions, router_sysctls
from .model import (
    FunctionStack,
    GatewayPolicy,
    Interface,
    LinkSpec,
    Network,
    PortForward,
    Route,
    StackMode,
)
from .paths import compute_routes
from .wan import build_site, wan_specs

CLOUD_DATA = "172.16.0.0/16"
CLOUD_MGMT = "172.17.0.0/16"


def cloud(onprem_spines: int = 0, onprem_leaves: int = 1, onprem_hosts: int = 2,
          cloud_hosts: int = 2, rtt_ms: float | None = None,
          delay_ms: float | Sequence[float] | None = None, jitter_ms: float = 0.0,
          loss_pct: float = 0.0, bw_mbps: float | None = None, service_port: int = 7000,
          host_link_mbps: float | None = None, ecmp_hash: str = "l4",
          stacks: bool | Sequence[str] = True, stack_mode: StackMode = "auto",
          stack_rate_mbps: Mapping[str, float] | None = None,
          stack_dscp: Mapping[str, str] | None = None) -> Network:
    """On-prem site ``a`` -> WAN -> cloud gateway ``cgw`` -> cloud hosts ``c-h<i>``."""
    if not isinstance(cloud_hosts, int) or not 1 <= cloud_hosts <= 99:
        raise PlanError(f"cloud_hosts must be an integer in 1..99 (got {cloud_hosts!r})")
    if not isinstance(service_port, int) or not 1 <= service_port <= 65535 - cloud_hosts:
        raise PlanError(f"service_port must leave room for {cloud_hosts} published ports "
                        f"below 65536 (got {service_port!r})")
    opts = StackOptions.from_params(stacks, stack_rate_mbps, stack_dscp)
    ab, ba = wan_specs(rtt_ms, delay_ms, jitter_ms, loss_pct, bw_mbps)
    params: dict[str, Any] = {
        "onprem_spines": onprem_spines, "onprem_leaves": onprem_leaves,
        "onprem_hosts": onprem_hosts, "cloud_hosts": cloud_hosts, "rtt_ms": rtt_ms,
        "delay_ms": delay_ms, "jitter_ms": jitter_ms, "loss_pct": loss_pct,
        "bw_mbps": bw_mbps, "service_port": service_port, "host_link_mbps": host_link_mbps,
        "ecmp_hash": ecmp_hash, "stacks": list(opts.functions) if opts else False,
        "stack_mode": stack_mode}
    net = Network("cloud", params=params)
    net.stack_mode = stack_mode
    plan = AddressPlan()
    site, border = build_site(net, plan, "a", onprem_spines, onprem_leaves, onprem_hosts,
                              host_link_mbps, None, opts, ecmp_hash)
    gw = "cgw"
    net.add_node(gw, "gateway", sysctls=router_sysctls(ecmp_hash))
    a, b = plan.p2p("wan")
    net.add_link(Interface(border, f"{border}-cloud", (a,)), Interface(gw, f"{gw}-wan", (b,)),
                 ab, ba)
    public = str(ipaddress.ip_interface(b).ip)
    published = []
    host_link = LinkSpec(bw_mbps=host_link_mbps)
    for h in range(1, cloud_hosts + 1):
        host = f"c-h{h}"
        net.add_node(host, "host")
        for func, subnet_of in (("management", f"172.17.{h}.0"), ("migration", f"172.16.{h}.8")):
            base = ipaddress.ip_address(subnet_of)
            gw_cidr, host_cidr = f"{base + 1}/29", f"{base + 2}/29"
            short = "mgmt" if func == "management" else "mig"
            dev = f"{host}-{short}"
            net.add_link(Interface(gw, f"{gw}-h{h}-{short}", (gw_cidr,)),
                         Interface(host, dev, (host_cidr,)), host_link)
            gw_ip, ip = str(base + 1), str(base + 2)
            net.add_stack(FunctionStack(host, func, dev, host_cidr, gw_ip, TABLES[func],
                                        f"vrf-{short}"))
            net.add_route(Route(host, str(ipaddress.ip_interface(host_cidr).network), (), dev,
                                TABLES[func], ip))
            net.add_route(Route(host, "default", (gw_ip,), dev, TABLES[func], ip))
            if func == "migration":
                net.add_route(Route(host, "default", (gw_ip,)))
                published.append(PortForward("tcp", service_port + h - 1, ip, service_port))
    net.gateways.append(GatewayPolicy(gw, f"{gw}-wan", public, (CLOUD_DATA, CLOUD_MGMT),
                                      tuple(published)))
    announce = {k: list(v) for k, v in site.announce.items()}
    announce.setdefault(border, []).append(str(ipaddress.ip_interface(a).network))
    announce[gw] = [CLOUD_DATA, CLOUD_MGMT]
    for route in compute_routes(net, announce):
        net.add_route(route)
    params["public_addr"] = public
    params["published"] = {f"{public}:{p.port}": f"{p.to_addr}:{p.to_port}" for p in published}
    return net

"""Routes computed from the topology: shortest paths by hop count, every equal-cost next hop.

Routers (nodes with forwarding) announce prefixes; every other router gets a route to each
prefix whose next hops are all neighbours one hop closer to the announcing router. In a
spine-leaf fabric this gives each leaf an ECMP route over every spine to every other leaf.
"""

from __future__ import annotations

import ipaddress
from collections import deque

from .model import Network, Route


def router_graph(net: Network) -> dict[str, list[tuple[str, str]]]:
    """Forwarding node -> [(neighbour, neighbour's address on the shared link)], sorted."""
    graph: dict[str, list[tuple[str, str]]] = {
        n.name: [] for n in net.nodes.values() if n.forwarding}
    for link in net.links:
        a, b = link.a, link.b
        if a.node in graph and b.node in graph and a.addrs and b.addrs:
            graph[a.node].append((b.node, str(ipaddress.ip_interface(b.addrs[0]).ip)))
            graph[b.node].append((a.node, str(ipaddress.ip_interface(a.addrs[0]).ip)))
    for hops in graph.values():
        hops.sort()
    return graph


def hop_distances(graph: dict[str, list[tuple[str, str]]], source: str) -> dict[str, int]:
    dist = {source: 0}
    todo = deque([source])
    while todo:
        cur = todo.popleft()
        for nxt, _ in graph[cur]:
            if nxt not in dist:
                dist[nxt] = dist[cur] + 1
                todo.append(nxt)
    return dist


def compute_routes(net: Network, announce: dict[str, list[str]]) -> list[Route]:
    """Routes on every router towards every prefix in ``announce`` (router -> prefixes)."""
    graph = router_graph(net)
    routes: list[Route] = []
    for owner in sorted(announce):
        if owner not in graph:
            raise ValueError(f"{owner!r} announces prefixes but is not a router")
        dist = hop_distances(graph, owner)
        for router in sorted(graph):
            if router == owner:
                continue
            if router not in dist:
                raise ValueError(f"router {router!r} cannot reach {owner!r}: the fabric is "
                                 f"not connected")
            via = tuple(addr for nb, addr in graph[router] if dist.get(nb) == dist[router] - 1)
            for prefix in announce[owner]:
                if not connected(net, router, prefix):
                    routes.append(Route(router, str(ipaddress.ip_network(prefix)), via))
    return routes


def connected(net: Network, node: str, prefix: str) -> bool:
    """``prefix`` lies within a subnet attached to ``node`` (so it needs no route there)."""
    pfx = ipaddress.ip_network(prefix)
    return any(pfx.subnet_of(ipaddress.ip_interface(a).network)  # type: ignore[arg-type]
               for end in net.interfaces(node) for a in end.addrs)

"""Topology files: a network users write in TOML, validated with file:line errors.

Two forms, and impairments on top of either::

    # 1. a built-in builder and its parameters (``testbed topo list``)
    builder = "wan"
    [params]
    sites = 2
    rtt_ms = 40
    bw_mbps = 250

    # 2. nodes, links and routes written out (no builder)
    [[node]]
    name = "h1"                     # role: "host" (default), "router" or "switch"
    [[node]]
    name = "r1"
    role = "router"
    [[link]]
    a = "h1"                        # interfaces are named <node>-eth<N>, in link order
    b = "r1"
    a_addr = "10.0.1.1/24"          # or a list of addresses
    b_addr = "10.0.1.254/24"
    bw_mbps = 100                   # both directions; delay_ms is one-way, each direction
    delay_ms = 5
    b_to_a = { loss_pct = 0.5 }     # per-direction overrides: a_to_b / b_to_a
    [[route]]
    node = "h1"
    dst = "default"                 # or a prefix
    via = "10.0.1.254"              # a list of next hops makes an ECMP route

    # either form: change links of the network, found by their two nodes
    [[impair]]
    link = ["a-r", "b-r"]           # the a-r -> b-r direction is "a_to_b"
    loss_pct = 0.1

Top-level ``name`` (default: the file's stem) and ``description`` are optional. Pure data:
nothing here touches the kernel or imports the testbed.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from . import REGISTRY, TopologyError, build, parameters
from .model import Interface, LinkSpec, Network, Route

TOP_KEYS = {"name", "description", "builder", "params", "node", "link", "route", "impair"}
SPEC_KEYS = {"bw_mbps", "delay_ms", "jitter_ms", "loss_pct", "queue_pkts", "reorder"}
LINK_KEYS = {"a", "b", "a_addr", "b_addr", "a_to_b", "b_to_a"} | SPEC_KEYS
NODE_KEYS = {"name", "role", "kind"}
ROUTE_KEYS = {"node", "dst", "via", "dev", "src", "table"}
IMPAIR_KEYS = {"link", "a_to_b", "b_to_a"} | SPEC_KEYS
NODE_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,9}$")
ROLES = ("host", "router", "switch")


class TopologyFileError(TopologyError):
    """A topology file is unreadable or invalid; the message names the file, line and key."""


def is_topology_file(data: Mapping[str, Any]) -> bool:
    """Whether parsed TOML looks like a topology file (an experiment spec has a ``kind``)."""
    return "kind" not in data and bool(set(data) & {"builder", "node", "link"})


def load(path: Path, overrides: Mapping[str, Any] | None = None) -> Network:
    """Read, validate and build the topology file at ``path``; ``overrides`` replace its
    builder's parameters (``testbed topo show FILE key=value``)."""
    data, text = read_toml(path, TopologyFileError)
    return parse(data, str(path), text, overrides)


def read_toml(path: Path, error: type[Exception]) -> tuple[dict[str, Any], str]:
    """A TOML file's data and text (for file:line errors); ``error`` names the file and why
    it cannot be read or parsed (spec files use it too)."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise error(f"{path}: cannot read: {exc.strerror}") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{path}: not valid TOML: {exc}") from None


def parse(data: Mapping[str, Any], origin: str = "<topology>", text: str = "",
          overrides: Mapping[str, Any] | None = None) -> Network:
    """Validate parsed TOML ``data`` (from ``origin``) into a :class:`Network`."""
    f = _File(origin, text)
    f.keys(data, TOP_KEYS, ())
    name = data.get("name", Path(origin).stem if origin != "<topology>" else "file")
    if not isinstance(name, str) or not name:
        raise f.error(("name",), "must be a non-empty string")
    builder = data.get("builder")
    written = [k for k in ("node", "link", "route") if k in data]
    if builder is None and not written:
        raise f.error((), "give `builder = \"NAME\"` (with [params]) or [[node]] and "
                          "[[link]] tables")
    if builder is not None and written:
        raise f.error((written[0],), "a file with `builder` cannot also write out "
                                     f"[[{written[0]}]] tables (use [[impair]] to change "
                                     "the built links)")
    if builder is not None:
        net = _built(f, builder, data.get("params", {}), dict(overrides or {}))
    else:
        if "params" in data:
            raise f.error(("params",), "[params] belongs to a file with `builder`")
        if overrides:
            raise TopologyFileError(f"{origin}: parameters ({', '.join(overrides)}) apply "
                                    "to a file with `builder`; this one writes its network "
                                    "out")
        net = _written(f, data)
    net.name = name
    for i, imp in enumerate(_tables(f, data, "impair")):
        _impair(f, net, i, imp)
    net.params = {"file": origin, **net.params}
    return net


class _File:
    """Where errors point: key paths to ``origin:line``."""

    def __init__(self, origin: str, text: str) -> None:
        self.origin = origin
        self.lines = text.splitlines()

    def error(self, loc: tuple[Any, ...], msg: str) -> TopologyFileError:
        key = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in loc).lstrip(".")
        where = f"{self.origin}{self.line(loc)}"
        return TopologyFileError(f"{where}: key '{key}': {msg}" if key else f"{where}: {msg}")

    def line(self, loc: tuple[Any, ...]) -> str:
        """':N' where ``loc`` (table, [index], key) is set, or its table starts; '' if not
        found."""
        if not self.lines or not loc:
            return ""
        table, rest = str(loc[0]), loc[1:]
        start, end = 0, len(self.lines)
        if rest and isinstance(rest[0], int):  # [[table]] number rest[0]
            heads = [i for i, ln in enumerate(self.lines)
                     if re.match(rf"^\s*\[\[\s*{re.escape(table)}\s*\]\]", ln)]
            if rest[0] >= len(heads):
                return ""
            start = heads[rest[0]] + 1
            end = next((i for i in range(start, len(self.lines))
                        if self.lines[i].lstrip().startswith("[")), end)
            key, rest = (str(rest[1]) if len(rest) > 1 else None), ()
            if key is None:
                return f":{start}"
        elif rest:  # [table] key
            head = next((i for i, ln in enumerate(self.lines)
                         if re.match(rf"^\s*\[\s*{re.escape(table)}\s*\]", ln)), None)
            if head is None:
                return ""
            start = head + 1
            end = next((i for i in range(start, len(self.lines))
                        if self.lines[i].lstrip().startswith("[")), end)
            key = str(rest[0])
        else:  # a top-level key (before any table) or a table's header
            end = next((i for i, ln in enumerate(self.lines) if ln.lstrip().startswith("[")),
                       end)
            key = table
            head = next((i for i, ln in enumerate(self.lines)
                         if re.match(rf"^\s*\[+\s*{re.escape(table)}\s*\]", ln)), None)
            if head is not None:
                return f":{head + 1}"
        pat = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        hit = next((i for i in range(start, end) if pat.match(self.lines[i])), None)
        return f":{hit + 1}" if hit is not None else (f":{start}" if start else "")

    def keys(self, table: Mapping[str, Any], allowed: set[str], loc: tuple[Any, ...]) -> None:
        for key in table:
            if key not in allowed:
                raise self.error((*loc, key), f"unknown key; known: {', '.join(sorted(allowed))}")


def _tables(f: _File, data: Mapping[str, Any], key: str) -> list[Mapping[str, Any]]:
    value = data.get(key, [])
    if not isinstance(value, list) or not all(isinstance(t, dict) for t in value):
        raise f.error((key,), f"must be an array of tables ([[{key}]])")
    return value


def _built(f: _File, builder: Any, params: Any, overrides: dict[str, Any]) -> Network:
    if not isinstance(builder, str) or builder.replace("-", "_") not in REGISTRY:
        raise f.error(("builder",), f"unknown topology {builder!r}; known: "
                                    f"{', '.join(sorted(REGISTRY))}")
    if not isinstance(params, dict):
        raise f.error(("params",), "must be a table ([params])")
    known = parameters(builder)
    for key in [*params, *overrides]:
        if key not in known:
            loc = ("params", key) if key in params else ()
            raise f.error(loc, f"topology {builder!r} has no parameter {key!r}; known: "
                               f"{', '.join(known)}")
    try:
        return build(builder, **(params | overrides))
    except TopologyError as exc:
        msg = str(exc)
        named = next((k for k in params if re.search(rf"\b{re.escape(k)}\b", msg)), None)
        raise f.error(("params", named) if named else ("builder",), msg) from None


def _spec(f: _File, table: Mapping[str, Any], loc: tuple[Any, ...],
          base: LinkSpec | None = None) -> LinkSpec:
    """``base`` with the impairment keys of ``table`` (``bw_mbps``... ) applied."""
    values: dict[str, Any] = {}
    for key in SPEC_KEYS & set(table):
        v = table[key]
        if key == "reorder":
            if not isinstance(v, bool):
                raise f.error((*loc, key), "must be true or false")
        elif key == "queue_pkts":
            if not isinstance(v, int) or isinstance(v, bool) or v <= 0:
                raise f.error((*loc, key), "must be a whole number of packets > 0")
        elif not isinstance(v, int | float) or isinstance(v, bool):
            raise f.error((*loc, key), f"must be a number (got {v!r})")
        values[key] = v
    try:
        return dataclasses.replace(base or LinkSpec(), **values)
    except ValueError as exc:
        bad = next((k for k in values if str(exc).startswith(k)), None)
        raise f.error((*loc, bad) if bad else loc, str(exc).split(" (got")[0]) from None


def _directions(f: _File, table: Mapping[str, Any], loc: tuple[Any, ...],
                base: tuple[LinkSpec, LinkSpec]) -> tuple[LinkSpec, LinkSpec]:
    both = (_spec(f, table, loc, base[0]), _spec(f, table, loc, base[1]))
    out = []
    for key, spec in zip(("a_to_b", "b_to_a"), both, strict=True):
        sub = table.get(key, {})
        if not isinstance(sub, dict):
            raise f.error((*loc, key), "must be a table, e.g. { delay_ms = 5 }")
        f.keys(sub, SPEC_KEYS, (*loc, key))
        out.append(_spec(f, sub, (*loc, key), spec))
    return out[0], out[1]


def _addrs(f: _File, value: Any, loc: tuple[Any, ...]) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(a, str) for a in items):
        raise f.error(loc, "must be an address with prefix (\"10.0.0.1/24\") or a list")
    for a in items:
        if "/" not in a:
            raise f.error(loc, f"{a!r}: give the prefix length too, e.g. \"{a}/24\"")
        try:
            ipaddress.ip_interface(a)
        except ValueError:
            raise f.error(loc, f"{a!r} is not an IP address with prefix") from None
    return tuple(items)


def _written(f: _File, data: Mapping[str, Any]) -> Network:
    net = Network("file")
    for i, node in enumerate(_tables(f, data, "node")):
        loc = ("node", i)
        f.keys(node, NODE_KEYS, loc)
        name, role = node.get("name"), node.get("role", "host")
        if not isinstance(name, str) or not NODE_NAME.match(name):
            raise f.error((*loc, "name"), f"{name!r}: a node name is a letter then up to 9 "
                                          "letters, digits, '_' or '-'")
        if role not in ROLES:
            raise f.error((*loc, "role"), f"{role!r}: one of {', '.join(ROLES)}")
        if name in net.nodes:
            raise f.error((*loc, "name"), f"node {name!r} defined twice")
        kind = node.get("kind", "bridge" if role == "switch" else None)
        if role == "switch" and kind not in ("bridge", "ovs"):
            raise f.error((*loc, "kind"), f"{kind!r}: a switch is 'bridge' or 'ovs'")
        if role != "switch" and "kind" in node:
            raise f.error((*loc, "kind"), "only a switch has a kind")
        net.add_node(name, role, kind=kind)
    links = _tables(f, data, "link")
    if not links:
        raise f.error(("link",), "a written-out network needs at least one [[link]]")
    count: dict[str, int] = {}
    for i, link in enumerate(links):
        loc = ("link", i)
        f.keys(link, LINK_KEYS, loc)
        ends = []
        for side in ("a", "b"):
            node = link.get(side)
            if node not in net.nodes:
                raise f.error((*loc, side), f"{node!r} is not a [[node]] "
                                            f"(nodes: {', '.join(net.nodes) or 'none'})")
            addrs = _addrs(f, link[f"{side}_addr"], (*loc, f"{side}_addr")) \
                if f"{side}_addr" in link else ()
            if addrs and net.nodes[node].role == "switch":
                raise f.error((*loc, f"{side}_addr"), f"{node} is a switch: no address")
            n = count.get(node, 0)
            count[node] = n + 1
            ends.append(Interface(node, f"{node}-eth{n}", addrs))
        if ends[0].node == ends[1].node:
            raise f.error((*loc, "b"), "a link joins two different nodes")
        ab, ba = _directions(f, link, loc, (LinkSpec(), LinkSpec()))
        net.add_link(ends[0], ends[1], ab, ba)
    for i, route in enumerate(_tables(f, data, "route")):
        loc = ("route", i)
        f.keys(route, ROUTE_KEYS, loc)
        if route.get("node") not in net.nodes:
            raise f.error((*loc, "node"), f"{route.get('node')!r} is not a [[node]]")
        dst = route.get("dst")
        try:
            if dst != "default":
                ipaddress.ip_network(dst, strict=False)
        except (ValueError, TypeError):
            raise f.error((*loc, "dst"), f"{dst!r}: 'default' or a prefix") from None
        via = route.get("via", [])
        via = [via] if isinstance(via, str) else via
        try:
            hops = tuple(str(ipaddress.ip_address(v)) for v in via)
        except (ValueError, TypeError):
            raise f.error((*loc, "via"), f"{route.get('via')!r}: an address or a list of "
                                         "addresses") from None
        if not hops and "dev" not in route:
            raise f.error(loc, "give via (next hops) or dev")
        table = route.get("table")
        if table is not None and (not isinstance(table, int) or not 1 <= table < 2**31):
            raise f.error((*loc, "table"), "a routing table number")
        net.add_route(Route(route["node"], dst, hops, route.get("dev"), table,
                            route.get("src")))
    net.params = {"nodes": len(net.nodes), "links": len(net.links)}
    return net


def _impair(f: _File, net: Network, i: int, imp: Mapping[str, Any]) -> None:
    loc = ("impair", i)
    f.keys(imp, IMPAIR_KEYS, loc)
    ends = imp.get("link")
    if not (isinstance(ends, list) and len(ends) == 2 and all(isinstance(e, str) for e in ends)):
        raise f.error((*loc, "link"), "the link's two nodes, e.g. [\"a-r\", \"b-r\"]")
    x, y = ends
    found = [(k, li) for k, li in enumerate(net.links) if {li.a.node, li.b.node} == {x, y}]
    if not found:
        raise f.error((*loc, "link"), f"no link between {x!r} and {y!r} in topology "
                                      f"{net.name!r}")
    if len(found) > 1:
        raise f.error((*loc, "link"), f"{len(found)} links join {x!r} and {y!r}")
    k, li = found[0]
    forward = li.a.node == x  # the file's a_to_b is x -> y
    base = (li.a_to_b, li.b_to_a) if forward else (li.b_to_a, li.a_to_b)
    xy, yx = _directions(f, imp, loc, base)
    ab, ba = (xy, yx) if forward else (yx, xy)
    net.links[k] = dataclasses.replace(li, a_to_b=ab, b_to_a=ba)

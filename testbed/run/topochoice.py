"""A spec's ``[topology]`` table: the network its kind runs on, chosen by name or file.

::

    [topology]
    name = "wan"          # a built-in topology (`testbed topo list`), or
    # file = "my.toml"    # a topology file (topologies/file.py), relative to the spec
    sites = 3             # the topology's parameters
    layout = "chain"

Which kinds accept one, and what they need of it (``RULES``):

- ``smoke``: any topology or file with hosts ``h1`` and ``h2`` (it measures h1 -> h2);
  not together with ``[link]``.
- ``long-distance``: ``wan`` (or a file with ``builder = "wan"``) whose sites have hosts
  ``a-h1`` and ``b-h1`` (``spines = 0``); ``rtt_ms``, ``delay_ms``, ``bw_mbps``, ``loss_pct``
  and ``jitter_ms`` are the spec's own keys (swept per point), and its file has no
  ``[[impair]]`` (it would change the swept WAN link).
- ``core-load``, ``cloud-encrypted`` and ``rdma`` build their network from their own keys: a
  ``[topology]`` table is refused.

Errors name the spec (or the topology file), the line and the key.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

import topologies
from topologies import file as topofile
from topologies.model import Network


class TopologyChoice(BaseModel):
    """``name`` or ``file`` plus the topology's parameters (every other key)."""

    model_config = ConfigDict(extra="allow")
    name: str | None = None
    file: str | None = None

    @model_validator(mode="after")
    def _one_of(self) -> TopologyChoice:
        if (self.name is None) == (self.file is None):
            raise ValueError("give `name = \"...\"` (a built-in topology) or "
                             "`file = \"...\"` (a topology file), not both or neither")
        return self

    def params(self) -> dict[str, Any]:
        return dict(self.model_extra or {})


@dataclass(frozen=True)
class Rule:
    hosts: tuple[str, ...]
    builders: tuple[str, ...] | None = None  # None: any topology, built-in or written out
    owned: tuple[str, ...] = ()  # parameters the spec's own keys set
    impair: bool = True
    why: str = ""
    conflicts: tuple[str, ...] = ()  # spec tables that also say what the network is


RULES: dict[str, Rule] = {
    "smoke": Rule(("h1", "h2"), why="smoke measures h1 -> h2", conflicts=("link",)),
    "long-distance": Rule(("a-h1", "b-h1"), ("wan",),
                          ("rtt_ms", "delay_ms", "bw_mbps", "loss_pct", "jitter_ms"),
                          impair=False, why="long-distance migrates a-h1 -> b-h1 across the "
                                            "WAN and sweeps its rtt_ms"),
}
REFUSED = {
    "core-load": "core-load builds its spine-leaf fabric from its own keys (spines, leaves, "
                 "hosts_per_leaf, host_link_mbps, fabric_link_mbps, ecmp_hash)",
    "cloud-encrypted": "cloud-encrypted builds its cloud path from its own keys (rtt_ms, "
                       "bw_mbps)",
    "rdma": "rdma builds its two-host path from its own keys (rtt_ms, loss_pct, bw_mbps)",
}


class ChoiceError(ValueError):
    """The ``[topology]`` table does not fit the kind; the message says where and why."""


def resolve_file(raw: dict[str, Any], origin: str) -> None:
    """Make ``[topology] file`` absolute (relative to the spec's directory), in place."""
    table = raw.get("topology")
    if isinstance(table, dict) and isinstance(table.get("file"), str) and origin != "<spec>":
        table["file"] = str((Path(origin).parent / table["file"]).resolve())


def build(choice: TopologyChoice, owned: dict[str, Any] | None = None) -> Network:
    """The network of ``choice`` with the kind's ``owned`` parameters set (no checks)."""
    params = choice.params() | (owned or {})
    if choice.file is not None:
        return topofile.load(Path(choice.file), params)
    return topologies.build(choice.name or "", **params)


def needs(net: Network) -> tuple[str, ...]:
    """The kernel features a lab of ``net`` needs (``testbed.host.placement``)."""
    out = ["netns", "veth"]
    specs = [s for li in net.links for s in (li.a_to_b, li.b_to_a)]
    if any(s.bw_mbps for s in specs):
        out.append("tbf")
    if any(s.needs_netem for s in specs):
        out.append("netem")
    if any(n.role == "switch" and n.kind == "bridge" for n in net.nodes.values()):
        out.append("bridge")
    if any(n.role == "switch" and n.kind == "ovs" for n in net.nodes.values()):
        out.append("openvswitch")
    if any(len(r.via) > 1 for r in net.routes):
        out.append("ecmp")
    if any(s.rate_mbps for s in net.stacks):
        out.append("htb")
    return tuple(out)


def check(kind: str, choice: TopologyChoice, owned: dict[str, Any], origin: str,
          text: str, given: frozenset[str] | set[str] = frozenset()) -> Network:
    """The network ``choice`` gives ``kind`` (with its ``owned`` values), or ChoiceError;
    ``given``: the spec's top-level keys."""

    def where(key: str | None = None) -> str:
        return f"{origin}{_line(text, key)}: key 'topology{'.' + key if key else ''}'"

    if kind in REFUSED:
        raise ChoiceError(f"{where()}: {REFUSED[kind]}; [topology] is for "
                          f"{' and '.join(RULES)} specs")
    rule = RULES[kind]
    for table in rule.conflicts:
        if table in given:
            at = next((i + 1 for i, ln in enumerate(text.splitlines())
                       if re.match(rf"^\s*\[?\s*{table}\s*[\]=]", ln)), None)
            raise ChoiceError(f"{origin}{f':{at}' if at else ''}: key '{table}': [{table}] "
                              "and [topology] both say what the network is: give one")
    params = choice.params()
    for key in params:
        if key in rule.owned:
            raise ChoiceError(f"{where(key)}: {rule.why}: {key} is the spec's own key, "
                              "not the topology's")
    if choice.file is not None:
        path = Path(choice.file)
        builder = _file_builder(path)
        if rule.builders is not None and builder not in rule.builders:
            raise ChoiceError(f"{where('file')}: {path} {_built(builder)}; {rule.why}, so "
                              f"its file needs builder = {' or '.join(map(repr, rule.builders))}")
        _file_owns(path, rule)
        try:
            net = topofile.load(path, params | owned)
        except topologies.TopologyError as exc:
            raise ChoiceError(str(exc)) from None
    else:
        name = (choice.name or "").replace("-", "_")
        if rule.builders is not None and name not in rule.builders:
            raise ChoiceError(f"{where('name')}: {choice.name!r}: {rule.why}, so its topology "
                              f"is {' or '.join(map(repr, rule.builders))} (or a file with "
                              "that builder)")
        known = topologies.REGISTRY.get(name) and topologies.parameters(name)
        for key in params:
            if known and key not in known:
                mine = [k for k in known if k not in rule.owned]
                raise ChoiceError(f"{where(key)}: topology {name!r} has no parameter "
                                  f"{key!r}; known: {', '.join(mine)}")
        try:
            net = topologies.build(choice.name or "", **(params | owned))
        except topologies.TopologyError as exc:
            named = next((k for k in params if re.search(rf"\b{re.escape(k)}\b", str(exc))),
                         "name")
            raise ChoiceError(f"{where(named)}: {exc}") from None
    for host in rule.hosts:
        if host not in net.nodes or net.nodes[host].role != "host":
            hosts = [n for n, v in net.nodes.items() if v.role == "host"]
            raise ChoiceError(f"{where()}: topology {net.name!r} has no host {host!r} "
                              f"({rule.why}; its hosts: {', '.join(hosts) or 'none'})")
    return net


def _built(builder: str | None) -> str:
    return f"is built by {builder!r}" if builder else "writes its network out"


def _file_builder(path: Path) -> str | None:
    try:
        data = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError):
        return None  # topofile.load reports it
    builder = data.get("builder")
    return builder.replace("-", "_") if isinstance(builder, str) else None


def _file_owns(path: Path, rule: Rule) -> None:
    """A topology file must not set what the spec owns (or impair links, where refused)."""
    try:
        text = path.read_text()
        data = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError):
        return
    lines = text.splitlines()
    for key in rule.owned:
        if key in (data.get("params") or {}):
            at = next((i + 1 for i, ln in enumerate(lines)
                       if re.match(rf"^\s*{re.escape(key)}\s*=", ln)), None)
            raise ChoiceError(f"{path}{f':{at}' if at else ''}: key 'params.{key}': "
                              f"{rule.why}: {key} is the spec's own key, not the topology "
                              "file's")
    if not rule.impair and data.get("impair"):
        at = next((i + 1 for i, ln in enumerate(lines) if re.match(r"^\s*\[\[\s*impair", ln)),
                  None)
        raise ChoiceError(f"{path}{f':{at}' if at else ''}: key 'impair': {rule.why}: "
                          "[[impair]] would change the links it measures")


def _line(text: str, key: str | None) -> str:
    """':N' of ``key`` in the spec's [topology] table (its header line without a key)."""
    lines = text.splitlines()
    head = next((i for i, ln in enumerate(lines) if re.match(r"^\s*\[\s*topology\s*\]", ln)),
                None)
    if head is None:
        inline = next((i for i, ln in enumerate(lines) if re.match(r"^\s*topology\s*=", ln)),
                      None)
        return f":{inline + 1}" if inline is not None else ""
    if key is not None:
        pat = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
        for i in range(head + 1, len(lines)):
            if lines[i].lstrip().startswith("["):
                break
            if pat.match(lines[i]):
                return f":{i + 1}"
    return f":{head + 1}"

"""A running lab as it is: nodes with the addresses their kernel holds, links as asked,
as applied (the qdiscs the kernel holds) and, on request, as measured (ping across each
link); what ``testbed lab inspect`` prints (``topo show``, but live)."""

from __future__ import annotations

import ipaddress
import json
import statistics
import threading
from typing import TYPE_CHECKING, Any

from topologies.model import Link
from topologies.show import spec_text

from ..host.nsexec import run

if TYPE_CHECKING:
    from ..lab.lab import Lab


def snapshot(lab: Lab, measure: bool = False) -> dict[str, Any]:
    """Nodes, links (asked / applied / measured) and appliance calibration of ``lab``."""
    net = lab.network
    nodes = []
    for name, node in net.nodes.items():
        entry: dict[str, Any] = {"name": name, "role": node.role}
        if node.role == "switch":
            entry |= {"kind": node.kind, "netns": "root"}
        else:
            pid = lab.pid(name)
            out = run(["ip", "-j", "addr", "show"], pid, check=False).stdout
            entry |= {"pid": pid, "interfaces": [
                {"dev": i["ifname"], "state": i.get("operstate"),
                 "addrs": [f"{a['local']}/{a['prefixlen']}" for a in i.get("addr_info", [])
                           if a.get("scope") not in ("host", "link")]}
                for i in json.loads(out or "[]") if i["ifname"] != "lo"]}
        nodes.append(entry)
    applied = {(r["node"], r["dev"]): r for r in lab.links_readback()}
    links: list[dict[str, Any]] = []
    for li in net.links:
        item: dict[str, Any] = {
            "a": f"{li.a.node}:{li.a.name}", "b": f"{li.b.node}:{li.b.name}",
            "a_addrs": list(li.a.addrs), "b_addrs": list(li.b.addrs),
            "asked": {"a_to_b": spec_text(li.a_to_b), "b_to_a": spec_text(li.b_to_a)},
            "applied": {end.name: _qdiscs(applied[(end.node, end.name)]["kernel"])
                        for end in (li.a, li.b) if (end.node, end.name) in applied}}
        carried = next((al for al in lab.appliance_links if al.link is li), None)
        if carried is not None:
            item["appliance"] = {"netem": _qdiscs(lab.appliance_qdiscs(carried)),
                                 "calibration": carried.calibration}
        links.append(item)
    if measure:
        _measure(lab, net.links, links)
    return {"topology": net.name, "params": net.params, "run_id": lab.run_id,
            "stack_mode": lab.stack_mode, "nodes": nodes, "links": links,
            "routes": len(net.routes), "stacks": len(net.stacks),
            "appliance": lab.appliance is not None}


def _qdiscs(held: list[dict[str, Any]]) -> list[str]:
    """The kernel's qdiscs on a device, one line each: kind, options, drops."""
    out = []
    for q in held:
        opts = []
        for k, v in (q.get("options") or {}).items():
            if isinstance(v, dict):
                opts += [f"{k}.{kk}={vv}" for kk, vv in v.items() if not isinstance(vv, dict)]
            elif k == "rate" and isinstance(v, int | float):  # tc's JSON: bytes/s
                opts.append(f"rate={v * 8 / 1e6:g}Mbit")
            elif not isinstance(v, list):
                opts.append(f"{k}={v}")
        out.append(f"{q.get('kind')} {' '.join(opts)} drops={q.get('drops', 0)}".strip())
    return out


def _ping_target(li: Link) -> str | None:
    for addr in li.b.addrs:
        if ipaddress.ip_interface(addr).version == 4 and li.a.addrs:
            return str(ipaddress.ip_interface(addr).ip)
    return None


def _measure(lab: Lab, links: list[Link], items: list[dict[str, Any]]) -> None:
    """The RTT across each addressed host-to-host link (10 pings, a to b), in parallel."""
    from ..measure.path import ping

    def one(li: Link, item: dict[str, Any]) -> None:
        target = _ping_target(li)
        if target is None or lab.pid(li.a.node) is None:
            item["measured"] = None
            return
        got = ping(lab, li.a.node, target, count=10, interval_s=0.05)
        item["measured"] = {"to": target, "loss_pct": got["loss_pct"],
                            "rtt_p50_ms": round(statistics.median(got["rtts_ms"]), 3)
                            if got.get("rtts_ms") else None}

    threads = [threading.Thread(target=one, args=(li, it), daemon=True)
               for li, it in zip(links, items, strict=True)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)


def render(snap: dict[str, Any], record: dict[str, Any]) -> str:
    """``snap`` (and the lab's record) as text."""
    params = ", ".join(f"{k}={v}" for k, v in snap["params"].items())
    where = record.get("placement", {}).get("where", "?")
    out = [f"lab {record['name']}: topology {snap['topology']} ({params})",
           f"  supervisor pid {record['pid']}, run {snap['run_id']}, placement {where}"
           + (", impairment appliance up" if snap["appliance"] else ""), "",
           f"nodes ({len(snap['nodes'])}):"]
    for n in snap["nodes"]:
        if n["role"] == "switch":
            out.append(f"  {n['name']:10} switch ({n['kind']}, root namespace)")
            continue
        intfs = "; ".join(f"{i['dev']} {i['state']} {' '.join(i['addrs'])}".strip()
                          for i in n["interfaces"])
        out.append(f"  {n['name']:10} {n['role']:7} pid {n['pid']:<8} {intfs}")
    out += ["", f"links ({len(snap['links'])}):"]
    for li in snap["links"]:
        out.append(f"  {li['a']} {','.join(li['a_addrs'])} <-> {li['b']} "
                   f"{','.join(li['b_addrs'])}")
        ab, ba = li["asked"]["a_to_b"], li["asked"]["b_to_a"]
        out.append(f"    asked    {ab}" if ab == ba else f"    asked    ->: {ab}; <-: {ba}")
        for dev, qs in li["applied"].items():
            out.append(f"    applied  {dev}: {' | '.join(qs) or 'no qdisc'}")
        if "appliance" in li:
            cal = li["appliance"]["calibration"]
            out.append(f"    appliance netem: {' | '.join(li['appliance']['netem'])}")
            out.append(f"    appliance own RTT {cal.get('appliance_rtt_ms')} ms, applied "
                       f"delay {cal.get('applied_delay_ms')} ms, RTT measured "
                       f"{cal.get('measured_rtt_ms')} ms"
                       + (" (below the appliance's floor)" if cal.get("below_floor") else ""))
        if "measured" in li:
            m = li["measured"]
            out.append("    measured (no addressed host-to-host path)" if m is None else
                       f"    measured ping {m['to']}: RTT p50 {m['rtt_p50_ms']} ms, loss "
                       f"{m['loss_pct']} %")
    out += ["", f"{snap['routes']} routes, {snap['stacks']} function stacks"
                + (f" ({snap['stack_mode']})" if snap["stacks"] else "")]
    return "\n".join(out)

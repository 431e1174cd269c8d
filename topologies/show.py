"""Human-readable listing of a network plan: what ``testbed topo show NAME`` prints."""

from __future__ import annotations

from .model import LinkSpec, Network


def spec_text(spec: LinkSpec) -> str:
    parts = []
    if spec.bw_mbps is not None:
        parts.append(f"{spec.bw_mbps:g} Mbit/s")
    if spec.delay_ms:
        parts.append(f"delay {spec.delay_ms:g} ms")
    if spec.jitter_ms:
        parts.append(f"jitter {spec.jitter_ms:g} ms" + (" (reorder)" if spec.reorder else ""))
    if spec.loss_pct:
        parts.append(f"loss {spec.loss_pct:g} %")
    if spec.queue_pkts:
        parts.append(f"queue {spec.queue_pkts} pkts")
    return ", ".join(parts) or "unshaped"


def render(net: Network) -> str:
    """Nodes, links with addresses and settings per direction, stacks, gateways, routes."""
    params = ", ".join(f"{k}={v}" for k, v in net.params.items())
    out = [f"topology {net.name} ({params})", "", f"nodes ({len(net.nodes)}):"]
    for role in ("router", "gateway", "host"):
        names = [n.name for n in net.nodes.values() if n.role == role]
        if names:
            out.append(f"  {role + 's':9} {' '.join(names)}")
    out += ["", f"links ({len(net.links)}):"]
    for li in net.links:
        a, b = li.a, li.b
        ends = f"  {a.name} {','.join(a.addrs)} <-> {b.name} {','.join(b.addrs)}"
        if li.a_to_b == li.b_to_a:
            out.append(f"{ends}  [{spec_text(li.a_to_b)}]")
        else:
            out.append(f"{ends}  [->: {spec_text(li.a_to_b)}; <-: {spec_text(li.b_to_a)}]")
    if net.stacks:
        out += ["", f"function stacks (mode {net.stack_mode}):"]
        for st in net.stacks:
            extra = "".join([f" cap {st.rate_mbps:g} Mbit/s" if st.rate_mbps else "",
                             f" dscp {st.dscp}" if st.dscp else ""])
            out.append(f"  {st.node:10} {st.function:12} {st.dev:14} {st.addr:18} "
                       f"gw {st.gateway:15} table {st.table}{extra}")
    for gw in net.gateways:
        out += ["", f"gateway {gw.node}: public {gw.public_addr} on {gw.outside_dev}, "
                    f"inside {', '.join(gw.inside_nets)}"]
        out += [f"  publish {p.proto} {gw.public_addr}:{p.port} -> {p.to_addr}:{p.to_port}"
                for p in gw.published]
        out.append("  everything else from outside: dropped")
    out += ["", f"routes ({len(net.routes)}):"]
    for r in net.routes:
        via = " ".join(r.via) if r.via else "direct"
        where = "".join([f" dev {r.dev}" if r.dev else "", f" src {r.src}" if r.src else "",
                         f" table {r.table}" if r.table is not None else ""])
        out.append(f"  {r.node:10} {r.dst:18} via {via}{where}")
    return "\n".join(out)

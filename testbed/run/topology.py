"""The network each experiment kind runs on, from its spec.

One place for the kinds (``testbed.run.kinds``) and for ``testbed lab up SPEC``: a spec's
``[topology]`` table (``testbed.run.spec.TopologyChoice``) where its kind accepts one, else
the kind's own builder with the spec's keys.
"""

from __future__ import annotations

from typing import Any

from topologies.cloud import cloud
from topologies.model import HostTcp, Link, Network
from topologies.pair import pair
from topologies.spine_leaf import spine_leaf
from topologies.wan import wan

from .spec import CloudSpec, Common, CoreLoadSpec, LongDistanceSpec, RdmaSpec, SmokeSpec
from .topochoice import TopologyChoice, build


def chosen(choice: TopologyChoice, **owned: Any) -> Network:
    """The network of a ``[topology]`` choice, with the kind's ``owned`` parameters (e.g.
    long-distance's rtt_ms) set on it."""
    return build(choice, owned)


def direct_link(net: Network, a: str, b: str) -> Link | None:
    """The one link joining nodes ``a`` and ``b``, if there is one."""
    found = [li for li in net.links if {li.a.node, li.b.node} == {a, b}]
    return found[0] if len(found) == 1 else None


def network_of(spec: Common, rtt_ms: float | None = None,
               loss_pct: float | None = None) -> Network:
    """The network ``spec``'s kind runs on (:func:`_built`), its hosts' TCP as the spec says."""
    net = _built(spec, rtt_ms, loss_pct)
    net.host_tcp = HostTcp(congestion=spec.tcp_congestion)
    return net


def _built(spec: Common, rtt_ms: float | None, loss_pct: float | None) -> Network:
    """The network ``spec``'s kind runs on (long-distance, rdma: at ``rtt_ms``, default its
    first RTT; rdma: at ``loss_pct``, default its first)."""
    choice = getattr(spec, "topology", None)
    if isinstance(spec, SmokeSpec):
        if choice is not None:
            return chosen(choice)
        p = spec.link
        return pair(delay_ms=p.delay_ms, bw_mbps=p.bw_mbps, jitter_ms=p.jitter_ms,
                    loss_pct=p.loss_pct)
    if isinstance(spec, LongDistanceSpec):
        rtt = spec.rtt_ms[0] if rtt_ms is None else rtt_ms
        wan_keys = {"rtt_ms": rtt, "bw_mbps": spec.bw_mbps, "loss_pct": spec.loss_pct,
                    "jitter_ms": spec.jitter_ms}
        if choice is not None:
            return chosen(choice, **wan_keys)
        return wan(sites=2, hosts_per_leaf=1, **wan_keys)
    if isinstance(spec, CoreLoadSpec):
        return spine_leaf(spines=spec.spines, leaves=spec.leaves,
                          hosts_per_leaf=spec.hosts_per_leaf,
                          host_link_mbps=spec.host_link_mbps,
                          fabric_link_mbps=spec.fabric_link_mbps, ecmp_hash=spec.ecmp_hash,
                          stacks=True)
    if isinstance(spec, RdmaSpec):
        rtt = spec.rtt_ms[0] if rtt_ms is None else rtt_ms
        loss = spec.loss_pct[0] if loss_pct is None else loss_pct
        return pair(delay_ms=rtt / 2, bw_mbps=spec.bw_mbps, loss_pct=loss,
                    queue_pkts=spec.queue_pkts)
    if isinstance(spec, CloudSpec):
        return cloud(onprem_hosts=1, cloud_hosts=1, rtt_ms=spec.rtt_ms, bw_mbps=spec.bw_mbps)
    raise TypeError(f"no network for experiment kind {spec.kind!r}")

"""Link shaping: netem (delay, jitter, loss, rate) or tbf, sized for the path's BDP.

With any delay/jitter/loss, one netem qdisc does everything, rate included: netem's ``rate``
serialises packets (each leaves after the one before it, plus its transmission time, and at
least ``delay`` after it arrived; see sch_netem.c, "last packet in queue is reference point"),
so it is a link with a bottleneck queue followed by propagation delay, and jitter never
reorders. Its ``limit`` (default 1000 packets) must hold the delay line at the configured
rate plus the bottleneck buffer, or the emulator itself drops at high bandwidth-delay
products; it is sized from the BDP here. Measured in the VM: netem at the root with a tbf
child drops in slow start, because its delay line fills at the sender's burst rate.
A link with a rate only uses tbf (which the host kernel has even without netem).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, replace

from topologies.model import LinkSpec

from ..host.nsexec import run

MTU_WIRE = 1514  # bytes of a full Ethernet frame as the qdiscs count it
UNSHAPED_RATE_MBPS = 40_000.0  # what an unshaped veth may carry; sizes netem's delay line
MIN_NETEM_LIMIT = 1000


@dataclass(frozen=True)
class QdiscPlan:
    """The tc commands for one interface and the sizing behind them."""

    dev: str
    commands: tuple[tuple[str, ...], ...]
    netem_limit_pkts: int | None
    tbf_burst_bytes: int | None
    tbf_limit_bytes: int | None


def buffer_pkts(spec: LinkSpec, rtt_ms: float) -> int:
    """The bottleneck queue in packets: ``queue_pkts``, else one BDP of the path's RTT."""
    if spec.queue_pkts:
        return spec.queue_pkts
    rate = spec.bw_mbps or UNSHAPED_RATE_MBPS
    return max(64, math.ceil(rate * 1e6 / 8 * max(rtt_ms, 1.0) / 1000 / MTU_WIRE))


def netem_limit(spec: LinkSpec, rtt_ms: float) -> int:
    """Packets netem must hold: the delay line at full rate plus the bottleneck buffer."""
    rate = spec.bw_mbps or UNSHAPED_RATE_MBPS
    seconds = (spec.delay_ms + 4 * spec.jitter_ms) / 1000.0
    delay_line = math.ceil(rate * 1e6 / 8 * seconds / MTU_WIRE * 1.25)
    buffered = buffer_pkts(spec, rtt_ms) if spec.bw_mbps else 0
    return max(MIN_NETEM_LIMIT, delay_line + buffered + 100)


def tbf_sizes(spec: LinkSpec, rtt_ms: float, min_burst: int = 0) -> tuple[int, int]:
    """tbf burst (about 1 ms of data, at least 2 frames, at least ``min_burst``) and queue
    limit, in bytes."""
    assert spec.bw_mbps is not None
    burst = max(2 * MTU_WIRE, min_burst, math.ceil(spec.bw_mbps * 1e6 / 8 / 1000))
    return burst, buffer_pkts(spec, rtt_ms) * MTU_WIRE + burst


def plan(dev: str, spec: LinkSpec, rtt_ms: float | None = None,
         min_burst: int = 0) -> QdiscPlan:
    """tc commands that give ``dev``'s egress the impairments of ``spec``.

    ``rtt_ms`` is the path's round-trip time used to size the bottleneck queue (defaults to
    twice this direction's delay); ``min_burst`` a floor for tbf's burst (bytes).
    """
    rtt = rtt_ms if rtt_ms is not None else 2 * spec.delay_ms
    cmds: list[tuple[str, ...]] = [("tc", "qdisc", "del", "dev", dev, "root")]
    limit = burst = tbf_limit = None
    if spec.needs_netem:
        limit = netem_limit(spec, rtt)
        netem = ["tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "netem",
                 "limit", str(limit)]
        if spec.delay_ms or spec.jitter_ms:
            netem += ["delay", f"{spec.delay_ms}ms"]
            if spec.jitter_ms:
                netem += [f"{spec.jitter_ms}ms", "distribution", "normal"]
        if spec.loss_pct:
            netem += ["loss", "random", f"{spec.loss_pct}%"]
        if spec.bw_mbps is not None:
            netem += ["rate", f"{int(spec.bw_mbps * 1e6)}bit"]
        elif spec.jitter_ms and not spec.reorder:
            # rate mode serialises packets: none overtakes the one before it.
            netem += ["rate", f"{int(UNSHAPED_RATE_MBPS * 1e6)}bit"]
        cmds.append(tuple(netem))
    elif spec.bw_mbps is not None:
        burst, tbf_limit = tbf_sizes(spec, rtt, min_burst)
        cmds.append(("tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "tbf",
                     "rate", f"{int(spec.bw_mbps * 1e6)}bit",
                     "burst", str(burst), "limit", str(tbf_limit)))
    return QdiscPlan(dev, tuple(cmds), limit, burst, tbf_limit)


#: tbf's burst on an appliance link's tap: one whole GSO packet (64 KiB and its headers), so
#: tbf does not cut TCP's segments up (a NIC with TSO sends such bursts too): the TCG guest's
#: cost is per packet, and whole GSO packets let it carry several times the rate.
GSO_BURST = 65536 + 2 * MTU_WIRE


def host_part(spec: LinkSpec) -> LinkSpec:
    """What the host shapes of an appliance link: the rate (tbf is exact on the host)."""
    return LinkSpec(bw_mbps=spec.bw_mbps, queue_pkts=spec.queue_pkts)


def appliance_plan(dev: str, spec: LinkSpec, delay_ms: float, rtt_ms: float) -> QdiscPlan:
    """The netem of one direction of an appliance link, on the guest NIC ``dev``.

    Delay (``delay_ms``: the asked one-way delay less what the appliance itself adds), jitter
    and loss; no rate (the host's tbf has shaped the traffic already) but a queue sized for the
    delay line at the link's rate. With jitter and no reordering asked, netem's rate mode
    serialises the packets at the link's rate so none overtakes another.
    """
    limit = netem_limit(replace(spec, delay_ms=delay_ms), rtt_ms)
    netem = ["tc", "qdisc", "replace", "dev", dev, "root", "handle", "1:", "netem",
             "limit", str(limit), "delay", f"{delay_ms:.3f}ms"]
    if spec.jitter_ms:
        netem += [f"{spec.jitter_ms}ms", "distribution", "normal"]
        if not spec.reorder:
            netem += ["rate", f"{int((spec.bw_mbps or UNSHAPED_RATE_MBPS) * 1e6)}bit"]
    if spec.loss_pct:
        netem += ["loss", "random", f"{spec.loss_pct}%"]
    return QdiscPlan(dev, (tuple(netem),), limit, None, None)


def apply(qplan: QdiscPlan, pid: int | None) -> None:
    """Install ``qplan`` in the network namespace of ``pid``."""
    first, *rest = qplan.commands
    run(first, pid, check=False)  # nothing to delete is fine
    for cmd in rest:
        run(cmd, pid)


def readback(dev: str, pid: int | None) -> list[dict[str, object]]:
    """What the kernel holds on ``dev``: every qdisc with its options and statistics."""
    out = run(["tc", "-s", "-j", "qdisc", "show", "dev", dev], pid).stdout
    return json.loads(out or "[]")


def qdisc_drops(dev: str, pid: int | None) -> int:
    """Packets dropped by the emulator's own qdiscs on ``dev``."""
    return sum(int(q.get("drops", 0)) for q in readback(dev, pid))


def describe(qplan: QdiscPlan) -> dict[str, object]:
    return asdict(qplan)

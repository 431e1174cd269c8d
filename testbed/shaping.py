"""Link shaping: netem (delay, jitter, loss) and a rate shaper, sized for the path's BDP.

Layout on an interface's egress, as in tc-netem(8)'s rate-control example:
``netem`` at the root (delay line), ``tbf`` as its child (the bottleneck queue). netem's
``limit`` (default 1000 packets) must hold every packet in flight on the delay line, or the
emulator itself drops at high bandwidth-delay products; it is sized from the BDP here.
Jitter without reordering uses netem's ``rate`` option, which makes netem schedule each
packet after the previous one (see sch_netem.c, "last packet in queue is reference point").
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass

from topologies.model import LinkSpec

from .nsexec import run

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


def netem_limit(spec: LinkSpec, rate_mbps: float | None) -> int:
    """Packets netem must hold: the delay line at full rate, with 50 % headroom."""
    rate = rate_mbps or UNSHAPED_RATE_MBPS
    seconds = (spec.delay_ms + 4 * spec.jitter_ms) / 1000.0
    in_flight = rate * 1e6 / 8 * seconds / MTU_WIRE
    return max(MIN_NETEM_LIMIT, math.ceil(in_flight * 1.5) + 100)


def tbf_sizes(spec: LinkSpec, rtt_ms: float) -> tuple[int, int]:
    """tbf burst (about 1 ms of data, at least 2 frames) and queue limit in bytes.

    The queue holds one BDP of the whole path (or ``queue_pkts`` frames if given), the classic
    buffer rule for one TCP flow to fill the link.
    """
    assert spec.bw_mbps is not None
    bytes_per_s = spec.bw_mbps * 1e6 / 8
    burst = max(2 * MTU_WIRE, math.ceil(bytes_per_s / 1000))
    if spec.queue_pkts:
        limit = spec.queue_pkts * MTU_WIRE
    else:
        limit = max(64 * MTU_WIRE, math.ceil(bytes_per_s * max(rtt_ms, 1.0) / 1000))
    return burst, limit + burst


def plan(dev: str, spec: LinkSpec, rtt_ms: float | None = None) -> QdiscPlan:
    """tc commands that give ``dev``'s egress the impairments of ``spec``.

    ``rtt_ms`` is the path's round-trip time used to size the bottleneck queue (defaults to
    twice this direction's delay).
    """
    rtt = rtt_ms if rtt_ms is not None else 2 * spec.delay_ms
    cmds: list[tuple[str, ...]] = [("tc", "qdisc", "del", "dev", dev, "root")]
    limit = burst = tbf_limit = None
    if spec.needs_netem:
        limit = netem_limit(spec, spec.bw_mbps)
        netem = ["tc", "qdisc", "add", "dev", dev, "root", "handle", "1:", "netem",
                 "limit", str(limit)]
        if spec.delay_ms or spec.jitter_ms:
            netem += ["delay", f"{spec.delay_ms}ms"]
            if spec.jitter_ms:
                netem += [f"{spec.jitter_ms}ms", "distribution", "normal"]
        if spec.loss_pct:
            netem += ["loss", "random", f"{spec.loss_pct}%"]
        if spec.jitter_ms and not spec.reorder:
            # netem's rate mode serialises packets: no packet overtakes the one before it.
            line = spec.bw_mbps or UNSHAPED_RATE_MBPS
            netem += ["rate", f"{int(line * 1e6)}bit"]
        cmds.append(tuple(netem))
    if spec.bw_mbps is not None:
        burst, tbf_limit = tbf_sizes(spec, rtt)
        parent = ["parent", "1:1", "handle", "10:"] if spec.needs_netem else \
            ["root", "handle", "1:"]
        cmds.append(("tc", "qdisc", "add", "dev", dev, *parent, "tbf",
                     "rate", f"{int(spec.bw_mbps * 1e6)}bit",
                     "burst", str(burst), "limit", str(tbf_limit)))
    return QdiscPlan(dev, tuple(cmds), limit, burst, tbf_limit)


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

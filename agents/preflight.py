"""Preflight's bandwidth judgement: what the source's probe on the control stream says of
the path, against a vMotion-like floor (250 Mbit/s); the probe itself is
``agents.source.preflight``.

The bandwidth probe is a few MiB from a cold connection. On a long path that is mostly TCP
slow start and the receiver's window opening, not the path: measured through the testbed's
WAN (250 Mbit/s) the probe's average was 235, 100, 60, 42 and 32 Mbit/s at 1, 50, 100, 150
and 200 ms. So the estimate is the better of the probe's average and the most it delivered
over any one round trip (bytes acknowledged, cumulatively or selectively, over a window of
the RTT, at least 50 ms: the highest such rate is how BBR estimates a path's bandwidth; the
kernel's per-ACK samples overshoot where ACKs arrive bunched, 359 Mbit/s on the 250 Mbit/s
WAN at 1 ms), and the bandwidth is judged only where the path itself limited the probe;
where slow start or the receiver's window did, the estimate is a lower bound and said to be
one. The floor is compared with TCP payload: a link of the floor's rate carries about 0.95 of
it as payload (headers, ACKs), so payload at 90 % of the floor passes, as iperf3 /
configured >= 0.9 does for the testbed's links.
"""

from __future__ import annotations

from dataclasses import dataclass

from agents.wire.delivery import PathSignals

PAYLOAD_SHARE = 0.9  # of the floor's rate, as TCP payload, passes
RWND_LIMITED = 0.1  # share of the probe's time the receiver's window held it back: not the path


@dataclass(frozen=True)
class Bandwidth:
    estimate_bps: float  # TCP payload, bit/s: a lower bound unless ``limited_by`` is "path"
    limited_by: str  # path | slow start | receive window | cap | unknown
    problem: str | None  # below the floor, where that was judged


def judge_bandwidth(probe_bps: float, probe_s: float, delivered_bps: float | None,
                    end: PathSignals | None, floor_bps: float,
                    cap_bps: float | None = None) -> Bandwidth:
    """The bandwidth estimate from a probe's average rate over ``probe_s`` seconds, the most
    it delivered over any round trip (``delivered_bps``) and what the kernel said at its end
    (both None where the stream is no TCP socket), and whether it falls below ``floor_bps``
    (module docstring). A migration capped at ``cap_bps`` gets no more than that, whatever
    held its probe back."""
    estimate = max(probe_bps, delivered_bps or 0.0)
    limited_by = "unknown" if end is None else "slow start" if end.slow_start else \
        "receive window" if end.rwnd_limited_s > RWND_LIMITED * probe_s else "path"
    if cap_bps is not None and cap_bps < PAYLOAD_SHARE * floor_bps:
        estimate, limited_by = min(estimate, cap_bps), "cap"
    problem = None
    if estimate < PAYLOAD_SHARE * floor_bps and limited_by in ("path", "unknown", "cap"):
        problem = (f"bandwidth {estimate / 1e6:.0f} Mbit/s of TCP payload below "
                   f"{PAYLOAD_SHARE * 100:.0f} % of {floor_bps / 1e6:.0f} Mbit/s"
                   + (" (the migration's cap)" if limited_by == "cap" else ""))
    return Bandwidth(estimate, limited_by, problem)

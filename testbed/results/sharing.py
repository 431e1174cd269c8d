"""How concurrent flows share a network: max-min fair rates recomputed as flows finish.

Fair sharing among the migrations of a burst is only as even as their paths: ECMP may hash
three of four onto one spine, whose uplink then gives each a third while the fourth has a
link of its own. Given each flow's links (the spine it really took, measured), the links'
capacities and each flow's bytes, progressive filling (Bertsekas and Gallager's max-min
fairness) gives every active flow its rate; when one starts or finishes, the rates are shared
again. The result is each flow's completion time, hence its average rate: what a fluid model
of the network says a migration gets, given where it went and when it began.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Flow:
    name: str
    links: tuple[str, ...]
    volume: float  # bytes (math.inf: a flow that never ends, e.g. background traffic)
    cap: float = math.inf  # the flow's own limit (bytes/s), e.g. an application's rate
    start: float = 0.0  # seconds after the first flow's start


def max_min(flows: list[Flow], capacity: dict[str, float]) -> dict[str, float]:
    """Max-min fair rates (bytes/s) of ``flows`` over links of ``capacity`` (bytes/s)."""
    rates: dict[str, float] = {}
    left = dict(capacity)
    active = [f for f in flows]
    while active:
        users = {link: [f for f in active if link in f.links] for link in left}
        share = {link: left[link] / len(fs) for link, fs in users.items() if fs}
        level = min([*share.values(), *(f.cap for f in active)], default=math.inf)
        if math.isinf(level):  # flows on no capacity-limited link and without a cap
            raise ValueError(f"unbounded flows: {[f.name for f in active]}")
        frozen = [f for f in active if f.cap <= level or
                  any(share.get(link, math.inf) <= level for link in f.links)]
        for f in frozen:
            rates[f.name] = level
            for link in f.links:
                if link in left:
                    left[link] = max(0.0, left[link] - level)
        active = [f for f in active if f.name not in rates]
    return rates


@dataclass(frozen=True)
class Ending:
    seconds: float  # when the flow has sent its volume
    final_rate: float  # its rate (bytes/s) just before: what its last bytes got


def completion_times(flows: list[Flow], capacity: dict[str, float]) -> dict[str, float]:
    """Seconds until each finite flow has sent its volume (:func:`endings`)."""
    return {name: e.seconds for name, e in endings(flows, capacity).items()}


def endings(flows: list[Flow], capacity: dict[str, float]) -> dict[str, Ending]:
    """When each finite flow has sent its volume (seconds from the time origin of the
    flows' ``start``) and at what rate it ended, the rates shared again (:func:`max_min`)
    each time one starts or finishes."""
    remaining = {f.name: f.volume for f in flows}
    done: dict[str, Ending] = {}
    for f in flows:
        if f.volume <= 0:
            done[f.name] = Ending(f.start, 0.0)
    waiting = sorted((f for f in flows if f.volume > 0), key=lambda f: f.start)
    now = waiting[0].start if waiting else 0.0
    active: list[Flow] = []
    while waiting or any(not math.isinf(remaining[f.name]) for f in active):
        while waiting and waiting[0].start <= now:
            active.append(waiting.pop(0))
        rates = max_min(active, capacity) if active else {}
        finite = [f for f in active if not math.isinf(remaining[f.name])]
        steps = [remaining[f.name] / rates[f.name] for f in finite]
        if waiting:  # the next flow to start
            steps.append(waiting[0].start - now)
        step = min(steps)
        now += step
        for f in finite:
            remaining[f.name] -= rates[f.name] * step
            if remaining[f.name] <= 1e-6 * max(f.volume, 1.0):
                done[f.name] = Ending(now, rates[f.name])
        active = [f for f in active if f.name not in done]
    return done

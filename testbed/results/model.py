"""The analytical pre-copy model, to put every measured migration next to a prediction.

With image size V (bytes), link rate R (bytes/s), dirty rate D (bytes/s) and n pre-copy
rounds after the first, lambda = D / R and (Clark et al., NSDI'05; Liu et al.):

    T_mig  = V / R * (1 - lambda**(n + 1)) / (1 - lambda)
    T_down = V * lambda**n / R

:func:`forecast` feeds it what a user would (:func:`inputs_from`: V the bytes round 0 had to
send, R iperf3 on the same path shared among the migrations beside it, D the dirty rate the
tracker measured), predicts the rounds by its own stop rule and adds one RTT per round and the
measured resume time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

DEVIATION_FLAG = 0.20


@dataclass(frozen=True)
class Prediction:
    ratio: float  # lambda = D / R
    migration_time_s: float
    downtime_ms: float


def precopy(image_bytes: float, rate_bytes_s: float, dirty_bytes_s: float,
            rounds: int) -> Prediction:
    """Predicted total migration time and downtime for ``rounds`` pre-copy rounds.

    ``rounds`` counts every round including the first full copy, so n = rounds - 1.
    """
    if image_bytes < 0 or rate_bytes_s <= 0 or dirty_bytes_s < 0 or rounds < 1:
        raise ValueError("need image_bytes >= 0, rate > 0, dirty rate >= 0, rounds >= 1")
    lam = dirty_bytes_s / rate_bytes_s
    n = rounds - 1
    if abs(1 - lam) < 1e-9:
        total = image_bytes / rate_bytes_s * (n + 1)
    else:
        total = image_bytes / rate_bytes_s * (1 - lam ** (n + 1)) / (1 - lam)
    down = image_bytes * lam ** n / rate_bytes_s
    return Prediction(lam, total, down * 1000.0)


def deviation(measured: float, predicted: float) -> float | None:
    """Relative deviation of ``measured`` from ``predicted`` (None when undefined)."""
    if predicted <= 0:
        return None
    return (measured - predicted) / predicted


def flagged(dev: float | None) -> bool:
    return dev is not None and abs(dev) > DEVIATION_FLAG


@dataclass(frozen=True)
class ModelInputs:
    """What a user would feed the model for one migration, all taken from the measurement."""

    volume_bytes: float  # V: what round 0 had to send (zero pages travel as references)
    rate_bytes_s: float  # R: iperf3 on the same path, shared by the migrations beside it
    dirty_bytes_s: float  # D: the dirty rate the tracker measured (unique pages per second)
    downtime_target_ms: float
    max_rounds: int
    rtt_s: float = 0.0  # one round trip per round (its end is acknowledged), two at the stop
    #                     (the image to PREPARED, then GO to the destination's DECISION)
    resume_s: float = 0.0  # measured: the destination's resume and its network move (hook)
    check_s: float = 0.0  # measured: the source's check of the paused original (it overlaps
    #                       the round trip to the destination's answer)


@dataclass(frozen=True)
class Forecast:
    rounds: int  # by the model's own stop rule, the stop-and-copy round included
    migration_time_s: float
    downtime_ms: float
    ratio: float


def stop_round(inp: ModelInputs) -> int:
    """The rounds the model predicts (QEMU's rule, as the agents use it): pre-copy until what
    is left, V lambda^n, fits the downtime target at rate R, or the round limit."""
    lam = inp.dirty_bytes_s / inp.rate_bytes_s
    target_bytes = inp.downtime_target_ms / 1000.0 * inp.rate_bytes_s
    for n in range(1, max(inp.max_rounds, 2)):
        if inp.volume_bytes * lam ** n <= target_bytes:
            return n + 1
    return max(inp.max_rounds, 2)


def forecast(inp: ModelInputs) -> Forecast:
    """Rounds, total time and downtime of a pre-copy migration, per-round latency included."""
    rounds = stop_round(inp)
    p = precopy(inp.volume_bytes, inp.rate_bytes_s, inp.dirty_bytes_s, rounds)
    total = p.migration_time_s + rounds * inp.rtt_s + inp.resume_s
    down = p.downtime_ms + (max(inp.rtt_s, inp.check_s) + inp.rtt_s + inp.resume_s) * 1000.0
    return Forecast(rounds, total, down, p.ratio)


def inputs_from(m: dict[str, Any]) -> ModelInputs | None:
    """The model's inputs from one measured migration (None: not enough was measured)."""
    rate_mbps = m.get("fair_share_mbps") or m.get("iperf3_mbps")
    sent, zeros = m.get("pages_sent_per_round") or [], m.get("zero_pages_per_round") or []
    secs, dirty = m.get("round_seconds") or [], m.get("dirty_pages_per_round") or []
    if not rate_mbps or not sent or not secs:
        return None
    ps = m.get("page_size", 4096)
    volume = (sent[0] - (zeros[0] if zeros else 0)) * ps
    precopy_dirty = dirty[:len(secs)]
    dirty_rate = sum(precopy_dirty) * ps / max(sum(secs[:len(precopy_dirty)]), 1e-9)
    rtt_ms = m.get("rtt_measured_ms") or m.get("rtt_ms") or 0.0
    resume_ms = (m.get("resume_ms") or 0.0) + \
        ((m.get("hooks") or {}).get("on_resume") or {}).get("ms", 0.0)
    return ModelInputs(volume, rate_mbps * 1e6 / 8, dirty_rate,
                       m.get("downtime_target_ms") or 300.0, m.get("max_rounds") or 30,
                       rtt_ms / 1000.0, resume_ms / 1000.0,
                       (m.get("source_verify_ms") or 0.0) / 1000.0)

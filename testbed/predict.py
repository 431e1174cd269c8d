"""The analytical pre-copy model, to put every measured migration next to a prediction.

With image size V (bytes), link rate R (bytes/s), dirty rate D (bytes/s) and n pre-copy
rounds after the first, lambda = D / R and (Clark et al., NSDI'05; Liu et al.):

    T_mig  = V / R * (1 - lambda**(n + 1)) / (1 - lambda)
    T_down = V * lambda**n / R
"""

from __future__ import annotations

from dataclasses import dataclass

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

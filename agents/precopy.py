"""Pre-copy policy: when to switch over, when to give up converging, how hard to throttle.

Switchover follows QEMU: the pages still dirty must fit in the downtime limit at the measured
bandwidth (threshold = bandwidth x downtime limit). Xen's stop conditions bound the effort:
a maximum number of rounds or of total bytes sent. Convergence assist follows QEMU's
auto-converge / vMotion's SDPS: when the guest dirties faster than half the link drains,
it is throttled, starting at 20 % and adding 10 % per round, up to 99 % (how: see
``agents.guest.throttle``: cgroup CPU quota or stop/continue duty cycles).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class PrecopyPolicy:
    downtime_limit_s: float = 0.3
    max_rounds: int = 30
    max_bytes: int | None = None  # default: 3 x image size, set by the source
    auto_converge: bool = True
    throttle_initial: float = 0.2
    throttle_step: float = 0.1
    throttle_max: float = 0.99

    def switchover(self, round_no: int, remaining_bytes: int, bandwidth_Bps: float,
                   total_sent: int) -> str | None:
        """The reason to stop and copy now, or None to run another round."""
        if remaining_bytes <= bandwidth_Bps * self.downtime_limit_s:
            return "converged"
        if round_no + 1 >= self.max_rounds:
            return "max-rounds"
        if self.max_bytes is not None and total_sent >= self.max_bytes:
            return "max-bytes"
        return None

    def next_throttle(self, current: float, dirty_Bps: float, bandwidth_Bps: float) -> float:
        """Throttle level for the next round given the dirty rate seen in the last one."""
        if not self.auto_converge or dirty_Bps <= 0.5 * bandwidth_Bps:
            return current
        if current <= 0:
            return self.throttle_initial
        return min(self.throttle_max, current + self.throttle_step)

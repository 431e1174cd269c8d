"""Long-running probes started in lab nodes and read back after: a management-plane ping.

The ping runs for the whole experiment with ``-D`` timestamps; any time window (idle, during
a burst) is then summarised from the replies and the sequence numbers that never came back.
"""

from __future__ import annotations

import bisect
import re
import signal
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..lab.lab import Lab

REPLY = re.compile(r"^\[(\d+\.\d+)\].*icmp_seq=(\d+).*time=([\d.]+) ms")


@dataclass
class PingProbe:
    """``ping -D -i interval -I src dst`` in ``node`` for as long as it runs."""

    lab: Lab
    node: str
    src: str
    dst: str
    interval_s: float = 0.02
    proc: subprocess.Popen[str] | None = None
    started_wall: float = 0.0
    started_mono: float = 0.0
    replies: list[tuple[float, int, float]] = field(default_factory=list)  # (t_mono, seq, rtt)
    sent: int = 0
    _out: Any = None

    def start(self) -> PingProbe:
        # into a file, not a pipe: nobody reads until the end, and a full pipe would stop ping
        self._out = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in stop)
        self.proc = self.lab.popen(
            self.node, ["ping", "-n", "-D", "-i", f"{self.interval_s:.3f}", "-W", "2", "-I",
                        self.src, self.dst], stdout=self._out, stderr=subprocess.STDOUT,
            text=True)
        self.started_wall, self.started_mono = time.time(), time.monotonic()
        return self

    def stop(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._out.seek(0)
        out = self._out.read()
        self._out.close()
        offset = self.started_mono - self.started_wall
        for line in out.splitlines():
            m = REPLY.match(line)
            if m:
                self.replies.append((float(m[1]) + offset, int(m[2]), float(m[3])))
        m = re.search(r"(\d+) packets transmitted", out)
        self.sent = int(m[1]) if m else (max((s for _, s, _ in self.replies), default=0))

    def window(self, t_from: float, t_to: float) -> dict[str, Any]:
        """RTT percentiles (ms) and loss of the probes *sent* within [t_from, t_to] (monotonic).

        An answered probe was sent at its reply's timestamp minus its RTT; a lost one between
        its answered neighbours (by sequence number). Not from the interval alone: a loaded
        machine (the emulated VM) sends late, and the drift adds up over a long run.
        """
        known = sorted((s, t - rtt / 1e3) for t, s, rtt in self.replies)
        seqs_known = [s for s, _ in known]

        def sent_at(seq: int) -> float:
            i = bisect.bisect_left(seqs_known, seq)
            if i < len(known) and known[i][0] == seq:
                return known[i][1]
            if 0 < i < len(known):  # between two answered probes
                (s0, t0), (s1, t1) = known[i - 1], known[i]
                return t0 + (t1 - t0) * (seq - s0) / (s1 - s0)
            if i > 0:  # after the last answer
                s0, t0 = known[i - 1]
                return t0 + (seq - s0) * self.interval_s
            return self.started_mono + (seq - 1) * self.interval_s

        seqs = [s for s in range(1, self.sent + 1) if t_from <= sent_at(s) <= t_to]
        got = {s: rtt for _, s, rtt in self.replies}
        rtts = [got[s] for s in seqs if s in got]
        out: dict[str, Any] = {"sent": len(seqs), "received": len(rtts),
                               "loss_pct": round(100 * (1 - len(rtts) / len(seqs)), 3)
                               if seqs else None}
        if len(rtts) >= 2:
            q = statistics.quantiles(rtts, n=100, method="inclusive")
            out |= {"rtt_p50_ms": round(q[49], 3), "rtt_p99_ms": round(q[98], 3),
                    "rtt_max_ms": max(rtts)}
        return out

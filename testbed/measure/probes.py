"""Long-running probes started in lab nodes and read back after: a management-plane ping.

The ping (fping) runs for the whole experiment with ``-D`` timestamps; any time window (idle,
during a burst) is then summarised from the replies and the sequence numbers that never came
back.

Not iputils ping: between probes sent less than 10 ms apart it spins (sched_yield in a loop,
ping_common.c: "Provide intervals less than resolution of scheduler. Solution: spinning"),
measured: ``ping -i 0.005`` took a whole core (0.35 s user + 2.63 s system in 3 s) and so half
of this 2-core machine during every core-load run; and it keeps no schedule (asked 10 ms,
20 ms: sent every 16 and 24 ms). fping waits in the kernel and sends on time: ``-p 5``, 600
probes in 3 s for 0.08 s of CPU.
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

# fping -D -l: "[1796314734.62190] 10.1.1.2 : [0], 64 bytes, 0.033 ms (0.033 avg, 0% loss)"
REPLY = re.compile(r"^\[(\d+\.\d+)\] \S+ : \[(\d+)\], \d+ bytes, ([\d.]+) ms")
SENT = re.compile(r"xmt/rcv/%loss = (\d+)/")


@dataclass
class PingProbe:
    """``fping -l -D -p interval -S src dst`` in ``node`` for as long as it runs."""

    lab: Lab
    node: str
    src: str
    dst: str
    interval_s: float = 0.02
    proc: subprocess.Popen[str] | None = None
    started_wall: float = 0.0
    started_mono: float = 0.0
    # (t_mono, seq, rtt): seq from 1, as ping counts (fping from 0)
    replies: list[tuple[float, int, float]] = field(default_factory=list)
    sent: int = 0
    _out: Any = None

    def start(self) -> PingProbe:
        # into a file, not a pipe: nobody reads until the end, and a full pipe would stop ping
        self._out = tempfile.TemporaryFile(mode="w+")  # noqa: SIM115 (closed in stop)
        self.proc = self.lab.popen(
            self.node, fping_command(self.src, self.dst, self.interval_s), stdout=self._out,
            stderr=subprocess.STDOUT, text=True)
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
                self.replies.append((float(m[1]) + offset, int(m[2]) + 1, float(m[3])))
        m = SENT.search(out)
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


def fping_command(src: str, dst: str, interval_s: float) -> list[str]:
    """An ICMP echo every ``interval_s`` from ``src`` to ``dst`` until interrupted, each reply
    timestamped; a reply later than 2 s counts as lost (``-i 1``: fping's own floor between
    any two probes, 10 ms by default, down to 1 ms)."""
    return ["fping", "-l", "-D", "-p", f"{interval_s * 1000:g}", "-i", "1", "-t", "2000",
            "-S", src, dst]

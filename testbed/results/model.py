"""The analytical pre-copy model, to put every measured migration next to a prediction.

With image size V (bytes), link rate R (bytes/s), dirty rate D (bytes/s) and n pre-copy
rounds after the first, lambda = D / R and (Clark et al., NSDI'05; Liu et al.):

    T_mig  = V / R * (1 - lambda**(n + 1)) / (1 - lambda)
    T_down = V * lambda**n / R

:func:`forecast` feeds it what a user would (:func:`inputs_from`: V the bytes round 0 had to
send, R iperf3 on the same path shared among the migrations beside it, D the dirty rate the
tracker measured), predicts the rounds by its own stop rule and adds the round trips (one per
pre-copy round where each round's end is acknowledged, none where they follow each other on
one stream; two at the switchover) and the destination's measured steps there (PREPARED
after the last round, the commit with the resume after GO). A migration alone on its
path starts as cold as iperf3 did: its round 0 takes what iperf3's delivery curve says V takes
from a cold start (:class:`PathCurve`), the later rounds go at iperf3's steady rate.

A guest that writes a hot set over and over (the built-in one: ``hot_share`` of its page
writes into its first ``hot_fraction`` of pages) does not dirty D t bytes in a round of t
seconds: rewrites of a hot page count once, so short rounds dirty more per second than long
ones (Clark et al.'s writable working set). For such a guest the model uses the expected
number of distinct pages written in a window t by Poisson writes at w pages/s,

    W(t) = H (1 - exp(-w (s/H + (1-s)/N) t)) + (N - H) (1 - exp(-w (1-s)/N t)),

N pages, H = hot_fraction N hot ones, s = hot_share; w is calibrated from the tracker's round
0 alone (its dirty set and duration; the hot set is read first, the other pages armed as round
0 read them: along the path's cold start where one stream ran alone on it, else evenly), and
every later round is predicted: round k sends W(duration of round k-1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

DEVIATION_FLAG = 0.20
PROFILE_SLICES = 64  # parts of the image whose read time round 0's profile gives
# the built-in guest's pattern when a document predates its record (agents.guest.workload)
BUILT_IN_PATTERN = {"hot_fraction": 0.1, "hot_share": 0.9}


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
class PathCurve:
    """How long a number of bytes takes on a path from a cold start, as iperf3 measured it on
    that path: its receiver's cumulative bytes at the end of each second, then its steady
    rate beyond the run. A constant rate cannot say this on a long path: slow start is most
    of a 5 s run at 200 ms (iperf3 151-161 Mbit/s from cold, 231-239 steady at 250 Mbit/s),
    so a transfer twice as long as the run goes faster than the run's average."""

    points: tuple[tuple[float, float], ...]  # (seconds, bytes received by then), increasing
    steady_bytes_s: float

    def time_for(self, nbytes: float) -> float:
        """Seconds to deliver ``nbytes`` from a cold start."""
        t0 = b0 = 0.0
        for t, b in self.points:
            if nbytes <= b:
                return t0 + (t - t0) * (nbytes - b0) / (b - b0) if b > b0 else t
            t0, b0 = t, b
        return t0 + (nbytes - b0) / self.steady_bytes_s

    def read_profile(self, nbytes: float, slices: int = PROFILE_SLICES) -> tuple[float, ...]:
        """When a cold start has delivered the middle of each of ``slices`` equal parts of
        ``nbytes``, as fractions of the time all of it takes: how a single stream's round 0
        reads the image (slowly while the window opens, then at the path's rate)."""
        whole = self.time_for(nbytes)
        return tuple(self.time_for((i + 0.5) / slices * nbytes) / whole
                     for i in range(slices))

    @classmethod
    def of(cls, m: dict[str, Any]) -> PathCurve | None:
        """The curve a migration's document carries (``iperf3_delivered`` and
        ``iperf3_steady_mbps``, testbed.run.jobs.baseline_of), if it carries one."""
        points, steady = m.get("iperf3_delivered"), m.get("iperf3_steady_mbps")
        if not points or not steady:
            return None
        return cls(tuple((float(t), float(b)) for t, b in points), steady * 1e6 / 8)


@dataclass(frozen=True)
class ModelInputs:
    """What a user would feed the model for one migration, all taken from the measurement."""

    volume_bytes: float  # V: what round 0 had to send (zero pages travel as references)
    rate_bytes_s: float  # R: iperf3 on the same path, shared by the migrations beside it
    dirty_bytes_s: float  # D: the dirty rate the tracker measured (unique pages per second)
    downtime_target_ms: float
    max_rounds: int
    rtt_s: float = 0.0  # two round trips at the stop (the image to PREPARED, then GO to the
    #                     destination's DECISION), one per pre-copy round if acknowledged
    resume_s: float = 0.0  # measured: GO to DECISION at the destination (the durable
    #                       "committed", the resume, its network move), and the source's
    #                       pause with its last dirty collection
    check_s: float = 0.0  # measured: the source's check of the paused original (from the
    #                       pause on, it overlaps the last round and the destination's answer)
    skew: Skew | None = None  # a hot-set guest: its pages, and w calibrated from round 0
    curve: PathCurve | None = None  # round 0 from a cold start on the path (then: R steady)
    final_rate_bytes_s: float | None = None  # its share where it decides to stop and sends
    #                                          the last round, where sharing changes during a
    #                                          burst (else R)
    acked_rounds: bool = True  # each pre-copy round waits a round trip for its acknowledgement
    drain_s: float = 0.0  # measured: pipelined rounds wait before the pause for the queued
    #                       bytes to leave; the last dirty set is written for that long more
    prepare_s: float = 0.0  # measured: the destination's final round in to PREPARED out
    #                         (the COMMIT, its verification, the durable "prepared")

    def final_rate(self) -> float:
        """The rate where it decides to stop and sends its last round (else R)."""
        return self.final_rate_bytes_s or self.rate_bytes_s

    def round_trip_per_round(self) -> float:
        return self.rtt_s if self.acked_rounds else 0.0

    def first_round_s(self) -> float:
        """Round 0's transfer: from a cold start along the path's curve, else V / R."""
        if self.curve is not None:
            return self.curve.time_for(self.volume_bytes)
        return self.volume_bytes / self.rate_bytes_s


@dataclass(frozen=True)
class Skew:
    """A guest's write pattern: ``pages`` in all, the first ``hot_pages`` take ``hot_share``
    of the writes; ``writes_per_s`` page writes per second. ``read_profile``: when round 0
    had read each of equal slices of the image, in order, as fractions of its time (at their
    middles; None: evenly through it)."""

    pages: int
    hot_pages: int
    hot_share: float
    writes_per_s: float
    page_size: int = 4096
    read_profile: tuple[float, ...] | None = None

    def _rates(self) -> tuple[float, float]:
        n, h, s, w = self.pages, self.hot_pages, self.hot_share, self.writes_per_s
        return w * (s / h + (1 - s) / n), w * (1 - s) / n

    def dirtied(self, t: float) -> float:
        """Bytes of distinct pages written in a window of ``t`` seconds."""
        lh, lc = self._rates()
        pages = self.hot_pages * -math.expm1(-lh * t) + \
            (self.pages - self.hot_pages) * -math.expm1(-lc * t)
        return pages * self.page_size

    def dirtied_in_first_round(self, t: float) -> float:
        """Bytes dirtied behind round 0 (a page counts from when the round read it): the hot
        set, read first, has almost the whole round; the rest is read evenly through it, or
        as ``read_profile`` says."""
        if self.read_profile:
            return self._dirtied_behind_profile(t)
        lh, lc = self._rates()
        hot_t = t * (1 - self.hot_pages / self.pages / 2)
        x = lc * t
        cold = (1 + math.expm1(-x) / x) if x > 1e-12 else 0.0
        pages = self.hot_pages * -math.expm1(-lh * hot_t) + \
            (self.pages - self.hot_pages) * cold
        return pages * self.page_size

    def _dirtied_behind_profile(self, t: float) -> float:
        """Slice by slice: each slice's pages are exposed from when round 0 read them."""
        profile = self.read_profile or ()
        lh, lc = self._rates()
        k, hot_end = len(profile), self.hot_pages / self.pages
        pages = 0.0
        for i, read in enumerate(profile):
            lo, hi = i / k, (i + 1) / k
            hot = max(0.0, min(hi, hot_end) - lo) * self.pages  # hot pages in this slice
            cold = (hi - lo) * self.pages - hot
            exposed = t * (1 - read)
            pages += hot * -math.expm1(-lh * exposed) + cold * -math.expm1(-lc * exposed)
        return pages * self.page_size

    @classmethod
    def calibrated(cls, pages: int, hot_fraction: float, hot_share: float,
                   round0_dirty_bytes: float, round0_s: float, page_size: int = 4096,
                   read_profile: tuple[float, ...] | None = None) -> Skew:
        """The write rate that makes round 0 dirty what the tracker saw."""
        hot = max(1, int(pages * hot_fraction))
        lo, hi = 1e-6, 1e9
        for _ in range(200):  # bisection on a log scale: dirtied() grows with the rate
            mid = math.sqrt(lo * hi)
            if cls(pages, hot, hot_share, mid, page_size, read_profile).dirtied_in_first_round(
                    round0_s) < round0_dirty_bytes:
                lo = mid
            else:
                hi = mid
        return cls(pages, hot, hot_share, math.sqrt(lo * hi), page_size, read_profile)


@dataclass(frozen=True)
class Forecast:
    rounds: int  # by the model's own stop rule, the stop-and-copy round included
    migration_time_s: float
    downtime_ms: float
    ratio: float


def stop_round(inp: ModelInputs) -> int:
    """The rounds the model predicts (QEMU's rule, as the agents use it): pre-copy until what
    is left, V lambda^n, fits the downtime target at the rate the migration has where it
    decides (in a burst its share among those still sending then, not its average: the
    others' ends have freed their links), or the round limit."""
    lam = inp.dirty_bytes_s / inp.rate_bytes_s
    target_bytes = inp.downtime_target_ms / 1000.0 * inp.final_rate()
    for n in range(1, max(inp.max_rounds, 2)):
        if inp.volume_bytes * lam ** n <= target_bytes:
            return n + 1
    return max(inp.max_rounds, 2)


def _switchover_s(last_round_s: float, inp: ModelInputs) -> float:
    """The guest's pause: the last round, the destination's PREPARED and its way back (one
    round trip), the source check overlapping them, then GO to the DECISION (one more) and
    the commit with the resume."""
    return max(last_round_s + inp.rtt_s + inp.prepare_s, inp.check_s) + inp.rtt_s + \
        inp.resume_s


def _forecast_skewed(inp: ModelInputs, skew: Skew) -> Forecast:
    """Round by round: each round sends what the one before left dirty (``skew``)."""
    rate, rtt = inp.rate_bytes_s, inp.round_trip_per_round()
    target = inp.downtime_target_ms / 1000.0 * inp.final_rate()
    t = inp.first_round_s() + rtt
    total, rounds = t, 1
    dirtied = skew.dirtied_in_first_round
    left = dirtied(t)
    while left > target and rounds < max(inp.max_rounds, 2) - 1:
        t = left / rate + rtt
        total += t
        rounds += 1
        dirtied = skew.dirtied
        left = dirtied(t)
    if inp.drain_s:  # decided on what the round left; paused after the queue drained
        left = dirtied(t + inp.drain_s)
    down = _switchover_s(left / inp.final_rate(), inp)
    lam = skew.writes_per_s * skew.page_size / rate
    return Forecast(rounds + 1, total + down, down * 1000.0, lam)


def forecast(inp: ModelInputs) -> Forecast:
    """Rounds, total time and downtime of a pre-copy migration, per-round latency included."""
    if inp.skew is not None:
        return _forecast_skewed(inp, inp.skew)
    rounds = stop_round(inp)
    p = precopy(inp.volume_bytes, inp.rate_bytes_s, inp.dirty_bytes_s, rounds)
    cold = inp.first_round_s() - inp.volume_bytes / inp.rate_bytes_s  # slow start, if known
    precopy_s = p.migration_time_s - p.downtime_ms / 1000.0 + cold + \
        (rounds - 1) * inp.round_trip_per_round()
    last_s = p.downtime_ms / 1000.0 + inp.dirty_bytes_s * inp.drain_s / inp.rate_bytes_s
    last_s *= inp.rate_bytes_s / inp.final_rate()  # the last round at its own share
    down = _switchover_s(last_s, inp)
    return Forecast(rounds, precopy_s + down, down * 1000.0, p.ratio)


def inputs_from(m: dict[str, Any]) -> ModelInputs | None:
    """The model's inputs from one measured migration (None: not enough was measured)."""
    curve = None if m.get("fair_share_mbps") else PathCurve.of(m)  # alone on its path
    rate_mbps = m.get("fair_share_mbps") or (m.get("iperf3_steady_mbps") if curve else
                                             m.get("iperf3_mbps"))
    sent, zeros = m.get("pages_sent_per_round") or [], m.get("zero_pages_per_round") or []
    secs, dirty = m.get("round_seconds") or [], m.get("dirty_pages_per_round") or []
    if not rate_mbps or not sent or not secs:
        return None
    ps = m.get("page_size", 4096)
    volume = (sent[0] - (zeros[0] if zeros else 0)) * ps
    precopy_dirty = dirty[:len(secs)]
    dirty_rate = sum(precopy_dirty) * ps / max(sum(secs[:len(precopy_dirty)]), 1e-9)
    rtt_ms = m.get("rtt_measured_ms") or m.get("rtt_ms") or \
        (m.get("preflight") or {}).get("rtt_ms") or 0.0  # else the source's own measurement
    commit_ms = m.get("commit_ms")  # GO -> DECISION: the resume and its hook included
    if commit_ms is None:  # a document from before the destination reported it
        commit_ms = (m.get("resume_ms") or 0.0) + \
            ((m.get("hooks") or {}).get("on_resume") or {}).get("ms", 0.0)
    resume_ms = (m.get("stop_ms") or 0.0) + commit_ms
    pattern = m.get("write_pattern") or (BUILT_IN_PATTERN if m.get("source_kind") == "workload"
                                          else None)
    skew = None
    if pattern and dirty and secs and pattern.get("hot_fraction", 1.0) < 1.0:
        # one stream alone on its path reads round 0 along the path's cold start (at 150-200
        # ms most of its first seconds go to slow start): read evenly, the cold pages would
        # seem exposed longer than they were and the write rate calibrate low (1375-1520
        # pages/s for the built-in guest's 1953 at 150-200 ms; along the curve 1905-2035 at
        # every RTT). Several streams open their windows together: read evenly.
        profile = curve.read_profile(volume) if curve and (m.get("streams") or 1) == 1 \
            else None
        skew = Skew.calibrated(int(m.get("image_bytes", 0)) // ps - 1, pattern["hot_fraction"],
                               pattern["hot_share"], dirty[0] * ps, secs[0], ps, profile)
    return ModelInputs(volume, rate_mbps * 1e6 / 8, dirty_rate,
                       m.get("downtime_target_ms") or 300.0, m.get("max_rounds") or 30,
                       rtt_ms / 1000.0, resume_ms / 1000.0,
                       (m.get("source_verify_ms") or 0.0) / 1000.0, skew, curve,
                       (m["final_share_mbps"] * 1e6 / 8) if m.get("final_share_mbps") else None,
                       acked_rounds=not m.get("pipelined"),
                       drain_s=(m.get("drain_ms") or 0.0) / 1000.0,
                       prepare_s=(m.get("prepare_ms") or 0.0) / 1000.0)

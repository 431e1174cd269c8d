"""The client's view of a migration: a standalone, blocking UDP probe of the guest's service.

``python -m agents.client.probe --target HOST:PORT --interval-ms 1 [--duration S] [--bind ADDR]
[--timeout-ms 1000]`` prints ``{"probing": [host, port]}`` once it is sending, then (at the
end of ``--duration``, on SIGTERM or SIGINT) one JSON line: the :func:`summarize` fields plus
``target``, ``bind``, ``interval_ms``, ``timeout_ms``, ``skipped_slots``, ``late``,
``duplicates`` and ``send_errors``.

Each request is ``b"C"`` + an 8-byte run token + an 8-byte sequence number (little-endian);
the workload answers ``b"C"`` + counter (u64) + pid (u32) + those 16 bytes, so every answer
names the request it belongs to and the process (the guest's location) that answered it.
Requests go out on an absolute schedule (``start + k * interval``): no drift, and a probe that
falls behind skips the slots it missed instead of bursting. An answer later than the timeout
counts as lost. One thread, one ``select`` loop; stdlib only, so it starts fast anywhere.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import select
import signal
import socket
import sys
import threading
import time
from array import array
from collections.abc import Callable, Iterable
from typing import NamedTuple

from agents.addresses import hostport
from agents.client.service import REPLY, REQUEST

CHUNK = 1 << 16  # record slots added at a time when the duration is open-ended
MAX_GAPS = 20


class Record(NamedTuple):
    """One request: when it was sent and, if answered in time, when, by whom, with what."""

    seq: int
    sent: float
    received: float | None = None
    counter: int | None = None
    pid: int | None = None


class Records:
    """Per-request records in preallocated columns (unanswered: ``nan`` received, pid 0)."""

    def __init__(self, capacity: int = CHUNK) -> None:
        capacity = max(1, capacity)
        self.n = 0
        self.sent = array("d", bytes(8 * capacity))
        self.received = array("d", [math.nan]) * capacity
        self.counter = array("Q", bytes(8 * capacity))
        self.pid = array("q", bytes(8 * capacity))

    def add(self, sent: float) -> int:
        """Record a request sent at ``sent``; returns its sequence number."""
        if self.n == len(self.sent):
            self.sent.extend(array("d", bytes(8 * CHUNK)))
            self.received.extend(array("d", [math.nan]) * CHUNK)
            self.counter.extend(array("Q", bytes(8 * CHUNK)))
            self.pid.extend(array("q", bytes(8 * CHUNK)))
        seq = self.n
        self.sent[seq] = sent
        self.n += 1
        return seq

    def answer(self, seq: int, received: float, counter: int, pid: int) -> None:
        self.received[seq] = received
        self.counter[seq] = counter
        self.pid[seq] = pid

    def answered(self, seq: int) -> bool:
        return self.pid[seq] != 0

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, seq: int) -> Record:
        if not 0 <= seq < self.n:
            raise IndexError(seq)
        if self.pid[seq] == 0:
            return Record(seq, self.sent[seq])
        return Record(seq, self.sent[seq], self.received[seq], self.counter[seq], self.pid[seq])

    def __iter__(self):
        return (self[i] for i in range(self.n))

    @classmethod
    def of(cls, records: Iterable[Record | tuple]) -> Records:
        """Columns from ``(seq, sent, received, counter, pid)`` rows, in sequence order."""
        rows = sorted((Record(*r) for r in records), key=lambda r: r.seq)
        out = cls(len(rows))
        for r in rows:
            seq = out.add(r.sent)
            if r.received is not None and r.pid:
                out.answer(seq, r.received, r.counter or 0, r.pid)
        return out


def _percentile(values: list[float], q: float) -> float:
    """Linear interpolation between closest ranks; ``values`` sorted, not empty."""
    pos = (len(values) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(values) - 1)
    return values[lo] + (values[hi] - values[lo]) * (pos - lo)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1e3, 3)


def _s(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 6)


def summarize(records: Records | Iterable[Record | tuple], interval_s: float,
              start: float | None = None) -> dict:
    """What the client saw: loss, RTTs, where the answers came from, and the outage.

    ``records``: a :class:`Records` or rows ``(seq, sent, received, counter, pid)`` with
    ``received``/``counter``/``pid`` None when unanswered. Times are ``time.monotonic()``
    seconds; ``*_s`` fields are relative to ``start`` (default: the first send).

    - ``locations``: the distinct pids, in the order of their first answer; ``switch_at_s``
      is the first answer from the second one.
    - ``outage_ms``: from the send of the first request of the longest run of consecutive
      unanswered requests to the receipt of the first answer after it (``outage_end_s``
      None and ``outage_resolved`` False if no answer came after it; all None if nothing was
      lost). ``outage_counter_before``/``_after``: the counters answered either side of it
      (a pause without a move: the counter must carry on there too).
    - ``counter_before``: the first location's last counter before the switch;
      ``counter_after``: the new location's first counter.
    - ``answers_from_old_after_switch``: answers from a location already superseded when
      the request was sent (a split brain, or a source that kept running).
    - ``gaps``: runs of >= 2 losses as ``[start_s, length_ms]``, the length being the time
      its requests span (first lost send to the next send), longest first, at most 20.
    - Requests before the first answer (``before_first_answer``: the guest was not up yet)
      are neither lost nor part of an outage.
    """
    rec = records if isinstance(records, Records) else Records.of(records)
    n = len(rec)
    if start is None:
        start = rec.sent[0] if n else 0.0
    rtts, first = _answers(rec)
    locations = sorted(first, key=lambda p: first[p][0])
    switch = _switch(rec, first, locations)
    lead, runs = _lost_runs(rec, interval_s)
    outage = _outage(rec, runs)
    gaps = sorted(((rec.sent[a] - start, span) for a, count, span in runs if count >= 2),
                  key=lambda g: -g[1])[:MAX_GAPS]
    lost = n - len(rtts) - lead

    def since_start(t: float | None) -> float | None:
        return None if t is None else _s(t - start)

    return {
        "requests": n,
        "answered": len(rtts),
        "before_first_answer": lead,
        "lost": lost,
        "loss_pct": round(100.0 * lost / (n - lead), 3) if n > lead else 0.0,
        "duration_s": _s(rec.sent[n - 1] - start + interval_s) if n else 0.0,
        "achieved_interval_ms": _ms((rec.sent[n - 1] - rec.sent[0]) / (n - 1))
        if n > 1 else None,
        "rtt_p50_ms": _ms(_percentile(rtts, 0.5)) if rtts else None,
        "rtt_p99_ms": _ms(_percentile(rtts, 0.99)) if rtts else None,
        "rtt_max_ms": _ms(rtts[-1]) if rtts else None,
        "locations": locations,
        "switch_at_s": since_start(switch.at),
        "outage_ms": _ms(outage.length),
        "outage_start_s": since_start(outage.start),
        "outage_end_s": since_start(outage.end),
        "outage_resolved": outage.resolved,
        "outage_counter_before": outage.counter_before,
        "outage_counter_after": outage.counter_after,
        "counter_before": switch.counter_before,
        "counter_after": switch.counter_after,
        "counter_continuity_ok": switch.continuity,
        "answers_from_old_after_switch": switch.old_after,
        "gaps": [[_s(t), _ms(span)] for t, span in gaps],
    }


def _answers(rec: Records) -> tuple[list[float], dict[int, tuple[float, int]]]:
    """The RTTs of every answer (sorted), and per pid its first answer (received, counter)."""
    rtts: list[float] = []
    first: dict[int, tuple[float, int]] = {}
    for i in range(len(rec)):
        p = rec.pid[i]
        if p:
            t = rec.received[i]
            rtts.append(t - rec.sent[i])
            if p not in first or t < first[p][0]:
                first[p] = (t, rec.counter[i])
    rtts.sort()
    return rtts, first


class _Switch(NamedTuple):
    at: float | None = None
    counter_before: int | None = None
    counter_after: int | None = None
    continuity: bool | None = None
    old_after: int = 0


def _switch(rec: Records, first: dict[int, tuple[float, int]],
            locations: list[int]) -> _Switch:
    """The move from the first location to the second, and answers from superseded ones."""
    if len(locations) < 2:
        return _Switch()
    at, counter_after = first[locations[1]]
    p0, best, counter_before = locations[0], -math.inf, None
    for i in range(len(rec)):
        if rec.pid[i] == p0 and best < rec.received[i] < at:
            best, counter_before = rec.received[i], rec.counter[i]
    # An answer is from an old location if a later one had answered before it was sent.
    firsts = [first[p][0] for p in locations]
    index = {p: k for k, p in enumerate(locations)}
    current = old_after = 0
    for i in range(len(rec)):
        while current + 1 < len(firsts) and firsts[current + 1] < rec.sent[i]:
            current += 1
        if rec.pid[i] and index[rec.pid[i]] < current:
            old_after += 1
    continuity = None if counter_before is None else counter_after >= counter_before
    return _Switch(at, counter_before, counter_after, continuity, old_after)


def _lost_runs(rec: Records, interval_s: float) -> tuple[int, list[tuple[int, int, float]]]:
    """The requests before the first answer (sent before the guest was up: no outage), and
    the runs of unanswered requests after it as (first lost, count, span of their sends)."""
    n, pid, sent = len(rec), rec.pid, rec.sent
    lead = next((i for i in range(n) if pid[i]), 0)
    runs: list[tuple[int, int, float]] = []
    i = lead
    while i < n:
        if pid[i]:
            i += 1
            continue
        j = i
        while j < n and not pid[j]:
            j += 1
        end = sent[j] if j < n else sent[j - 1] + interval_s
        runs.append((i, j - i, end - sent[i]))
        i = j
    return lead, runs


class _Outage(NamedTuple):
    length: float | None = None
    start: float | None = None
    end: float | None = None
    resolved: bool | None = None
    counter_before: int | None = None
    counter_after: int | None = None


def _outage(rec: Records, runs: list[tuple[int, int, float]]) -> _Outage:
    """The longest run of losses: from its first send to the first answer after it."""
    if not runs:
        return _Outage()
    n, pid, sent, received, counter = len(rec), rec.pid, rec.sent, rec.received, rec.counter
    a, count, _ = max(runs, key=lambda r: (r[1], r[2]))  # first of the longest
    before = counter[a - 1] if a > 0 else None  # answered, by maximality
    b = a + count
    if b >= n:
        return _Outage(None, sent[a], None, False, before, None)
    end, first_after = received[b], b  # answered too; a later request's answer may be earlier
    while b < n and sent[b] < end:
        if pid[b] and received[b] < end:
            end, first_after = received[b], b
        b += 1
    return _Outage(end - sent[a], sent[a], end, True, before, counter[first_after])


def _resolve(target: tuple[str, int], bind: str | None) -> tuple[int, tuple]:
    family = socket.AF_INET6 if bind and ":" in bind else 0
    infos = socket.getaddrinfo(target[0], target[1], family, socket.SOCK_DGRAM)
    return infos[0][0], infos[0][4]


@contextlib.contextmanager
def _stop_on_signals(stop: threading.Event):
    """SIGTERM/SIGINT set ``stop`` while probing (only the main thread may set handlers)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = {s: signal.signal(s, lambda *_: stop.set()) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run(target: tuple[str, int], interval_s: float = 0.001, duration_s: float | None = None,
        bind: str | None = None, stop: threading.Event | None = None, timeout_s: float = 1.0,
        on_start: Callable[[], None] | None = None) -> dict:
    """Probe ``target`` every ``interval_s`` until ``duration_s``, ``stop`` or SIGTERM/SIGINT
    (the latter when called from the main thread), then wait up to ``timeout_s`` for the
    answers still due; returns :func:`summarize` plus the probe's own counts."""
    if interval_s <= 0:
        raise ValueError("interval_s must be > 0")
    stop = stop or threading.Event()
    family, addr = _resolve(target, bind)
    sock = socket.socket(family, socket.SOCK_DGRAM)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    if bind:
        sock.bind((bind, 0))
    sock.setblocking(False)
    token = os.urandom(8)
    capacity = int(duration_s / interval_s) + 2 if duration_s is not None else CHUNK
    rec = Records(capacity)
    late = duplicates = send_errors = skipped = 0
    fileno = sock.fileno()
    monotonic, pack, unpack = time.monotonic, REQUEST.pack, REPLY.unpack_from

    def receive(now: float) -> None:
        nonlocal late, duplicates
        while True:
            try:
                data = sock.recv(64)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                continue  # an ICMP error reported on the socket: not an answer
            if len(data) < REPLY.size or data[:1] != b"C":
                continue
            _, ctr, p, tok, seq = unpack(data)
            if tok != token or seq >= rec.n:
                continue
            if rec.answered(seq):
                duplicates += 1
            elif now - rec.sent[seq] > timeout_s:
                late += 1
            else:
                rec.answer(seq, now, ctr, p)

    with sock, _stop_on_signals(stop):
        start = monotonic()
        end = start + duration_s if duration_s is not None else math.inf
        slot = 0
        deadline = start
        if on_start is not None:
            on_start()
        while not stop.is_set():
            now = monotonic()
            if now >= deadline:
                if deadline >= end:
                    break
                behind = int((now - deadline) / interval_s)
                if behind:  # missed whole slots: skip them, do not burst
                    if start + (slot + behind) * interval_s >= end:
                        skipped += sum(1 for k in range(slot, slot + behind)
                                       if start + k * interval_s < end)
                        break
                    slot += behind
                    skipped += behind
                seq = rec.add(now)
                try:
                    sock.sendto(pack(b"C", token, seq), addr)
                except (BlockingIOError, InterruptedError):
                    send_errors += 1
                except OSError:
                    send_errors += 1  # e.g. no route while the address moves
                slot += 1
                deadline = start + slot * interval_s
                continue
            if select.select([fileno], [], [], deadline - now)[0]:
                receive(monotonic())
        # Answers still due: wait while an unanswered request is within its timeout.
        due = range(max(0, rec.n - int(timeout_s / interval_s) - 2), rec.n)
        while True:
            now = monotonic()
            until = max((rec.sent[i] + timeout_s for i in due if not rec.answered(i)),
                        default=now)
            if now >= until:
                break
            if select.select([fileno], [], [], min(until - now, 0.05))[0]:
                receive(monotonic())

    out = {"target": [target[0], target[1]], "bind": bind,
           "interval_ms": round(interval_s * 1e3, 6), "timeout_ms": round(timeout_s * 1e3, 3)}
    out |= summarize(rec, interval_s, start)
    out |= {"skipped_slots": skipped, "late": late, "duplicates": duplicates,
            "send_errors": send_errors}
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m agents.client.probe",
                                 description="Probe a guest's UDP service as a client sees it.")
    ap.add_argument("--target", type=hostport, required=True, metavar="HOST:PORT")
    ap.add_argument("--interval-ms", type=float, default=1.0)
    ap.add_argument("--duration", type=float, metavar="S", help="default: until SIGTERM/SIGINT")
    ap.add_argument("--bind", metavar="ADDR", help="source address of the requests")
    ap.add_argument("--timeout-ms", type=float, default=1000.0,
                    help="answers later than this count as lost")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.interval_ms <= 0:
        raise SystemExit("--interval-ms must be > 0")
    host, port = args.target

    def started() -> None:
        print(json.dumps({"probing": [host, port]}), flush=True)

    res = run((host, port), args.interval_ms / 1e3, args.duration, args.bind,
              timeout_s=args.timeout_ms / 1e3, on_start=started)
    print(json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

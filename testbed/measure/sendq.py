"""What a sender has written that the network has not delivered yet, sampled with ``ss``.

A hypervisor that stops its guest with megabytes already queued in its socket makes the guest
wait for them (QEMU sets no TCP_NOTSENT_LOWAT, and the kernel autotunes its send buffer up to
tcp_wmem's max): the bytes of the stop-and-copy queue behind them. The sampler records, for
every connection of a node to one destination port, ``Send-Q`` (written, not yet acknowledged)
and ``notsent`` (written, not yet sent), on the wall clock of QEMU's event timestamps.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..lab.lab import Lab

NOTSENT = re.compile(r"\bnotsent:(\d+)")


@dataclass(frozen=True)
class Sample:
    at_unix: float
    send_q_bytes: int  # written and not yet acknowledged, over the node's connections
    notsent_bytes: int  # written and not yet sent


def parse_ss(text: str) -> tuple[int, int]:
    """(Send-Q, notsent) summed over the sockets of ``ss -Htin`` output (one header line per
    socket, ``Recv-Q Send-Q local peer``, its ``-i`` details on indented lines)."""
    send_q = notsent = 0
    for line in text.splitlines():
        if not line.strip():
            continue
        if line[0].isspace():
            m = NOTSENT.search(line)
            notsent += int(m.group(1)) if m else 0
        else:
            fields = line.split()
            if len(fields) >= 2 and fields[1].isdigit():
                send_q += int(fields[1])
    return send_q, notsent


class SendQueueSampler:
    """Samples ``node``'s connections to ``dst_ip:port`` every ``interval_s`` until stopped."""

    def __init__(self, lab: Lab, node: str, dst_ip: str, port: int,
                 interval_s: float = 0.05) -> None:
        self.lab, self.node, self.interval_s = lab, node, interval_s
        self.filter = ["state", "established", "dst", f"{dst_ip}:{port}"]
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def start(self) -> SendQueueSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop sampling (a sampler never started just stays empty)."""
        self._stop.set()
        if self._thread.ident is not None:
            self._thread.join(5)

    def _run(self) -> None:
        while not self._stop.is_set():
            out = self.lab.run(self.node, ["ss", "-Htin", *self.filter], check=False).stdout
            self.samples.append(Sample(time.time(), *parse_ss(out)))
            self._stop.wait(self.interval_s)

    def before(self, at_unix: float) -> Sample | None:
        """The last sample taken at or before ``at_unix``."""
        earlier = [s for s in self.samples if s.at_unix <= at_unix]
        return earlier[-1] if earlier else None

"""What crossed a link: capture it with tcpdump in the link's namespace, then search the
reassembled TCP payloads for the workload's plaintext markers (``agents/markers.py``).

Captures are inspected with scapy (headers only; payload bytes are joined per flow in sequence
order, so a marker split across two segments is still found). Counting bytes is left to the
kernel's counters: a capture is evidence of content, not of volume.
"""

from __future__ import annotations

import contextlib
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from ..host.nsexec import ns_prefix

MARKER = re.compile(rb"TBT-PLAINTEXT-MARKER-(\d{8})")


@dataclass
class Capture:
    path: Path
    stderr: str = ""
    dropped: int | None = None


@contextlib.contextmanager
def capture(pid: int | None, iface: str, path: str | Path, bpf: str = "tcp",
            ready_s: float = 10.0) -> Iterator[Capture]:
    """tcpdump ``iface`` (in the namespace of ``pid``) to ``path`` while the block runs."""
    cap = Capture(Path(path))
    proc = subprocess.Popen(ns_prefix(pid) + ["tcpdump", "-i", iface, "-s", "0", "-B", "65536",
                                              "-U", "-n", "-w", str(path), bpf],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    lines: list[str] = []
    started = threading.Event()

    def read() -> None:
        for line in proc.stderr:  # type: ignore[union-attr]
            lines.append(line)
            if "listening on" in line:
                started.set()
        started.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        if not started.wait(ready_s) or proc.poll() is not None:
            raise RuntimeError(f"tcpdump on {iface} did not start: {''.join(lines)[-500:]}")
        time.sleep(0.2)
        yield cap
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        reader.join(2)
        cap.stderr = "".join(lines)
        m = re.search(r"(\d+) packets? dropped by kernel", cap.stderr)
        cap.dropped = int(m.group(1)) if m else None


@dataclass
class WireReport:
    packets: int = 0
    payload_bytes: int = 0
    flows: dict[str, int] = field(default_factory=dict)  # "src:port>dst:port" -> bytes
    markers: set[int] = field(default_factory=set)


def tcp_streams(path: str | Path, port: int | None = None) -> tuple[dict[str, bytes], int]:
    """Per-direction TCP payloads of a pcap, in sequence order (retransmissions once)."""
    from scapy.layers.inet import IP, TCP
    from scapy.utils import PcapReader

    segs: dict[str, dict[int, bytes]] = {}
    npkts = 0
    with PcapReader(str(path)) as reader:
        for pkt in reader:
            npkts += 1
            if IP not in pkt or TCP not in pkt:
                continue
            ip, tcp = pkt[IP], pkt[TCP]
            if port is not None and port not in (tcp.sport, tcp.dport):
                continue
            data = bytes(tcp.payload)
            if not data:
                continue
            key = f"{ip.src}:{tcp.sport}>{ip.dst}:{tcp.dport}"
            segs.setdefault(key, {})[tcp.seq] = data
    streams = {}
    for key, by_seq in segs.items():
        out, end = bytearray(), None
        for seq in sorted(by_seq):  # (wrap-around ignored: captures here are < 4 GiB)
            data = by_seq[seq]
            if end is not None and seq < end:
                data = data[end - seq :]  # overlap with what we already have
            out += data
            end = max(end or 0, seq + len(by_seq[seq]))
        streams[key] = bytes(out)
    return streams, npkts


def inspect(path: str | Path, port: int | None = None) -> WireReport:
    """Flows, payload volume and the plaintext markers found in a capture."""
    streams, npkts = tcp_streams(path, port)
    rep = WireReport(packets=npkts)
    for key, data in streams.items():
        rep.flows[key] = len(data)
        rep.payload_bytes += len(data)
        rep.markers |= {int(m.group(1)) for m in MARKER.finditer(data)}
    return rep

"""The capture inspector: markers split across segments, out of order, retransmitted."""

from __future__ import annotations

from scapy.layers.inet import IP, TCP
from scapy.layers.l2 import Ether
from scapy.utils import wrpcap

from agents.guest.markers import marker
from testbed.measure.wirecheck import inspect


def _pkt(seq: int, data: bytes, dport: int = 7000):
    return Ether() / IP(src="10.0.0.1", dst="10.0.0.2") / TCP(sport=5555, dport=dport,
                                                             seq=seq, flags="PA") / data


def test_markers_found_across_segments_and_reordering(tmp_path):
    stream = b"a" * 100 + marker(7) + b"b" * 100 + marker(12) + b"c" * 10
    cut1, cut2 = 120, 200  # both markers straddle a segment boundary
    segs = [(1000, stream[:cut1]), (1000 + cut1, stream[cut1:cut2]),
            (1000 + cut2, stream[cut2:])]
    pkts = [_pkt(*segs[2]), _pkt(*segs[0]), _pkt(*segs[1]), _pkt(*segs[1]),  # reordered, dup
            _pkt(1, marker(99), dport=22)]  # another port: filtered out
    wrpcap(str(tmp_path / "c.pcap"), pkts)
    rep = inspect(tmp_path / "c.pcap", port=7000)
    assert rep.markers == {7, 12}
    assert rep.payload_bytes == len(stream) and rep.packets == 5
    assert inspect(tmp_path / "c.pcap").markers == {7, 12, 99}


def test_no_markers_in_noise(tmp_path):
    wrpcap(str(tmp_path / "n.pcap"), [_pkt(1, bytes(range(256)) * 4)])
    assert inspect(tmp_path / "n.pcap").markers == set()

"""A link with 50 ms netem delay each way: ping RTT within +/-5 % of 100 ms."""

import pytest

from testbed.measure.path import ping
from topologies.pair import pair

pytestmark = [pytest.mark.integration, pytest.mark.needs("netem")]


def test_netem_delay_each_way_gives_configured_rtt(testbed_lab):
    net = pair(delay_ms=50.0, bw_mbps=None)
    lab = testbed_lab(net)
    dst = net.address("h2")
    lab.run("h1", ["ping", "-c", "2", "-W", "3", dst], check=False)  # ARP, warm-up
    res = ping(lab, "h1", dst, count=20, interval_s=0.2)
    qdiscs = lab.links_readback()
    assert res["received"] == 20, res
    assert 95.0 <= res["rtt_p50_ms"] <= 105.0, res
    assert res["rtt_min_ms"] >= 100.0 - 0.5, "RTT below the configured delay: netem not applied"
    kinds = {q["kind"] for link in qdiscs for q in link["kernel"]}
    assert "netem" in kinds

"""The counter sampler sees what crosses a link: iperf3 through a 100 Mbit/s tbf link."""

import pytest

from testbed.measure.path import iperf3
from testbed.measure.samplers import CounterSampler, utilisation_summary
from topologies.pair import pair

pytestmark = pytest.mark.integration


def test_sampler_series_matches_shaped_rate(testbed_lab):
    net = pair(delay_ms=0, bw_mbps=100)
    lab = testbed_lab(net)
    sampler = CounterSampler(hz=20)
    sampler.watch("h1", "h1-eth0", lab.pid("h1"), capacity_mbps=100)
    with sampler:
        res = iperf3(lab, "h1", "h2", net.address("h2"), seconds=3)
    assert sampler.error is None
    (series,) = sampler.series()
    assert len(series["t_s"]) >= 40  # >= 10 Hz over ~3 s
    busy = [v for v in series["tx_bytes_s"] if v > 0.5 * 100e6 / 8]
    assert len(busy) >= 20
    mean_busy = sum(busy) / len(busy)
    assert 0.85 * 12.5e6 <= mean_busy <= 1.1 * 12.5e6, mean_busy
    assert series["tx_bytes_total"] >= res["iperf3_mbps"] * 1e6 / 8 * 3 * 0.9
    summary = utilisation_summary(series)
    assert summary["peak_util"] is not None and summary["peak_util"] <= 1.3
    # the fast counters agree with netlink's IFLA_STATS64 over the same run
    assert series["netlink_tx_bytes_total"] is not None
    assert series["tx_bytes_total"] <= series["netlink_tx_bytes_total"]
    assert series["tx_bytes_total"] >= 0.9 * series["netlink_tx_bytes_total"]
    assert sampler.dropped <= len(series["t_s"]) // 10

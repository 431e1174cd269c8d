"""The baseline through libiperf (the iperf3 wrapper, forked into the node) agrees with the
iperf3 command on the same link, and long runs go to the command."""

import statistics

import pytest

from testbed.lab import zygote
from testbed.measure.iperf3_client import fits
from testbed.measure.path import iperf3
from topologies.pair import pair

pytestmark = pytest.mark.integration


def test_wrapper_baseline_matches_the_cli_on_the_same_link(testbed_lab):
    zygote.shared()
    net = pair(delay_ms=0, bw_mbps=400)
    lab = testbed_lab(net)
    rates = {"libiperf": [], "cli": []}
    for tool in ("lib", "cli") * 3:  # alternated, medians: the machine is shared
        res = iperf3(lab, "h1", "h2", net.address("h2"), seconds=3, tool=tool)
        rates[res["tool"]].append(res["iperf3_mbps"])
    lib, cli = statistics.median(rates["libiperf"]), statistics.median(rates["cli"])
    assert 0.5 * 400 < cli <= 400 * 1.05, rates
    assert abs(lib - cli) <= 0.05 * cli, rates
    assert iperf3(lab, "h1", "h2", net.address("h2"), seconds=1, streams=2)["tool"] == \
        "libiperf"


def test_runs_too_long_for_the_wrapper_go_to_the_cli():
    assert fits(5, 1) and fits(20, 1) and not fits(60, 1) and not fits(10, 8)

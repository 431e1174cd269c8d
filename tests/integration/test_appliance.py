"""The impairment appliance: netem links through one full-kernel VM, the rest native.

Runs on the host (it is what a kernel without netem uses); where the kernel has netem, the
appliance is forced (``TESTBED_APPLIANCE=always``) so it is tested there too.
"""

import subprocess

import pytest

from testbed.host import appliance
from testbed.lab import Lab
from testbed.measure.migration import MigrationJob, migrate
from testbed.measure.path import iperf3, ping
from topologies.wan import wan

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module", autouse=True)
def through_the_appliance():
    old, appliance.POLICY = appliance.POLICY, "always"
    yield
    appliance.POLICY = old
    appliance.shutdown()


def _taps_at_home(app: appliance.Appliance) -> set[str]:
    out = subprocess.run(["ip", "-n", app.netns, "-o", "link", "show"], capture_output=True,
                         text=True).stdout
    return {line.split(":")[1].strip().split("@")[0] for line in out.splitlines()}


@pytest.mark.parametrize("rtt_ms", [10.0, 150.0])
def test_rtt_and_rate_through_the_appliance(rtt_ms):
    net = wan(sites=2, hosts_per_leaf=1, rtt_ms=rtt_ms, bw_mbps=100)
    with Lab(net) as lab:
        assert lab.appliance is not None and len(lab.appliance_links) == 1
        dst = net.address("b-h1")
        rtt = ping(lab, "a-h1", dst, count=20, interval_s=0.05)
        bdp = 100e6 / 8 * rtt_ms / 1000
        tput = iperf3(lab, "a-h1", "b-h1", dst, seconds=5, omit_s=2,
                      window=str(int(2 * bdp) + 65536))
        readback = lab.links_readback()
        drops = lab.emulator_drops()
        app = lab.appliance
    print(f"RTT {rtt_ms:g} ms: measured p50 {rtt['rtt_p50_ms']} ms, iperf3 "
          f"{tput['steady_mbps']} Mbit/s steady, calibration {readback[-1]['calibration']}")
    assert rtt["received"] == 20
    assert abs(rtt["rtt_p50_ms"] - rtt_ms) <= max(0.05 * rtt_ms, 1.5), rtt
    # tbf on the host caps the link at 100 Mbit/s on the wire: the whole run's goodput stays
    # below it, and so does the steady state (the median second after slow start)
    assert tput["iperf3_mbps"] <= 100, tput
    assert 75 <= tput["steady_mbps"] <= 100, tput
    entry = readback[-1]
    netem_rtt = sum(entry["calibration"]["applied_delay_ms"])
    assert rtt["rtt_min_ms"] >= netem_rtt, "RTT below netem's delay: netem not applied"
    assert entry["node"] == "appliance"
    assert {q["kind"] for q in entry["kernel"]} == {"netem"}
    cal = entry["calibration"]
    assert cal["asked_rtt_ms"] == rtt_ms and cal["appliance_rtt_ms"] > 0
    assert all(d < rtt_ms / 2 for d in cal["applied_delay_ms"])  # its own delay taken off
    # the appliance itself (its netem queues, the taps' rings) drops nothing; the host's tbf
    # is the link's bottleneck queue (one BDP), where TCP may overflow it as on a real link
    assert drops["appliance:a-r-b<->b-r-a"] == 0, drops
    # the lab is down: both taps are back home, the port free for the next lab
    assert set(app.ports[0].taps) <= _taps_at_home(app) and app.free_ports() == len(app.ports)


def test_migration_across_an_appliance_link_keeps_integrity():
    net = wan(sites=2, hosts_per_leaf=1, rtt_ms=20, bw_mbps=100)
    with Lab(net) as lab:
        run = migrate(lab, MigrationJob("a-h1", "b-h1", net.address("b-h1"),
                                        workload_mib=16, dirty_rate_mbs=2))
    res = run.result
    print({k: res.get(k) for k in ("migration_time_s", "downtime_ms", "goodput_mbps",
                                   "rounds")})
    assert res["completed"] and res["integrity_ok"], res
    assert res["bytes_on_wire"] > 0 and res["goodput_mbps"] > 10

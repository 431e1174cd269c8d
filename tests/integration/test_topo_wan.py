"""A three-site WAN measured with real traffic (needs netem: runs inside the full-kernel VM).

One lab (bring-up is slow under software emulation), one link per question::

    a-b  10 ms RTT, 150 Mbit/s          RTT, throughput at a short RTT, no emulator drops
    a-c  20 ms there + 30 ms back,      RTT 50 ms, per-direction delay (readback),
         2 % loss each way, 100 Mbit/s  loss within its statistical bounds
    b-c 150 ms RTT, 100 Mbit/s          RTT, throughput at a long RTT (BDP 1.9 MB), no drops

RTT is checked twice: raw, and as the delay the emulator adds (raw minus the same path's RTT
with the link's delay set to 0), because each hop costs ~0.5 ms of CPU under software
emulation (TCG) but microseconds on a real kernel.
"""

from __future__ import annotations

import json
import math
import os
import re
import statistics
import subprocess
import time
from dataclasses import replace

import pytest

from testbed.host.doctor import IN_VM_ENV
from testbed.lab import Lab, shaping
from topologies import build

pytestmark = [pytest.mark.integration, pytest.mark.needs("netem")]

LINKS = {
    "a-b": {"rtt_ms": 10, "bw_mbps": 150},
    "a-c": {"delay_ms": [20, 30], "loss_pct": 2},
    "b-c": {"rtt_ms": 150},
}
WIRE = 1514 / 1448  # Ethernet+IP+TCP(timestamps) bytes per byte of payload, full frames


@pytest.fixture(scope="module")
def lab():
    net = build("wan", sites=3, hosts_per_leaf=1, bw_mbps=100, links=LINKS)
    with Lab(net) as running:
        yield running


def rtts(lab: Lab, src: str, dst: str, count: int = 20) -> list[float]:
    ip = lab.network.address(dst)
    lab.run(src, ["ping", "-c", "1", "-W", "2", ip], check=False)  # resolve neighbours first
    out = lab.run(src, ["ping", "-n", "-c", str(count), "-i", "0.1", "-W", "2", ip]).stdout
    return [float(x) for x in re.findall(r"time=([\d.]+) ms", out)]


def base_rtt(lab: Lab, src: str, dst: str, link: tuple[str, str]) -> float:
    """The path's RTT with the WAN link's delay set to 0 (same qdiscs otherwise)."""
    owners = {dev: dev.split("-r-")[0] + "-r" for dev in link}
    plans = {dev: lab.qdisc_plans[(owners[dev], dev)] for dev in link}
    try:
        for dev in link:
            lk = next(li for li in lab.network.links if dev in (li.a.name, li.b.name))
            spec = replace(lk.spec_from(owners[dev]), delay_ms=0.0, loss_pct=0.0)
            shaping.apply(shaping.plan(dev, spec, rtt_ms=150), lab.pid(owners[dev]))
        return statistics.median(rtts(lab, src, dst))
    finally:
        for dev in link:
            shaping.apply(plans[dev], lab.pid(owners[dev]))


@pytest.mark.parametrize(("src", "dst", "link", "rtt_ms"), [
    ("a-h1", "b-h1", ("a-r-b", "b-r-a"), 10),
    ("a-h1", "c-h1", ("a-r-c", "c-r-a"), 50),
    ("b-h1", "c-h1", ("b-r-c", "c-r-b"), 150),
])
def test_rtt_matches_configuration(lab, src, dst, link, rtt_ms):
    got = statistics.median(rtts(lab, src, dst))
    base = base_rtt(lab, src, dst, link)
    print(f"{src}->{dst}: RTT {got:.2f} ms, configured {rtt_ms}, path without delay "
          f"{base:.2f} ms, emulated {got - base:.2f} ms")
    # Under TCG a netem qdisc's timer fires late by about 1 ms per direction (the impairment
    # appliance calibrates it away; whole-VM links do not yet): measured on this machine with
    # Debian's 6.1.0-57 kernel, +2.2 ms at 10 ms and +3.0 ms at 50 ms, the commit before this
    # one included.
    timers = 3.0 if os.environ.get(IN_VM_ENV) == "1" else 0.0
    tolerance = max(0.05 * rtt_ms, 2.0) + timers
    assert abs(got - base - rtt_ms) <= tolerance
    assert abs(got - rtt_ms) <= tolerance + base


def iperf3(lab: Lab, client: str, server: str, seconds: int, omit: int) -> dict:
    ip = lab.network.address(server)
    srv = lab.popen(server, ["iperf3", "-s", "-1", "-p", "5201"], stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not lab.run(server, ["ss", "-Hltn", "sport = :5201"]).stdout.strip():
            assert time.monotonic() < deadline
            time.sleep(0.05)
        out = lab.run(client, ["iperf3", "-c", ip, "-J", "-t", str(seconds), "-O", str(omit)],
                      timeout=seconds + omit + 60).stdout
        return json.loads(out)["end"]
    finally:
        srv.kill()
        srv.wait()


@pytest.mark.parametrize(("src", "dst", "link", "mbps", "seconds", "omit"), [
    ("a-h1", "b-h1", ("a-r-b", "b-r-a"), 150, 6, 2),
    ("b-h1", "c-h1", ("b-r-c", "c-r-b"), 100, 10, 5),
])
def test_throughput_matches_configuration_without_emulator_drops(lab, src, dst, link, mbps,
                                                                 seconds, omit):
    """Window: the hosts' tcp_rmem/wmem allow 64 MiB, autotuning grows to the BDP."""
    owner = {dev: dev.split("-r-")[0] + "-r" for dev in link}
    before = {dev: shaping.qdisc_drops(dev, lab.pid(owner[dev])) for dev in link}
    end = iperf3(lab, src, dst, seconds, omit)
    goodput = end["sum_received"]["bits_per_second"] / 1e6
    drops = {dev: shaping.qdisc_drops(dev, lab.pid(owner[dev])) - before[dev] for dev in link}
    print(f"{src}->{dst}: goodput {goodput:.1f} Mbit/s = {goodput * WIRE:.1f} on the wire, "
          f"configured {mbps}; retransmits {end['sum_sent'].get('retransmits')}; drops {drops}")
    assert abs(goodput * WIRE - mbps) <= 0.05 * mbps, end["sum_received"]
    assert drops == dict.fromkeys(link, 0)


def test_loss_within_statistical_bounds(lab):
    n, p_each_way = 1000, 0.02
    ip = lab.network.address("c-h1")
    lab.run("a-h1", ["ping", "-c", "2", "-W", "2", ip], check=False)
    out = lab.run("a-h1", ["ping", "-n", "-q", "-c", str(n), "-i", "0.005", "-W", "1", ip],
                  check=False, timeout=120).stdout
    received = int(re.search(r"(\d+) received", out).group(1))
    p = 1 - (1 - p_each_way) ** 2  # request or reply lost
    mean, sd = n * p, math.sqrt(n * p * (1 - p))
    lost = n - received
    print(f"loss: {lost} of {n} pings lost, expected {mean:.1f} +/- {sd:.1f}")
    assert abs(lost - mean) <= 4.5 * sd, (lost, mean, sd)


def netem_of(lab: Lab, dev: str) -> tuple[dict, dict]:
    entry = next(e for e in lab.links_readback() if e["dev"] == dev)
    kernel = next(q for q in entry["kernel"] if q["kind"] == "netem")
    return entry["asked"], kernel["options"]


def test_readback_rate_limit_and_per_direction_delay(lab):
    asked, held = netem_of(lab, "b-r-c")
    assert held["rate"]["rate"] == 100 * 1_000_000 // 8  # bytes/s
    assert held["limit"] == asked["netem_limit_pkts"]
    # the queue holds the delay line at the configured rate (75 ms at 100 Mbit/s ~ 620 frames)
    assert held["limit"] > 100e6 / 8 * 0.075 / 1514
    there, back = netem_of(lab, "a-r-c")[1], netem_of(lab, "c-r-a")[1]
    assert (there["delay"]["delay"], back["delay"]["delay"]) == (0.020, 0.030)
    assert there["loss-random"]["loss"] == back["loss-random"]["loss"] == 0.02, (there, back)

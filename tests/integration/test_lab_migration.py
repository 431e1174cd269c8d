"""The lab runs the agents in its nodes: a real migration across a shaped link."""

import pytest

from testbed.measure.migration import MigrationJob, migrate
from topologies.pair import pair

pytestmark = pytest.mark.integration


def test_migration_between_lab_nodes_over_shaped_link(testbed_lab):
    net = pair(delay_ms=0, bw_mbps=200)
    lab = testbed_lab(net)
    job = MigrationJob("h1", "h2", net.address("h2"), workload_mib=32, dirty_rate_mbs=4)
    run = migrate(lab, job)
    res = run.result
    assert run.exit_code == 0, run.source_stderr
    assert res["completed"] and res["integrity_ok"], res
    assert res["image_bytes"] >= 32 * 2**20
    assert res["rounds"] >= 1 and res["downtime_ms"] is not None
    # the shaped link bounds the goodput: it cannot beat 200 Mbit/s by much
    assert 0 < res["goodput_mbps"] <= 200 * 1.1, res["goodput_mbps"]


def test_hosts_run_the_pinned_tcp_not_the_machines(testbed_lab):
    # this machine's kernel defaults to bbr and allows namespaces only "reno bbr": the lab
    # must still give every host the topology's cubic (and its socket memory)
    net = pair(delay_ms=0, bw_mbps=None)
    assert net.host_tcp.congestion == "cubic"
    lab = testbed_lab(net)
    for host in ("h1", "h2"):
        assert lab.run(host, ["sysctl", "-n", "net.ipv4.tcp_congestion_control"]
                       ).stdout.strip() == "cubic"
        assert lab.run(host, ["sysctl", "-n", "net.ipv4.tcp_wmem"]).stdout.split()[-1] == \
            str(64 << 20)


def test_a_burst_starts_its_round_0s_together_and_a_failed_member_holds_none_back(
        testbed_lab):
    """Three migrations at once between two lab nodes: the two that start begin round 0
    within a moment of each other (the start gate), and the one whose source fails before
    round 0 (a bad argument) neither blocks them nor is taken for a migration."""
    import time

    from testbed.measure.migration import migrate_concurrently

    net = pair(delay_ms=0, bw_mbps=400)
    lab = testbed_lab(net)
    jobs = [MigrationJob("h1", "h2", net.address("h2"), port=7810 + i, workload_mib=16,
                         dirty_rate_mbs=2, extra_args=("--no-such-option",) if i == 2 else ())
            for i in range(3)]
    t0 = time.monotonic()
    runs = migrate_concurrently(lab, jobs)
    assert time.monotonic() - t0 < 60  # not the gate's 300 s
    good, bad = runs[:2], runs[2]
    assert all(r.exit_code == 0 and r.result["completed"] for r in good), \
        [r.source_stderr for r in good]
    starts = [r.result["monotonic_s"]["round0"] for r in good]
    assert max(starts) - min(starts) < 0.5, starts
    assert bad.exit_code != 0 and not bad.result.get("completed")

"""The guest keeps its MAC and IP when it moves, and its clients keep reaching it.

One guest moves from a hypervisor on leaf 1 to one on leaf 2 of a spine-leaf fabric while a
client on leaf 1 asks it for its counter every millisecond: across vSwitches over a
stretched VLAN (l2), over a VXLAN segment across the routed fabric (vxlan), and with its /32
host route moved at switchover (hostroute).
"""

import subprocess
import sys

import pytest

from testbed.measure.migration import MigrationJob, migrate
from topologies.guests import add_guests
from topologies.spine_leaf import spine_leaf

pytestmark = pytest.mark.integration


def fabric_with_guest(mode, client_on="h1-2"):
    net = spine_leaf(spines=2, leaves=2, hosts_per_leaf=2, stacks=["management", "migration"])
    add_guests(net, mode, {"g1": "h1-1"}, ["h2-1"], client_on=client_on)
    return net


def move_g1(lab, workload_mib=4, dirty_rate_mbs=1, client_probe_ms=2.0, destination_args=()):
    """Migrate guest g1 from h1-1 to h2-1 over their migration stacks."""
    src, dst = (lab.network.stacks_of(h)["migration"] for h in ("h1-1", "h2-1"))
    return migrate(lab, MigrationJob("h1-1", "h2-1", dst.ip, bind=src.ip,
                                     workload_mib=workload_mib, dirty_rate_mbs=dirty_rate_mbs,
                                     guest="g1", client_probe_ms=client_probe_ms,
                                     destination_args=destination_args))


# the client on another host of the source leaf, or on the source host itself (then the
# two share the vSwitch before the move: nothing may keep the client on that shortcut)
@pytest.mark.parametrize(("mode", "client_on"), [("l2", "h1-2"), ("vxlan", "h1-2"),
                                                 ("hostroute", "h1-2"), ("hostroute", "h1-1"),
                                                 ("vxlan", "h1-1")])
def test_guest_identity_moves_and_the_client_sees_the_outage(testbed_lab, mode, client_on):
    net = fabric_with_guest(mode, client_on)
    lab = testbed_lab(net)
    old_port = net.guests.slot("g1", "h1-1").vswitch_port
    new_port = net.guests.slot("g1", "h2-1").vswitch_port
    run = move_g1(lab, workload_mib=8, dirty_rate_mbs=2, client_probe_ms=1.0)
    res, client = run.result, run.result.get("client", {})
    assert run.exit_code == 0, (run.source_stderr, res.get("error"))
    assert res["completed"] and res["integrity_ok"] and res["resumed"], res
    # the identity moved: the source's port is disconnected, the destination's connected
    assert "state DOWN" in lab.run("h1-1", ["ip", "link", "show", old_port]).stdout
    assert "DOWN" not in lab.run("h2-1", ["ip", "link", "show", new_port]).stdout.split(
        "state ")[1][:5]
    assert "error" not in client, client
    # the client reached the original, then the resumed guest, at the same address
    assert len(client["locations"]) == 2, client
    assert client["locations"][-1] == res["destination_pid"]
    assert client["counter_continuity_ok"] is True, client
    assert client["answers_from_old_after_switch"] == 0, client
    # an outage the client saw, measured, and no shorter than the agents' own pause
    assert client["outage_ms"] is not None and client["outage_resolved"], client
    assert 0 < client["outage_ms"] < 10_000
    assert client["outage_ms"] >= 0.5 * res["downtime_ms"], (client["outage_ms"],
                                                             res["downtime_ms"])
    assert res["client_outage_ms"] == client["outage_ms"]
    print(mode, {k: client[k] for k in ("outage_ms", "loss_pct", "locations", "switch_at_s",
                                         "counter_before", "counter_after", "requests",
                                         "achieved_interval_ms")}, res["downtime_ms"])


def test_without_announcement_the_l2_network_keeps_the_old_location(testbed_lab):
    """The announcement is what moves the guest on the L2 segment: without it the leaf's
    switch keeps sending to the old port (here, until the probe gives up)."""
    net = fabric_with_guest("l2")
    lab = testbed_lab(net)
    run = move_g1(lab, destination_args=("--announce", "none"))
    fdb = subprocess.run(["bridge", "fdb", "show", "br", "vl1"], capture_output=True,
                         text=True).stdout
    res, client = run.result, run.result["client"]
    assert res["completed"], res
    mac = net.guests.slot("g1", "h1-1").mac
    # the switch of leaf 1 still sends the guest's MAC to hypervisor h1-1's port
    assert any(mac in line and "vl1-h1-1" in line for line in fdb.splitlines()), fdb
    assert len(client["locations"]) == 1, client  # the resumed guest was never reached


def test_a_failed_network_move_leaves_the_guest_at_the_source(testbed_lab):
    """The destination's on-resume hook fails (the route move, say): no ACK, the source keeps
    its guest, connected, and the destination's copy is gone and disconnected."""
    net = fabric_with_guest("l2")
    lab = testbed_lab(net)
    run = move_g1(lab, destination_args=("--on-resume", "echo no route >&2; exit 3"))
    old_port = net.guests.slot("g1", "h1-1").vswitch_port
    new_port = net.guests.slot("g1", "h2-1").vswitch_port
    assert "state DOWN" not in lab.run("h1-1", ["ip", "link", "show", old_port]).stdout
    assert "state DOWN" in lab.run("h2-1", ["ip", "link", "show", new_port]).stdout
    # the destination had announced the guest before its hook failed; the source
    # announced it again, so the client reaches the original once more
    client_ns = f"/run/netns/{lab.slot_netns('client', 'h1-2')}"
    answer = subprocess.run(["nsenter", f"--net={client_ns}", sys.executable, "-c", ASK,
                             net.guests.home("g1").ip, "7000"], capture_output=True,
                            text=True, timeout=60)
    res = run.result
    assert not res["completed"] and "on-resume hook failed (3)" in (res["error"] or ""), res
    assert any("announced again" in w for w in res["warnings"]), res["warnings"]
    assert answer.stdout.split() == [str(res["source_pid"])], (answer.stdout, answer.stderr)


ASK = """
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.2)
for _ in range(50):
    s.sendto(b"C" + b"q" * 8, (sys.argv[1], int(sys.argv[2])))
    try:
        print(struct.unpack_from("<QI", s.recv(64), 1)[1])
        break
    except TimeoutError:
        time.sleep(0.05)
"""

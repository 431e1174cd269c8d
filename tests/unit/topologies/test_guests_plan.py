"""The guest-network plan: slots, uplinks, vSwitch commands and the moves of each mode."""

import pytest

from topologies.guests import GUEST_NET, TEP_POOL, add_guests
from topologies.spine_leaf import spine_leaf


def fabric():
    return spine_leaf(spines=2, leaves=2, hosts_per_leaf=2, stacks=["management", "migration"])


@pytest.mark.parametrize("mode", ["l2", "vxlan", "hostroute"])
def test_every_slot_of_a_guest_carries_the_same_identity(mode):
    net = fabric()
    plan = add_guests(net, mode, {"g1": "h1-1", "g2": "h1-1"}, {"g1": ["h2-1"], "g2": ["h2-2"]},
                      client_on="h1-2")
    g1 = [s for s in plan.slots if s.guest == "g1"]
    assert [s.host for s in g1] == ["h1-1", "h2-1"] and [s.home for s in g1] == [True, False]
    assert len({(s.mac, s.addr) for s in g1}) == 1  # same MAC and IP wherever it may run
    assert plan.home("g2").host == "h1-1" and plan.slot("g2", "h2-2").index != g1[1].index
    assert len({s.mac for s in plan.slots}) == 3  # g1, g2, client
    assert len({s.index for s in plan.slots}) == len(plan.slots)
    assert net.guests is plan
    with pytest.raises(KeyError, match="no slot on 'h2-2'"):
        plan.slot("g1", "h2-2")


def test_l2_joins_the_leaves_vm_switches_and_enslaves_each_uplink():
    net = fabric()
    add_guests(net, "l2", {"g1": "h1-1"}, ["h2-1"], client_on="h1-2")
    assert net.nodes["vl1"].role == "switch" and net.nodes["vl2"].kind == "bridge"
    ends = {(li.a.node, li.b.node) for li in net.links}
    assert ("vl1", "vl2") in ends and ("h2-1", "vl2") in ends
    assert ["ip", "link", "set", "h1-1-vm", "master", "vmbr0"] in net.commands["h1-1"]


def test_vxlan_tunnels_to_every_other_hypervisor_over_routed_uplinks():
    net = fabric()
    plan = add_guests(net, "vxlan", {"g1": "h1-1"}, ["h2-1"], client_on="h1-2")
    teps = {h: ip for h, (_, ip) in plan.uplinks.items()}
    assert set(teps) == {"h1-1", "h2-1", "h1-2"} and all(ip.startswith("10.199.") for ip in
                                                          teps.values())
    cmds = net.commands["h1-1"]
    assert any(c[:4] == ["ip", "link", "add", "vx0"] and teps["h1-1"] in c for c in cmds)
    floods = [c[-1] for c in cmds if c[:3] == ["bridge", "fdb", "append"]]
    assert sorted(floods) == sorted([teps["h2-1"], teps["h1-2"]])
    # the spines route each leaf's tunnel endpoints
    assert any(r.node == "s1" and r.dst == "10.199.2.0/24" for r in net.routes)
    assert any(r.node == "h1-1" and r.dst == TEP_POOL for r in net.routes)
    assert all(s.mtu == 1450 for s in plan.slots)  # room for the VXLAN header


def test_hostroute_routes_each_guest_to_its_home_and_moves_its_slash32():
    net = fabric()
    plan = add_guests(net, "hostroute", {"g1": "h1-1"}, ["h2-1"], client_on="h1-2")
    ip = plan.home("g1").ip
    assert plan.home("g1").addr == f"{ip}/32"
    at = {r.node: r for r in net.routes if r.dst == f"{ip}/32"}
    assert set(at) == {"l1", "l2", "s1", "s2"}  # every router, towards leaf 1
    assert at["l1"].via == (plan.uplinks["h1-1"][1],)
    assert len(at["l2"].via) == 2  # ECMP over both spines
    assert ["ip", "route", "add", f"{ip}/32", "dev", "vmbr0"] in net.commands["h1-1"]
    assert any(r.node == "h1-1" and r.dst == GUEST_NET for r in net.routes)
    on_resume, on_end = plan.move_commands(net, "g1", "h1-1", "h2-1")
    assert on_resume["h2-1"] == [["ip", "route", "replace", f"{ip}/32", "dev", "vmbr0"]]
    assert on_resume["l2"] == [["ip", "route", "replace", f"{ip}/32", "via",
                                plan.uplinks["h2-1"][1]]]
    assert on_resume["l1"][0][4] == "nexthop"  # the old leaf now goes through the spines
    assert set(on_resume) == {"h2-1", "l1", "l2", "s1", "s2"}
    assert on_end == {"h1-1": [["ip", "route", "del", f"{ip}/32", "dev", "vmbr0"]]}


def test_l2_and_vxlan_moves_need_no_routing_change():
    for mode in ("l2", "vxlan"):
        net = fabric()
        plan = add_guests(net, mode, {"g1": "h1-1"}, ["h2-1"])
        assert plan.move_commands(net, "g1", "h1-1", "h2-1") == ({}, {})


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="must be one of l2, vxlan, hostroute"):
        add_guests(fabric(), "vlan", {"g1": "h1-1"}, ["h2-1"])
    with pytest.raises(ValueError, match="'s1' is not a host"):
        add_guests(fabric(), "l2", {"g1": "s1"}, ["h2-1"])
    with pytest.raises(ValueError, match="'h9-9' is not a host"):
        add_guests(fabric(), "l2", {"g1": "h1-1"}, ["h9-9"])

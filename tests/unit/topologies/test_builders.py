"""Topology builders: addressing, computed routes (ECMP over every spine), validation."""

from __future__ import annotations

import ipaddress
import json

import pytest

import topologies
from topologies import TopologyError, build
from topologies.fabric import TABLES
from topologies.mininet import to_mininet_topo
from topologies.model import Route
from topologies.show import render


def routes_of(net, node, table=None):
    return [r for r in net.routes if r.node == node and r.table == table]


def addr_of(net, node, intf):
    return net.address(node, intf)


def test_registry_names_and_aliases():
    assert set(topologies.REGISTRY) == {"pair", "spine_leaf", "wan", "cloud", "lan"}
    assert build("spine-leaf").name == build("spine_leaf").name == "spine_leaf"
    assert "rtt_ms" in topologies.parameters("wan")
    for name in topologies.REGISTRY:
        json.dumps(build(name).describe())


@pytest.mark.parametrize(("name", "params", "needle"), [
    ("mesh", {}, "unknown topology 'mesh'; known: cloud, lan, pair, spine_leaf, wan"),
    ("wan", {"rtt": 10}, "unknown parameter(s) rtt; known: sites"),
    ("wan", {"sites": 1}, "sites must be an integer in 2..26"),
    ("wan", {"rtt_ms": 10, "delay_ms": 5}, "rtt_ms or delay_ms, not both"),
    ("wan", {"loss_pct": 101}, "loss_pct must be within 0..100"),
    ("wan", {"links": {"a-c": {"rtt_ms": 5}}}, "'a-c' is not a WAN link"),
    ("wan", {"sites": 3, "links": {"a-c": {"rtt": 5}}}, "unknown setting(s) ['rtt']"),
    ("spine_leaf", {"spines": 0}, "spines must be an integer >= 1"),
    ("spine_leaf", {"ecmp_hash": "l7"}, "ecmp_hash must be one of ['l3', 'l4']"),
    ("spine_leaf", {"oversubscription": 2}, "oversubscription needs host_link_mbps"),
    ("spine_leaf", {"host_link_mbps": 100, "fabric_link_mbps": 50, "oversubscription": 3},
     "contradicts oversubscription"),
    ("spine_leaf", {"stacks": ["storage"]}, "unknown function 'storage'"),
    ("spine_leaf", {"stack_dscp": {"migration": "af99"}}, "not a DSCP name"),
    ("spine_leaf", {"stacks": ["migration"], "stack_rate_mbps": {"management": 5}},
     "'management' is not one of the stacks"),
    ("spine_leaf", {"stack_mode": "vlan"}, "stack_mode must be auto, vrf or policy"),
    ("cloud", {"service_port": 65535}, "service_port must leave room"),
])
def test_invalid_parameters_are_named(name, params, needle):
    with pytest.raises(TopologyError) as exc:
        build(name, **params)
    assert needle in str(exc.value)


def test_spine_leaf_addressing_is_deterministic_and_printable():
    a = build("spine_leaf", spines=2, leaves=3, hosts_per_leaf=2)
    b = build("spine_leaf", spines=2, leaves=3, hosts_per_leaf=2)
    assert a.describe() == b.describe()
    json.dumps(a.describe())
    assert len(a.nodes) == 2 + 3 + 6
    # host h on leaf l: function k in 10.l.h.(8k)/29, gateway .8k+1 on the leaf
    st = a.stacks_of("h3-2")
    assert st["management"].addr == "10.3.2.2/29" and st["management"].gateway == "10.3.2.1"
    assert st["migration"].addr == "10.3.2.10/29" and st["migration"].gateway == "10.3.2.9"
    assert st["replication"].addr == "10.3.2.18/29" and st["replication"].table == 30
    assert addr_of(a, "l3", "l3-h2-mig") == "10.3.2.9"
    every = [ip for li in a.links for e in (li.a, li.b) for ip in e.addrs]
    assert len(every) == len(set(every))
    text = render(a)
    assert "h3-2-mig" in text and "gw 10.3.2.9" in text and "nexthop" not in text


@pytest.mark.parametrize(("spines", "leaves"), [(2, 2), (4, 8), (3, 5)])
def test_every_leaf_reaches_every_other_leaf_over_every_spine(spines, leaves):
    net = build("spine_leaf", spines=spines, leaves=leaves, hosts_per_leaf=1, stacks=False)
    for i in range(1, leaves + 1):
        leaf = f"l{i}"
        spine_addrs = {addr_of(net, f"s{j}", f"s{j}-l{i}") for j in range(1, spines + 1)}
        others = {f"10.{k}.0.0/16" for k in range(1, leaves + 1) if k != i}
        got = {r.dst: set(r.via) for r in routes_of(net, leaf)}
        assert set(got) == others
        assert all(via == spine_addrs for via in got.values())
    for j in range(1, spines + 1):  # each spine: one next hop per leaf block
        got = {r.dst: r.via for r in routes_of(net, f"s{j}")}
        assert got == {f"10.{i}.0.0/16": (addr_of(net, f"l{i}", f"l{i}-s{j}"),)
                       for i in range(1, leaves + 1)}


def test_ecmp_hash_policy_and_oversubscription():
    net = build("spine_leaf", spines=2, leaves=2, hosts_per_leaf=4, host_link_mbps=100,
                oversubscription=2, ecmp_hash="l3")
    assert net.params["fabric_link_mbps"] == 100  # 4 x 100 / (2 x 2)
    assert ("net.ipv4.fib_multipath_hash_policy", "0") in net.nodes["l1"].sysctls
    fabric = [li for li in net.links if li.a.node == "s1"]
    assert fabric and all(li.a_to_b.bw_mbps == 100 for li in fabric)
    l4 = build("spine_leaf", ecmp_hash="l4")
    # the 5-tuple from the headers, never the hash the sender's socket attached (policy 1)
    assert ("net.ipv4.fib_multipath_hash_policy", "3") in l4.nodes["s2"].sysctls
    assert ("net.ipv4.fib_multipath_hash_fields", "0x0037") in l4.nodes["s2"].sysctls


def test_function_stacks_have_own_table_source_and_gateway():
    net = build("spine_leaf", spines=1, leaves=2, hosts_per_leaf=1, stack_mode="policy",
                stack_rate_mbps={"replication": 50}, stack_dscp={"migration": "af41"})
    stacks = net.stacks_of("h1-1")
    assert {s.table for s in stacks.values()} == set(TABLES.values())
    for func, st in stacks.items():
        table_routes = routes_of(net, "h1-1", TABLES[func])
        assert Route("h1-1", "default", (st.gateway,), st.dev, st.table, st.ip) in table_routes
        assert ipaddress.ip_address(st.gateway) in ipaddress.ip_network(st.subnet)
    # the main table's default goes to management
    assert routes_of(net, "h1-1") == [Route("h1-1", "default", (stacks["management"].gateway,))]
    assert stacks["replication"].rate_mbps == 50 and stacks["migration"].dscp == "af41"
    assert net.stack_mode == "policy"


def test_wan_delay_per_direction_and_overrides():
    net = build("wan", sites=3, rtt_ms=50, bw_mbps=100, jitter_ms=1,
                links={"a-c": {"delay_ms": [70, 80]}, "b-c": {"loss_pct": 1}})
    by = {(li.a.node, li.b.node): li for li in net.links if li.a.node.endswith("-r")
          and li.b.node.endswith("-r")}
    ab, ac, bc = by[("a-r", "b-r")], by[("a-r", "c-r")], by[("b-r", "c-r")]
    assert ab.a_to_b.delay_ms == ab.b_to_a.delay_ms == 25
    assert (ac.a_to_b.delay_ms, ac.b_to_a.delay_ms) == (70, 80)
    assert ac.a_to_b.bw_mbps == 100 and ac.a_to_b.jitter_ms == 1
    assert bc.a_to_b.loss_pct == 1 and bc.a_to_b.delay_ms == 25
    # full mesh: site a reaches c's hosts directly over a-c
    r = next(r for r in routes_of(net, "a-r") if r.dst == "10.3.0.0/16")
    assert r.via == (addr_of(net, "c-r", "c-r-a"),)


def test_wan_of_fabrics_routes_through_border_over_all_spines():
    net = build("wan", sites=2, spines=2, leaves=2, hosts_per_leaf=1, rtt_ms=20)
    leaf_route = next(r for r in routes_of(net, "a-l1") if r.dst == "10.3.0.0/16")
    assert set(leaf_route.via) == {addr_of(net, "a-s1", "a-s1-l1"),
                                   addr_of(net, "a-s2", "a-s2-l1")}
    border = next(r for r in routes_of(net, "a-r") if r.dst == "10.1.0.0/16")
    assert set(border.via) == {addr_of(net, "a-s1", "a-s1-r"), addr_of(net, "a-s2", "a-s2-r")}


def test_cloud_gateway_publishes_only_the_service_port():
    net = build("cloud", cloud_hosts=2, service_port=7000, rtt_ms=40)
    (gw,) = net.gateways
    assert gw.node == "cgw" and gw.outside_dev == "cgw-wan"
    assert [(p.port, p.to_addr, p.to_port) for p in gw.published] == [
        (7000, "172.16.1.10", 7000), (7001, "172.16.2.10", 7000)]
    assert gw.public_addr == addr_of(net, "cgw", "cgw-wan")
    # on-prem has a route to the cloud management net: only the firewall keeps it out
    assert any(r.dst == "172.17.0.0/16" for r in routes_of(net, "a-r"))
    assert net.stacks_of("c-h1")["management"].addr == "172.17.1.2/29"


def test_render_shows_per_direction_settings():
    net = build("wan", sites=2, delay_ms=[10, 30], bw_mbps=2500)
    text = render(net)
    assert "->: 2500 Mbit/s, delay 10 ms; <-: 2500 Mbit/s, delay 30 ms" in text


def test_mininet_node_commands_configure_a_host():
    from topologies.mininet import node_commands

    net = build("spine_leaf", spines=1, leaves=2, hosts_per_leaf=1)
    cmds = node_commands(net, "h1-1")
    assert ["ip", "addr", "add", "10.1.1.10/29", "dev", "h1-1-mig"] in cmds
    assert ["ip", "rule", "add", "from", "10.1.1.10", "lookup", "20", "pref", "120"] in cmds
    leaf = node_commands(net, "l1")
    assert ["ip", "route", "replace", "10.2.0.0/16", "via", "10.254.0.0"] in leaf


def test_to_mininet_topo_has_all_nodes_and_links():
    net = build("wan", sites=2, hosts_per_leaf=2, rtt_ms=10)
    topo = to_mininet_topo(net)
    assert sorted(topo.nodes()) == sorted(net.nodes)
    assert len(topo.links()) == len(net.links)


def test_lan_switch_kinds():
    net = build("lan", hosts=3, switch="ovs")
    assert net.nodes["s1"].role == "switch" and net.nodes["s1"].kind == "ovs"
    assert [net.address(f"h{i}") for i in (1, 2, 3)] == ["10.0.0.1", "10.0.0.2", "10.0.0.3"]
    with pytest.raises(TopologyError, match="switch must be"):
        build("lan", switch="hub")


def test_every_builder_leaves_the_hosts_tcp_to_the_lab():
    from topologies.model import HostTcp

    for name in ("spine_leaf", "wan", "cloud", "pair"):
        net = build(name)
        assert net.host_tcp == HostTcp()  # cubic, 64 MiB socket memory, set by the lab
        hosts = [n for n in net.nodes.values() if n.role == "host"]
        assert hosts and not any(k.startswith("net.ipv4.tcp_") for n in hosts
                                 for k, _ in n.sysctls)
    assert dict(HostTcp().sysctls())["net.ipv4.tcp_wmem"] == "4096 16384 67108864"
    with pytest.raises(ValueError, match="congestion control 'vegas'"):
        HostTcp("vegas")

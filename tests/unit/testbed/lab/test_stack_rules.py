"""Rendering of function stacks (VRF / policy routing, HTB caps) and gateway nftables rules."""

from __future__ import annotations

from testbed.lab import firewall, routing
from topologies import build


def test_policy_mode_selects_table_by_source_and_interface():
    net = build("spine_leaf", spines=1, leaves=1, hosts_per_leaf=1, stacks=["migration"])
    cmds = routing.stack_commands(net.stacks, "policy")
    assert ["ip", "rule", "add", "from", "10.1.1.10", "lookup", "20", "pref", "120"] in cmds
    assert ["ip", "rule", "add", "oif", "h1-1-mig", "lookup", "20", "pref", "120"] in cmds
    assert not any("vrf" in c for c in cmds)


def test_vrf_mode_enslaves_and_keeps_source_rule():
    net = build("spine_leaf", spines=1, leaves=1, hosts_per_leaf=1)
    cmds = routing.stack_commands(list(net.stacks_of("h1-1").values()), "vrf")
    assert ["ip", "link", "add", "vrf-mig", "type", "vrf", "table", "20"] in cmds
    assert ["ip", "link", "set", "dev", "h1-1-mig", "master", "vrf-mig"] in cmds
    assert ["sysctl", "-qw", "net.ipv4.tcp_l3mdev_accept=1"] in cmds
    # the main table keeps the management subnet so unbound sockets reach their gateway
    leaks = routing.main_table_leaks(net, "h1-1", list(net.stacks_of("h1-1").values()))
    assert leaks == [["ip", "route", "replace", "10.1.1.0/29", "dev", "h1-1-mgmt"]]


def test_cap_is_an_htb_class_no_faster_than_the_link():
    net = build("spine_leaf", spines=1, leaves=1, hosts_per_leaf=1, host_link_mbps=40,
                stack_rate_mbps={"replication": 50})
    st = net.stacks_of("h1-1")["replication"]
    cmds = routing.cap_commands(st, 40)
    assert cmds[1][-4:] == ["rate", "40000000bit", "ceil", "40000000bit"]
    assert routing.cap_commands(net.stacks_of("h1-1")["migration"], 40) == []


def test_gateway_ruleset_publishes_only_dnat_ports():
    net = build("cloud", cloud_hosts=2, service_port=8000)
    rules = firewall.gateway_ruleset(net.gateways[0])
    pub = net.gateways[0].public_addr
    assert f'iifname "cgw-wan" ip daddr {pub} tcp dport 8000 dnat to 172.16.1.10:8000' in rules
    assert f'iifname "cgw-wan" ip daddr {pub} tcp dport 8001 dnat to 172.16.2.10:8000' in rules
    assert "type filter hook forward priority filter; policy drop;" in rules
    assert 'iifname "cgw-wan" ct status dnat counter accept' in rules
    assert rules.count("dnat to") == 2


def test_dscp_rules_only_for_marked_stacks():
    net = build("spine_leaf", spines=1, leaves=1, hosts_per_leaf=1,
                stack_dscp={"migration": "AF41"})
    rules = firewall.dscp_ruleset(list(net.stacks_of("h1-1").values()))
    assert 'oifname "h1-1-mig" ip dscp set af41' in rules
    assert "mgmt" not in rules
    assert firewall.dscp_ruleset(list(build("spine_leaf").stacks_of("h1-1").values())) == ""

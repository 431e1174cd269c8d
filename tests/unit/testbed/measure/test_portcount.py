"""Port counters in routers: the ruleset, nft's JSON listing, the carrier of a port."""

from testbed.measure.portcount import carrier, parse, ruleset

# `nft -j list table inet tbports` (nftables 1.0.6, Debian 12) after some traffic
LISTING = ('{"nftables": [{"metainfo": {"version": "1.0.6", "json_schema_version": 1}}, '
           '{"table": {"family": "inet", "name": "tbports", "handle": 1}}, '
           '{"chain": {"family": "inet", "table": "tbports", "name": "counted", "handle": 1}}, '
           '{"rule": {"family": "inet", "table": "tbports", "chain": "counted", "handle": 2, '
           '"expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", '
           '"field": "dport"}}, "right": 7800}}, {"counter": {"packets": 9, "bytes": 12000}}]}}, '
           '{"rule": {"family": "inet", "table": "tbports", "chain": "counted", "handle": 3, '
           '"expr": [{"match": {"op": "==", "left": {"payload": {"protocol": "tcp", '
           '"field": "dport"}}, "right": 7801}}, {"counter": {"packets": 0, "bytes": 0}}]}}]}')


def test_counters_per_destination_port():
    text = ruleset([7801, 7800, 7800])
    assert text.count("counter") == 2 and "hook forward" in text
    assert parse(LISTING) == {7800: 12000, 7801: 0}
    assert parse("") == {}


def test_the_carrier_is_the_router_that_saw_most_of_the_port():
    before = {"s1": {7800: 100}, "s2": {7800: 0}}
    after = {"s1": {7800: 300}, "s2": {7800: 50_000}}
    assert carrier(before, after, 7800) == ("s2", {"s1": 200, "s2": 50_000})
    assert carrier(before, before, 7800)[0] is None  # nothing crossed any of them

"""Topology files (topologies/file.py): what they build, and errors with file:line."""

import pytest

from topologies import TopologyError
from topologies.file import load, parse

WRITTEN = """\
name = "tri"
[[node]]
name = "h1"
[[node]]
name = "r1"
role = "router"
[[node]]
name = "h2"
[[link]]
a = "h1"
b = "r1"
a_addr = "10.1.1.1/24"
b_addr = "10.1.1.254/24"
bw_mbps = 100
delay_ms = 5
[[link]]
a = "r1"
b = "h2"
a_addr = "10.1.2.254/24"
b_addr = "10.1.2.1/24"
b_to_a = { loss_pct = 1.5 }
[[route]]
node = "h1"
dst = "default"
via = "10.1.1.254"
"""


def _write(tmp_path, text, name="t.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_written_out_network(tmp_path):
    net = load(_write(tmp_path, WRITTEN))
    assert net.name == "tri" and set(net.nodes) == {"h1", "r1", "h2"}
    assert net.nodes["r1"].forwarding and not net.nodes["h1"].forwarding
    first, second = net.links
    assert (first.a.name, first.b.name) == ("h1-eth0", "r1-eth0")
    assert second.a.name == "r1-eth1" and second.b.addrs == ("10.1.2.1/24",)
    assert first.a_to_b.bw_mbps == 100 and first.b_to_a.delay_ms == 5
    assert second.a_to_b.loss_pct == 0 and second.b_to_a.loss_pct == 1.5
    assert net.routes[0].command() == ["ip", "route", "replace", "default", "via",
                                       "10.1.1.254"]
    assert net.params["file"].endswith("t.toml")


def test_builder_file_with_params_overrides_and_impair(tmp_path):
    path = _write(tmp_path, """\
builder = "wan"
[params]
sites = 2
hosts_per_leaf = 1
rtt_ms = 40
[[impair]]
link = ["b-r", "a-r"]
loss_pct = 0.5
a_to_b = { delay_ms = 30 }
""", "two.toml")
    net = load(path, {"rtt_ms": 20})
    assert net.name == "two" and net.params["rtt_ms"] == 20
    (wan_link,) = [li for li in net.links if {li.a.node, li.b.node} == {"a-r", "b-r"}]
    b_to_a = wan_link.spec_from("b-r")  # the file's a_to_b: b-r -> a-r
    assert b_to_a.delay_ms == 30 and b_to_a.loss_pct == 0.5
    assert wan_link.spec_from("a-r").delay_ms == 10 and wan_link.spec_from("a-r").loss_pct == 0.5


@pytest.mark.parametrize(("text", "where", "words"), [
    ('builder = "wann"\n', ":1", ["builder", "unknown topology 'wann'", "wan"]),
    ('builder = "wan"\n[params]\nsites = 2\nrtt = 3\n', ":4", ["params.rtt", "rtt_ms"]),
    ('builder = "wan"\n[params]\nsites = 1\n', ":3", ["params.sites"]),
    ('builder = "pair"\n[params]\ndelay_ms = -1\n', ":3", ["params.delay_ms", ">= 0"]),
    ('builder = "pair"\n[[node]]\nname = "x"\n', ":2", ["cannot also write out"]),
    ('colour = "red"\n', ":1", ["colour", "unknown key"]),
    ('name = "x"\n', "", ["builder", "[[node]]"]),
    ('builder = "pair"\n[[impair]]\nlink = ["h1", "h3"]\n', ":3",
     ["impair[0].link", "no link between 'h1' and 'h3'"]),
    ('builder = "pair"\n[[impair]]\nlink = ["h1", "h2"]\nloss_pct = 120\n', ":4",
     ["impair[0].loss_pct", "0..100"]),
    ('builder = "pair"\n[[impair]]\nlink = ["h1", "h2"]\ndelay_ms = "5ms"\n', ":4",
     ["impair[0].delay_ms", "must be a number"]),
])
def test_errors_name_file_line_and_key(tmp_path, text, where, words):
    path = _write(tmp_path, text)
    with pytest.raises(TopologyError) as exc:
        load(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}{where}:"), msg
    for w in words:
        assert w in msg, msg


@pytest.mark.parametrize(("old", "new", "line", "words"), [
    ('a = "r1"', 'a = "r9"', 17, ["link[1].a", "'r9' is not a [[node]]"]),
    ('a_addr = "10.1.1.1/24"', 'a_addr = "10.1.1.1"', 12, ["link[0].a_addr", "prefix"]),
    ('a_addr = "10.1.1.1/24"', 'a_addr = "10.1.1.300/24"', 12, ["not an IP address"]),
    ('role = "router"', 'role = "firewall"', 6, ["node[1].role", "host, router, switch"]),
    ('name = "r1"', 'name = "a-very-long-name"', 5, ["node[1].name", "up to 9"]),
    ("bw_mbps = 100", "bw_mbps = 0", 14, ["link[0].bw_mbps", "> 0"]),
    ("b_to_a = { loss_pct = 1.5 }", "b_to_a = { lost = 1.5 }", 21, ["link[1].b_to_a.lost"]),
    ('via = "10.1.1.254"', 'via = "gateway"', 25, ["route[0].via", "address"]),
    ('dst = "default"', 'dst = "10.0.0.0/33"', 24, ["route[0].dst"]),
])
def test_written_out_errors(tmp_path, old, new, line, words):
    assert old in WRITTEN
    path = _write(tmp_path, WRITTEN.replace(old, new, 1))
    with pytest.raises(TopologyError) as exc:
        load(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}:{line}:"), msg
    for w in words:
        assert w in msg, msg


def test_unreadable_and_invalid_toml(tmp_path):
    with pytest.raises(TopologyError, match="cannot read"):
        load(tmp_path / "missing.toml")
    with pytest.raises(TopologyError, match="not valid TOML"):
        load(_write(tmp_path, "builder = \n"))
    with pytest.raises(TopologyError, match="parameters"):
        parse({"node": [{"name": "h1"}], "link": []}, "x.toml", "", {"rtt_ms": 1})

"""A spec's [topology] table (testbed/run/topochoice.py): which kinds take which
topologies, errors with file:line, and the network each kind then runs on."""

import pytest

from testbed.run.spec import SpecError, load
from testbed.run.topology import network_of

SMOKE_FILE = """\
name = "tri"
[[node]]
name = "h1"
[[node]]
name = "h2"
[[node]]
name = "r1"
role = "router"
[[link]]
a = "h1"
b = "r1"
a_addr = "10.1.1.1/24"
b_addr = "10.1.1.254/24"
bw_mbps = 80
[[link]]
a = "r1"
b = "h2"
a_addr = "10.1.2.254/24"
b_addr = "10.1.2.1/24"
[[route]]
node = "h1"
dst = "default"
via = "10.1.1.254"
[[route]]
node = "h2"
dst = "default"
via = "10.1.2.254"
"""


def _spec(tmp_path, text, name="s.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_smoke_over_a_named_topology_and_a_file(tmp_path):
    spec = load(_spec(tmp_path, 'kind = "smoke"\n[topology]\nname = "lan"\nhosts = 3\n'))
    net = network_of(spec)
    assert net.name == "lan" and {"h1", "h2", "h3", "s1"} == set(net.nodes)
    assert "bridge" in spec.needs and "netem" not in spec.needs
    (tmp_path / "topos").mkdir()
    (tmp_path / "topos" / "tri.toml").write_text(SMOKE_FILE)
    spec = load(_spec(tmp_path, 'kind = "smoke"\n[topology]\nfile = "topos/tri.toml"\n'))
    net = network_of(spec)
    assert net.name == "tri" and net.links[0].a_to_b.bw_mbps == 80
    assert spec.topology.file == str(tmp_path / "topos" / "tri.toml")  # relative to the spec


def test_long_distance_over_a_wan_of_three_sites(tmp_path):
    spec = load(_spec(tmp_path, 'kind = "long-distance"\nrtt_ms = [10, 40]\nbw_mbps = 50\n'
                                '[topology]\nname = "wan"\nsites = 3\nlayout = "chain"\n'
                                'hosts_per_leaf = 1\n'))
    net = network_of(spec, rtt_ms=40)
    assert {"a-r", "b-r", "c-r", "a-h1", "b-h1"} <= set(net.nodes)
    wan_links = [li for li in net.links if li.a_to_b.delay_ms]
    assert len(wan_links) == 2 and all(li.a_to_b.delay_ms == 20 for li in wan_links)
    assert all(li.a_to_b.bw_mbps == 50 for li in wan_links)


@pytest.mark.parametrize(("text", "line", "words"), [
    ('kind = "smoke"\n[topology]\nname = "wan"\nsites = 2\n', 2,
     ["topology", "no host 'h1'", "a-h1"]),
    ('kind = "smoke"\n[topology]\nname = "pair"\ndelay = 5\n', 4,
     ["topology.delay", "no parameter 'delay'", "delay_ms"]),
    ('kind = "smoke"\n[topology]\nname = "pear"\n', 3, ["topology.name", "unknown topology"]),
    ('kind = "smoke"\n[topology]\nname = "pair"\nloss_pct = 101\n', 4,
     ["topology.loss_pct"]),
    ('kind = "smoke"\n[topology]\nname = "pair"\nfile = "x.toml"\n', 2, ["not both"]),
    ('kind = "smoke"\n[link]\ndelay_ms = 1\n[topology]\nname = "pair"\n', 2,
     ["'link'", "give one"]),
    ('kind = "long-distance"\n[topology]\nname = "pair"\n', 3,
     ["topology.name", "'wan'"]),
    ('kind = "long-distance"\n[topology]\nname = "wan"\nrtt_ms = 5\n', 4,
     ["topology.rtt_ms", "the spec's own key"]),
    ('kind = "long-distance"\n[topology]\nname = "wan"\nspines = 1\n', 2,
     ["no host 'a-h1'", "a-h1-1"]),
    ('kind = "core-load"\n[topology]\nname = "spine_leaf"\n', 2,
     ["core-load builds its spine-leaf fabric", "smoke and long-distance"]),
    ('kind = "cloud-encrypted"\n[topology]\nname = "cloud"\n', 2, ["cloud-encrypted"]),
])
def test_topology_errors_name_the_line(tmp_path, text, line, words):
    path = _spec(tmp_path, text)
    with pytest.raises(SpecError) as exc:
        load(path)
    msg = str(exc.value)
    assert msg.startswith(f"{path}:{line}:"), msg
    for w in words:
        assert w in msg, msg


def test_errors_inside_a_topology_file_name_that_file(tmp_path):
    topo = tmp_path / "bad.toml"
    topo.write_text(SMOKE_FILE.replace('b = "r1"', 'b = "r2"', 1))
    with pytest.raises(SpecError) as exc:
        load(_spec(tmp_path, 'kind = "smoke"\n[topology]\nfile = "bad.toml"\n'))
    assert str(exc.value).startswith(f"{topo}:11: key 'link[0].b'"), exc.value
    wan_file = tmp_path / "w.toml"
    wan_file.write_text('builder = "wan"\n[params]\nsites = 2\nrtt_ms = 30\n')
    with pytest.raises(SpecError) as exc:
        load(_spec(tmp_path, 'kind = "long-distance"\n[topology]\nfile = "w.toml"\n'))
    assert str(exc.value).startswith(f"{wan_file}:4: key 'params.rtt_ms'"), exc.value
    with pytest.raises(SpecError) as exc:
        load(_spec(tmp_path, 'kind = "long-distance"\n[topology]\nfile = "bad.toml"\n'))
    assert "writes its network out" in str(exc.value) and ":3:" in str(exc.value)
    with pytest.raises(SpecError, match="missing.toml: cannot read"):
        load(_spec(tmp_path, 'kind = "smoke"\n[topology]\nfile = "missing.toml"\n'))


def test_sweeping_a_topology_parameter_checks_every_point(tmp_path):
    path = _spec(tmp_path, 'kind = "smoke"\n[topology]\nname = "lan"\n'
                           '[sweep]\n"topology.hosts" = [2, 300]\n')
    with pytest.raises(SpecError, match="hosts"):
        load(path)

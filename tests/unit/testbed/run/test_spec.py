import pytest

from testbed.run import spec


def test_default_suite_is_valid():
    suite = spec.default_suite()
    assert suite and {s.kind for s in suite} >= {"core-load", "long-distance"}
    assert all("netns" in s.needs for s in suite)


def test_error_names_file_line_and_key(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('kind = "smoke"\n\n[link]\nbw_mbps = 5\ndelay_ms = -3\n')
    with pytest.raises(spec.SpecError) as err:
        spec.load(p)
    assert f"{p}:5" in str(err.value) and "link.delay_ms" in str(err.value)


def test_unknown_key_and_kind_and_toml_syntax(tmp_path):
    p = tmp_path / "x.toml"
    p.write_text('[link]\ndelay = 3\n')
    with pytest.raises(spec.SpecError, match=r"x.toml:2: key 'link.delay'"):
        spec.load(p)
    p.write_text('kind = "teleport"\n')
    with pytest.raises(spec.SpecError, match=r"x.toml:1: .*unknown experiment kind"):
        spec.load(p)
    p.write_text('[link\n')
    with pytest.raises(spec.SpecError, match="not valid TOML"):
        spec.load(p)
    with pytest.raises(spec.SpecError, match="cannot read"):
        spec.load(tmp_path / "missing.toml")


def test_rate_only_spec_does_not_need_netem():
    s = spec.parse({"link": {"delay_ms": 0, "bw_mbps": 10}})
    assert "netem" not in s.needs


def test_sweep_is_a_cartesian_product_and_every_point_is_validated():
    s = spec.parse({"kind": "long-distance", "name": "ld",
                    "sweep": {"bw_mbps": [50, 100], "migration.streams": [1, 2, 4]}})
    points = spec.variants(s)
    assert len(points) == 6
    assert {(p["bw_mbps"], p["migration.streams"]) for p, _ in points} == {
        (b, n) for b in (50, 100) for n in (1, 2, 4)}
    assert all(v.migration.streams == p["migration.streams"] for p, v in points)
    with pytest.raises(spec.SpecError, match="migration.streams"):
        spec.parse({"kind": "long-distance", "sweep": {"migration.streams": [1, 0]}})
    with pytest.raises(spec.SpecError, match="no values"):
        spec.parse({"kind": "long-distance", "sweep": {"bw_mbps": []}})


def test_kind_specific_validation():
    with pytest.raises(spec.SpecError, match="paths"):
        spec.parse({"kind": "core-load", "paths": ["teleport"]})
    cl = spec.parse({"kind": "core-load", "name": "c"})
    assert cl.concurrency == [1, 4, 8]


def test_hosts_tcp_congestion_is_pinned_and_checked(tmp_path):
    from testbed.run.topology import network_of

    p = tmp_path / "cc.toml"
    p.write_text('kind = "smoke"\n')
    net = network_of(spec.load(p))
    assert net.host_tcp.congestion == "cubic"  # never the machine's own default
    p.write_text('kind = "smoke"\ntcp_congestion = "bbr"\n')
    net = network_of(spec.load(p))
    assert ("net.ipv4.tcp_congestion_control", "bbr") in net.host_tcp.sysctls()
    assert net.describe()["host_tcp"]["congestion"] == "bbr"
    p.write_text('kind = "smoke"\n\ntcp_congestion = "vegas"\n')
    with pytest.raises(spec.SpecError, match=r"cc.toml:3: key 'tcp_congestion'"):
        spec.load(p)

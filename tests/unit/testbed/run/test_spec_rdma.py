"""The rdma kind's spec: defaults, placement needs, and bad input named by file and line."""

import tomllib
from pathlib import Path

import pytest

from testbed.run import spec as spec_mod
from testbed.run.topology import network_of

ROOT = Path(__file__).resolve().parents[4]


def parse(text: str):
    return spec_mod.parse(tomllib.loads(text), "r.toml", text)


def test_defaults_cover_the_issue_grid_and_need_rxe_and_netem():
    s = parse('kind = "rdma"\n')
    assert s.rtt_ms == [0, 10, 50] and s.loss_pct == [0, 0.1, 1]
    assert s.transports == ["tcp", "rdma"] and s.migration.hypervisor == "agents"
    assert {"rdma_rxe", "netem", "tbf"} <= set(s.needs)
    clean = parse('kind = "rdma"\nrtt_ms = [0]\nloss_pct = [0]\n')
    assert "rdma_rxe" in clean.needs and "netem" not in clean.needs
    assert "rdma_rxe" not in parse('kind = "rdma"\ntransports = ["tcp"]\n').needs


def test_the_example_spec_is_valid_and_not_in_the_default_suite():
    s = spec_mod.load(ROOT / "experiments" / "rdma.toml")
    assert s.kind == "rdma" and s.migration.workload_mib > 0
    assert all(p.name != "rdma.toml" for p in spec_mod.default_suite_files())


def test_each_point_is_a_pair_with_half_the_rtt_each_way_and_the_loss():
    s = parse('kind = "rdma"\nbw_mbps = 80\n')
    net = network_of(s, rtt_ms=10, loss_pct=0.1)
    (link,) = net.links
    for d in (link.a_to_b, link.b_to_a):
        assert (d.delay_ms, d.loss_pct, d.bw_mbps, d.queue_pkts) == (5, 0.1, 80, 1000)
    assert {link.a.node, link.b.node} == {"h1", "h2"}


@pytest.mark.parametrize(("text", "line", "key", "why"), [
    ('kind = "rdma"\n[migration]\nworkload_mib = 8\ncompress = true\n', 4,
     "migration.compress", "RDMA WRITE"),
    ('kind = "rdma"\n[migration]\nhypervisor = ["agents", "qemu"]\n', 3,
     "migration.hypervisor", "only the agents"),
    ('kind = "rdma"\n\n[migration]\nguest_network = "vxlan"\n', 4,
     "migration.guest_network", "without a network identity"),
    ('kind = "rdma"\n[migration]\nbandwidth_cap_mbps = 50\n', 3,
     "migration.bandwidth_cap_mbps", "paces the TCP streams"),
    ('kind = "rdma"\ntransports = ["tcp", "udp"]\n', 2, "transports.1", "'rdma'"),
    ('kind = "rdma"\ntransports = ["rdma", "rdma"]\n', 2, "transports", "twice"),
    ('kind = "rdma"\nname = "r"\nloss_pct = [0, 150]\n', 3, "loss_pct", "outside"),
    ('kind = "rdma"\nrtt_ms = [10, 10]\n', 2, "rtt_ms", "twice"),
    ('kind = "rdma"\nrtt_ms = []\n', 2, "rtt_ms", "at least 1"),
    ('kind = "rdma"\nbw_mbps = 0\n', 2, "bw_mbps", "greater than 0"),
    ('kind = "rdma"\nqueue_pkts = 0\n', 2, "queue_pkts", "greater than or equal to 1"),
    ('kind = "rdma"\niperf_seconds = 3\n', 2, "iperf_seconds", "Extra inputs"),
    ('kind = "rdma"\n[migration]\nworkload_mib = 8\n[migration.qemu]\nram_mib = 256\n', 4,
     "migration.qemu", "qemu"),
])
def test_bad_input_is_named_with_file_line_and_key(text, line, key, why):
    with pytest.raises(spec_mod.SpecError) as err:
        parse(text)
    msg = str(err.value)
    assert f"r.toml:{line}: key '{key}'" in msg and why in msg, msg


def test_a_topology_table_is_refused_with_its_line():
    with pytest.raises(spec_mod.SpecError, match=r"r.toml:3: key 'topology'.*own keys"):
        parse('kind = "rdma"\n\n[topology]\nname = "pair"\n')


def test_a_sweep_point_that_cannot_apply_is_refused():
    with pytest.raises(spec_mod.SpecError, match="migration.compress"):
        parse('kind = "rdma"\n[sweep]\n"migration.compress" = [false, true]\n')

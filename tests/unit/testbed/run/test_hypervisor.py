"""The hypervisor choice in specs: validation with file:line, the mapping to QEMU."""

import pytest

from testbed.run import qemu_jobs, spec
from testbed.run.kinds import core_load


def _load(tmp_path, text: str):
    p = tmp_path / "s.toml"
    p.write_text(text)
    return p, spec.load(p)


def _error(tmp_path, text: str) -> str:
    p = tmp_path / "s.toml"
    p.write_text(text)
    with pytest.raises(spec.SpecError) as err:
        spec.load(p)
    return str(err.value).replace(str(p), "s.toml")


def test_default_is_agents_and_list_form_runs_both(tmp_path):
    assert spec.parse({"kind": "long-distance"}).migration.hypervisors == ["agents"]
    _, s = _load(tmp_path, 'kind = "cloud-encrypted"\n[migration]\n'
                           'hypervisor = ["agents", "qemu"]\n')
    assert s.migration.hypervisors == ["agents", "qemu"]
    assert spec.parse({"kind": "core-load", "migration": {"hypervisor": "qemu"}}
                      ).migration.hypervisors == ["qemu"]


def test_bad_choices_name_file_line_and_key(tmp_path):
    msg = _error(tmp_path, 'kind = "long-distance"\n[migration]\nhypervisor = "kvm"\n')
    assert msg.startswith("s.toml:3: key 'migration.hypervisor'") and "unknown hypervisor" in msg
    assert "names no hypervisor" in _error(
        tmp_path, 'kind = "long-distance"\n[migration]\nhypervisor = []\n')
    assert "twice" in _error(
        tmp_path, 'kind = "long-distance"\n[migration]\nhypervisor = ["qemu", "qemu"]\n')


def test_agent_only_setting_refused_for_qemu_with_the_way_out(tmp_path):
    msg = _error(tmp_path, 'kind = "core-load"\n[migration]\nhypervisor = ["agents", "qemu"]\n'
                           'workload_mib = 8\nguest_network = "hostroute"\n')
    assert msg.startswith("s.toml:5: key 'migration.guest_network'")
    assert "no network device" in msg and "[migration.agents]" in msg
    _, s = _load(tmp_path, 'kind = "core-load"\n[migration]\nhypervisor = ["agents", "qemu"]\n'
                           '[migration.agents]\nguest_network = "hostroute"\n'
                           'client_probe_ms = 3\n')
    agents = s.migration.for_agents()
    assert (agents.guest_network, agents.client_probe_ms) == ("hostroute", 3)
    assert s.migration.guest_network == "none"  # what QEMU gets
    msg = _error(tmp_path, 'kind = "long-distance"\n[migration]\nhypervisor = "qemu"\n'
                           'downtime_ms = 250.5\n')
    assert msg.startswith("s.toml:4:") and "whole milliseconds" in msg


def test_a_table_for_a_hypervisor_that_does_not_run_is_refused(tmp_path):
    msg = _error(tmp_path, 'kind = "long-distance"\n[migration]\nworkload_mib = 8\n\n'
                           '[migration.qemu]\nvcpus = 2\n')
    assert msg.startswith("s.toml:5: key 'migration.qemu'") and "does not run QEMU" in msg
    msg = _error(tmp_path, 'kind = "long-distance"\n[migration]\nhypervisor = "qemu"\n'
                           '[migration.agents]\nguest_network = "vxlan"\n')
    assert msg.startswith("s.toml:4: key 'migration.agents'")
    msg = _error(tmp_path, 'kind = "long-distance"\n[migration]\nhypervisor = "qemu"\n'
                           'workload_mib = 200\n[migration.qemu]\nram_mib = 192\n')
    assert "cannot hold workload_mib 200" in msg
    assert "postcopy_preempt needs postcopy" in _error(
        tmp_path, 'kind = "long-distance"\n[migration]\nhypervisor = "qemu"\n'
                  '[migration.qemu]\npostcopy_preempt = true\n')


def test_compare_keys_need_two_hypervisors_and_known_points(tmp_path):
    msg = _error(tmp_path, 'kind = "long-distance"\nrtt_ms = [1, 50]\n'
                           'compare_hypervisors_at = [50]\n')
    assert msg.startswith("s.toml:3: key 'compare_hypervisors_at'") and "names one" in msg
    msg = _error(tmp_path, 'kind = "long-distance"\nrtt_ms = [1, 50]\n'
                           'compare_hypervisors_at = [10]\n'
                           '[migration]\nhypervisor = ["agents", "qemu"]\n')
    assert "[10.0] not among rtt_ms" in msg
    msg = _error(tmp_path, 'kind = "core-load"\npaths = ["capped"]\n'
                           'compare_hypervisors_on = ["own-stack"]\n'
                           '[migration]\nhypervisor = ["agents", "qemu"]\n')
    assert msg.startswith("s.toml:3:") and "not among paths" in msg


def test_every_sweep_point_is_checked_for_qemu():
    with pytest.raises(spec.SpecError, match="guest_network.*no network device"):
        spec.parse({"kind": "long-distance", "migration": {"guest_network": "vxlan"},
                    "sweep": {"migration.hypervisor": ["agents", "qemu"]}})
    s = spec.parse({"kind": "long-distance", "sweep": {"migration.hypervisor":
                                                       ["agents", "qemu"]}})
    assert [v.migration.hypervisors for _, v in spec.variants(s)] == [["agents"], ["qemu"]]


def test_mapping_to_qemu():
    m = spec.MigrationParams(hypervisor="qemu", workload_mib=128, dirty_rate_mbs=8,
                             streams=4, compress=True, downtime_ms=250,
                             bandwidth_cap_mbps=100, max_rounds=12)
    g, o = qemu_jobs.guest_of(m, markers=5), qemu_jobs.options_of(m, tls=True)
    assert (g.ram_mib, g.dirty_mib, g.dirty_rate_mbs, g.hot_mib, g.markers) == \
        (224, 128, 8, 12, 5)
    assert "tb.markers=5" in g.kernel_args()
    assert (o.multifd_channels, o.compression, o.downtime_limit_ms, o.max_bandwidth_mbps,
            o.max_iterations, o.tls, o.auto_converge) == (4, "zstd", 250, 100, 12, True, True)
    one = qemu_jobs.options_of(spec.MigrationParams(hypervisor="qemu", compress=True))
    assert (one.multifd_channels, one.compression) == (1, "zstd")  # QEMU compresses multifd
    plain = qemu_jobs.options_of(spec.MigrationParams(hypervisor="qemu"))
    assert (plain.multifd_channels, plain.compression, plain.tls) == (0, "none", False)
    big = qemu_jobs.guest_of(spec.MigrationParams(
        hypervisor="qemu", workload_mib=300, qemu={"ram_mib": 512, "hot_mib": 7, "vcpus": 2}))
    assert (big.ram_mib, big.hot_mib, big.vcpus) == (512, 7, 2)
    assert set(qemu_jobs.mapping()) >= {"workload_mib", "streams", "max_rounds",
                                        "guest_network"}


def test_where_each_hypervisor_runs():
    assert qemu_jobs.runs_here(["agents", "qemu"], "agents", 10, [50])
    assert not qemu_jobs.runs_here(["agents", "qemu"], "qemu", 10, [50])
    assert qemu_jobs.runs_here(["agents", "qemu"], "qemu", 50, [50])
    assert qemu_jobs.runs_here(["qemu"], "qemu", 10, [50])  # the first runs everywhere
    assert not qemu_jobs.runs_here(["qemu"], "agents", 10, None)
    cl = spec.parse({"kind": "core-load", "concurrency": [1, 4], "compare_hypervisors_at": [2],
                     "compare_hypervisors_on": ["own-stack"],
                     "migration": {"hypervisor": ["agents", "qemu"]}})
    assert core_load.bursts(cl, "own-stack", [1, 4]) == [("agents", 1), ("qemu", 2),
                                                         ("agents", 4)]
    assert core_load.bursts(cl, "capped", [1, 4]) == [("agents", 1), ("agents", 4)]
    q = spec.parse({"kind": "core-load", "concurrency": [1, 2],
                    "migration": {"hypervisor": ["qemu", "agents"]}})
    assert core_load.bursts(q, "own-stack", [1, 2]) == [("qemu", 1), ("agents", 1),
                                                        ("qemu", 2), ("agents", 2)]

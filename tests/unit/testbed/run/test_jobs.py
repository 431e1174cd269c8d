"""Every [migration] key reaches the agents, the same way in every kind."""

import tomllib

import pytest

from testbed.run import spec as spec_mod
from testbed.run.jobs import NOT_AGENT_OPTIONS, job_from
from testbed.run.spec import MigrationParams

CHANGED = {"workload_mib": 77, "dirty_rate_mbs": 3.5, "streams": 3, "compress": True,
           "downtime_ms": 123.0, "max_rounds": 7, "bandwidth_cap_mbps": 55.0,
           "timeout_s": 99.0, "client_probe_ms": 2.5}


def test_every_agent_key_of_the_migration_table_changes_the_job():
    assert set(CHANGED) | set(NOT_AGENT_OPTIONS) == set(MigrationParams.model_fields)
    base = job_from(MigrationParams(), "a", "b", "10.0.0.2", port=7800)
    for key, val in CHANGED.items():
        job = job_from(MigrationParams(**{key: val}), "a", "b", "10.0.0.2", port=7800)
        assert job != base, key
        assert job.source_command() != base.source_command() or key == "client_probe_ms", key


@pytest.mark.parametrize("kind", sorted(spec_mod.KINDS))
def test_every_kind_builds_its_jobs_through_the_one_mapping(kind):
    from pathlib import Path

    if kind == "smoke":  # no migrations
        return
    module = Path(spec_mod.__file__).parent / "kinds" / f"{kind.replace('-', '_')}.py"
    text = module.read_text()
    assert "job_from(" in text and "MigrationJob(" not in text


def test_cloud_refuses_a_guest_network_it_does_not_model():
    text = 'name = "c"\nkind = "cloud-encrypted"\n[migration]\nguest_network = "vxlan"\n'
    with pytest.raises(spec_mod.SpecError, match="c.toml:4.*guest_network.*none"):
        spec_mod.parse(tomllib.loads(text), "c.toml", text)


def test_the_agents_own_table_overrides_reach_the_job():
    m = MigrationParams(hypervisor=["agents", "qemu"], client_probe_ms=2.0,
                        agents={"client_probe_ms": 0.5})
    assert job_from(m.for_agents(), "a", "b", "10.0.0.2", port=1).client_probe_ms == 0.5

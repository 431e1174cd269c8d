"""What a user's own integration test looks like with the testbed's pytest fixtures."""

import pytest

pytestmark = pytest.mark.integration


def test_migration_across_the_fabric_keeps_integrity(testbed_lab, testbed_migrate):
    lab = testbed_lab("spine_leaf", spines=2, leaves=2, hosts_per_leaf=1,
                      fabric_link_mbps=200)
    result = testbed_migrate(lab, "h1-1", "h2-1", workload_mib=16, dirty_rate_mbs=2)
    assert result["completed"] and result["integrity_ok"]
    assert result["goodput_mbps"] <= 200 * 1.1

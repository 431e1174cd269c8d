"""Virtual switches: hosts on a Linux bridge (any kernel) and on Open vSwitch (started on
demand, needs the openvswitch datapath); a killed run's switch is removed by `testbed clean`."""

import json
import subprocess

import pytest

from testbed.host import clean, state
from testbed.lab import Lab
from topologies.lan import lan

pytestmark = pytest.mark.integration


def _links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout
    return {li["ifname"] for li in json.loads(out)}


def _pingall(lab: Lab, hosts: int) -> None:
    for i in range(1, hosts + 1):
        for j in range(1, hosts + 1):
            if i != j:
                res = lab.run(f"h{i}", ["ping", "-c", "1", "-W", "3", f"10.0.0.{j}"],
                              check=False)
                assert res.returncode == 0, f"h{i} -> h{j}: {res.stdout}"


def test_hosts_on_a_linux_bridge():
    before = _links()
    with Lab(lan(hosts=3, switch="bridge")) as lab:
        assert "s1" in _links()
        _pingall(lab, 3)
    assert _links() == before


@pytest.mark.needs("openvswitch")
def test_hosts_on_open_vswitch_started_on_demand():
    before = _links()
    with Lab(lan(hosts=3, switch="ovs")) as lab:
        bridges = subprocess.run(["ovs-vsctl", "list-br"], capture_output=True,
                                 text=True).stdout.split()
        assert "s1" in bridges
        _pingall(lab, 3)
    assert "s1" not in subprocess.run(["ovs-vsctl", "list-br"], capture_output=True,
                                      text=True).stdout.split()
    assert _links() == before


def test_clean_removes_a_dead_runs_bridge_and_ports():
    before = _links()
    lab = Lab(lan(hosts=2, switch="bridge"))
    lab.start()
    # simulate the owner's death: the registry says a dead PID owned this lab
    lab.state.owner_pid = 2**22 + 1
    lab.state.save()
    lab._net = None  # forget it without tearing down, as kill -9 would
    report = clean.clean()
    assert "s1" in report.links  # its ports went with the killed nodes' namespaces
    assert report.processes, "the node shells should have been killed"
    assert _links() == before
    assert not any(p.name == f"{lab.run_id}.json" for p in state.STATE_DIR.glob("*.json"))

"""`testbed doctor --json` is right on the kernel it runs on."""

import json
import os
import subprocess
import sys

import pytest

from testbed.host import doctor

pytestmark = pytest.mark.integration


def _doctor() -> dict:
    out = subprocess.run([sys.executable, "-m", "testbed", "doctor", "--json"],
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def test_verdict_matches_probed_features_here():
    rep = _doctor()
    for key in ("netem", "vrf", "openvswitch", "veth", "netns"):
        assert isinstance(rep["features"][key], bool)
    gaps = doctor.missing(rep["features"], doctor.SUITE_FEATURES)
    if os.environ.get(doctor.IN_VM_ENV) == "1" or not gaps:
        assert rep["verdict"] == "native", rep["reasons"]
    else:
        want = "appliance" if set(gaps) <= {"netem"} else "vm"
        assert rep["verdict"] == want, rep["reasons"]
        assert rep["placement"]["where"] == want and rep["placement"]["missing"] == gaps
        assert rep["vm"]["kernel"].startswith("/boot/vmlinuz-")
        assert rep["vm"]["accelerator"] in ("kvm", "tcg")
    assert "hash" in rep["dirty_tracking"]


def test_probe_leaves_nothing_behind():
    before = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    _doctor()
    after = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert "tbprobe-" not in after and after == before


@pytest.mark.needs("netem", "vrf", "openvswitch")
def test_full_kernel_vm_is_native():
    rep = _doctor()
    assert rep["verdict"] == "native", rep["reasons"]
    assert rep["features"]["netem"] and rep["features"]["vrf"] and rep["features"]["openvswitch"]
    assert rep["routing_isolation"] == "vrf"

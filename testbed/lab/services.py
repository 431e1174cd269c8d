"""Services a lab may need, started on demand: Open vSwitch (only when a topology uses it)."""

from __future__ import annotations

import shutil
import subprocess

OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"


class ServiceError(RuntimeError):
    """A service the topology needs cannot be started; the message says why and the fix."""


def ovs_running() -> bool:
    if not shutil.which("ovs-vsctl"):
        return False
    probe = subprocess.run(["ovs-vsctl", "--timeout=3", "show"], capture_output=True)
    return probe.returncode == 0


def ensure_ovs() -> None:
    """Start ovsdb-server and ovs-vswitchd unless they already run."""
    if ovs_running():
        return
    from ..host.doctor import ovs_datapath

    if not shutil.which("ovs-vsctl") or not shutil.which(OVS_CTL):
        raise ServiceError("the topology uses Open vSwitch but it is not installed: "
                           "apt-get install openvswitch-switch")
    if not ovs_datapath():
        raise ServiceError("the topology uses Open vSwitch but this kernel has no openvswitch "
                           "datapath: run with --vm auto (the full-kernel VM) or use "
                           "switch='bridge'")
    start = subprocess.run([OVS_CTL, "start", "--system-id=random"], capture_output=True,
                           text=True, timeout=120)
    if start.returncode != 0 or not ovs_running():
        raise ServiceError(f"ovs-ctl start failed ({start.returncode}): "
                           f"{(start.stderr or start.stdout).strip()[-500:]}")

"""What a lab may need from the machine, made ready on demand: Open vSwitch (only when a
topology uses it), the hosts' TCP congestion control."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

OVS_CTL = "/usr/share/openvswitch/scripts/ovs-ctl"
AVAILABLE_CC = Path("/proc/sys/net/ipv4/tcp_available_congestion_control")
ALLOWED_CC = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control")


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


def ensure_congestion_control(name: str) -> None:
    """Make TCP congestion control ``name`` usable as the default of the lab's namespaces:
    loaded (its module ``tcp_<name>``, where it is one) and on the machine's allowed list,
    which a namespace other than the initial one must choose from (the kernel refuses it
    otherwise: EPERM). The list is only extended, never shortened: the machine's own
    default stays as it was."""
    def listed(path: Path) -> list[str]:
        try:
            return path.read_text().split()
        except OSError:
            return []

    if name not in listed(AVAILABLE_CC) and shutil.which("modprobe"):
        subprocess.run(["modprobe", "-q", f"tcp_{name}"], capture_output=True)
    if name not in listed(AVAILABLE_CC):
        raise ServiceError(f"TCP congestion control {name!r} is not available in kernel "
                           f"(it has: {', '.join(listed(AVAILABLE_CC)) or 'none listed'}); "
                           "choose one of those for the hosts (a spec's tcp_congestion)")
    allowed = listed(ALLOWED_CC)
    if name not in allowed:
        try:
            ALLOWED_CC.write_text(" ".join([*allowed, name]))
        except OSError as exc:
            raise ServiceError(f"cannot allow TCP congestion control {name!r} in network "
                               f"namespaces ({ALLOWED_CC}: {exc})") from None

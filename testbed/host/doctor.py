"""What this kernel and machine can do, probed for real, and the verdict.

Every kernel feature is tried in a scratch network namespace (devices created, qdiscs added)
and everything is removed afterwards. The verdict is where the default suite would run
(``testbed.host.placement``): ``native`` (here), ``appliance`` (here, with the netem links through
the impairment appliance), ``vm`` (inside a full Debian kernel with virtme-ng) or
``cannot-run`` (with the fix for each missing piece).
``doctor`` always reports on the kernel it runs on; it never re-executes itself in the VM.
"""

from __future__ import annotations

import ctypes.util
import glob
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path

from agents.memory import dirty

from . import rxe

#: Kernel features the testbed can use (VRF and the OVS datapath have stand-ins: policy
#: routing and Linux bridges).
NETWORK_FEATURES = ("netns", "veth", "bridge", "htb", "tbf", "netem", "vrf", "openvswitch",
                    "ecmp")
#: What the default suite needs; the verdict is where it would run (``testbed.host.placement``).
SUITE_FEATURES = ("netns", "veth", "bridge", "htb", "tbf", "netem", "ecmp", "vxlan")
#: Kernel config options a guest kernel must have (as module or built in) for the VM.
GUEST_KERNEL_CONFIG = {
    "netem": "CONFIG_NET_SCH_NETEM",
    "vrf": "CONFIG_NET_VRF",
    "openvswitch": "CONFIG_OPENVSWITCH",
    "htb": "CONFIG_NET_SCH_HTB",
    "tbf": "CONFIG_NET_SCH_TBF",
    "soft_dirty": "CONFIG_MEM_SOFT_DIRTY",
}
FIXES = {
    "netem": "kernel without sch_netem: use a full kernel (the VM) or install linux-modules-extra",
    "vrf": "kernel without VRF (CONFIG_NET_VRF): policy routing is used instead, or use the VM",
    "openvswitch": "kernel without the openvswitch datapath: use the VM, or Linux bridges only",
    "fq": "kernel without sch_fq: pacing falls back to TCP's internal pacing",
    "soft_dirty": "no soft-dirty tracking: dirty pages found by hashing (or PAGEMAP_SCAN)",
    "uffd_wp_scan": "no userfaultfd async write-protect + PAGEMAP_SCAN (needs Linux >= 6.7)",
    "rdma_rxe": "no Soft-RoCE (rdma_rxe module; the host kernel has no RDMA at all): RDMA "
                "specs and tests run in the full-kernel VM",
    "pyverbs": "apt-get install python3-pyverbs rdma-core ibverbs-providers",
    "ib_write_bw": "apt-get install perftest",
    "mnexec": "apt-get install mininet",
    "ovs": "apt-get install openvswitch-switch",
    "iperf3": "apt-get install iperf3 libiperf0",
    "fping": "apt-get install fping (core-load's management-plane probe)",
    "qemu": "apt-get install qemu-system-x86",
    "vng": "pip install virtme-ng (scripts/setup.sh does it)",
    "busybox_static": "apt-get install busybox-static",
    "full_kernel": "apt-get install linux-image-amd64 (a kernel with netem, VRF, openvswitch)",
}
IN_VM_ENV = "TESTBED_IN_VM"
KVM_CACHE = Path("/var/cache/testbed/kvm-boot.json")


@dataclass
class Report:
    kernel: str
    in_vm: bool
    features: dict[str, bool]
    tools: dict[str, str | None]
    verdict: str
    reasons: list[str] = field(default_factory=list)
    vm: dict[str, object] | None = None
    routing_isolation: str = "policy-routing"
    dirty_tracking: list[str] = field(default_factory=list)
    probe_s: float = 0.0
    placement: dict[str, object] | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2)


def _ip(*args: str) -> bool:
    return subprocess.run(["ip", *args], capture_output=True).returncode == 0


def _tc(ns: str, *args: str) -> bool:
    return subprocess.run(["tc", "-n", ns, *args], capture_output=True).returncode == 0


def probe_network() -> dict[str, bool]:
    """Try each device kind and qdisc in a scratch namespace; remove it afterwards."""
    ns = f"tbprobe-{uuid.uuid4().hex[:8]}"
    feats: dict[str, bool] = dict.fromkeys(
        ("netns", "veth", "bridge", "htb", "tbf", "netem", "fq", "fq_codel", "vrf", "ecmp",
         "vxlan", "rdma_rxe"), False)
    if os.geteuid() != 0 or not shutil.which("ip"):
        return feats | {"openvswitch": False}
    feats["netns"] = _ip("netns", "add", ns)
    if not feats["netns"]:
        return feats | {"openvswitch": ovs_datapath()}
    try:
        n = ["-n", ns]
        feats["veth"] = _ip(*n, "link", "add", "p0", "type", "veth", "peer", "name", "p1") and \
            _ip(*n, "link", "add", "q0", "type", "veth", "peer", "name", "q1")
        for dev in ("p0", "p1", "q0", "q1"):
            _ip(*n, "link", "set", dev, "up")
        feats["bridge"] = _ip(*n, "link", "add", "br0", "type", "bridge")
        feats["vrf"] = _ip(*n, "link", "add", "vrf0", "type", "vrf", "table", "10")
        feats["vxlan"] = _ip(*n, "link", "add", "vx0", "type", "vxlan", "id", "42",
                             "dstport", "4789", "local", "127.0.0.1")
        for kind, args in (("htb", ["default", "1"]), ("tbf", ["rate", "1gbit", "burst",
                                                               "125000", "limit", "1000000"]),
                           ("netem", ["delay", "1ms"]), ("fq", []), ("fq_codel", [])):
            feats[kind] = feats["veth"] and _tc(ns, "qdisc", "add", "dev", "p0", "root", kind,
                                                *args)
            _tc(ns, "qdisc", "del", "dev", "p0", "root")
        if feats["veth"]:
            _ip(*n, "addr", "add", "192.0.2.1/30", "dev", "p0")
            _ip(*n, "addr", "add", "192.0.2.5/30", "dev", "q0")
            feats["ecmp"] = _ip(*n, "route", "add", "198.51.100.0/24",
                                "nexthop", "via", "192.0.2.2", "nexthop", "via", "192.0.2.6")
        feats["rdma_rxe"] = feats["veth"] and rxe.probe(ns, "p0")  # Soft-RoCE (testbed.host.rxe)
    finally:
        _ip("netns", "del", ns)
    feats["openvswitch"] = ovs_datapath()
    return feats


def ovs_datapath() -> bool:
    """The openvswitch datapath is usable when its generic-netlink family exists."""
    if shutil.which("modprobe"):
        subprocess.run(["modprobe", "-q", "openvswitch"], capture_output=True)
    try:
        from pyroute2.netlink.generic import GenericNetlinkSocket

        sock = GenericNetlinkSocket()
        try:
            sock.bind("ovs_datapath", None)
            return True
        finally:
            sock.close()
    except Exception:
        return False


def probe_tools() -> dict[str, str | None]:
    """Paths of the tools the testbed uses (None when missing)."""
    venv_bin = Path(sys.executable).parent
    busybox = next((p for p in ("/usr/bin/busybox", "/bin/busybox") if os.path.exists(p)), None)
    static = busybox if busybox and _is_static(busybox) else None
    return {
        "mnexec": shutil.which("mnexec"),
        "ovs": shutil.which("ovs-vsctl"),
        "ovs_ctl": _first(["/usr/share/openvswitch/scripts/ovs-ctl"]),
        "iperf3": shutil.which("iperf3"),
        "libiperf": ctypes.util.find_library("iperf"),
        "fping": shutil.which("fping"),
        "qemu": shutil.which("qemu-system-x86_64"),
        "vng": shutil.which("vng") or _first([str(venv_bin / "vng")]),
        "busybox_static": static,
        "full_kernel": str(k) if (k := find_full_kernel()) else None,
        "tshark_or_tcpdump": shutil.which("tcpdump") or shutil.which("tshark"),
        "stress_ng": shutil.which("stress-ng"),
        "rdma": shutil.which("rdma"),
        "ib_write_bw": shutil.which("ib_write_bw"),
        "pyverbs": _module_path("pyverbs"),
    }


def _module_path(name: str) -> str | None:
    """Where this interpreter would import ``name`` from (None: not importable)."""
    import importlib.util

    spec = importlib.util.find_spec(name)
    return spec.origin if spec else None


def _first(paths: list[str]) -> str | None:
    return next((p for p in paths if os.path.exists(p)), None)


def _is_static(path: str) -> bool:
    out = subprocess.run(["file", "-L", path], capture_output=True, text=True).stdout \
        if shutil.which("file") else ""
    if out:
        return "statically linked" in out or "static-pie" in out
    with open(path, "rb") as f:  # no `file`: a static binary has no PT_INTERP / .interp
        return b"/lib64/ld-linux" not in f.read(1 << 20)


def find_full_kernel() -> Path | None:
    """The newest /boot/vmlinuz-* whose config has netem, VRF and openvswitch, with modules."""
    best: tuple[tuple[int, ...], Path] | None = None
    for img in glob.glob("/boot/vmlinuz-*"):
        ver = img.removeprefix("/boot/vmlinuz-")
        cfg = Path(f"/boot/config-{ver}")
        if not cfg.exists() or not Path(f"/lib/modules/{ver}").is_dir():
            continue
        text = cfg.read_text(errors="replace")
        if all(re.search(rf"^{opt}=[ym]$", text, re.M) for opt in
               (GUEST_KERNEL_CONFIG[k] for k in ("netem", "vrf", "openvswitch"))):
            key = tuple(int(x) for x in re.findall(r"\d+", ver))
            if best is None or key > best[0]:
                best = (key, Path(img))
    return best[1] if best else None


def kvm_can_boot(kernel: Path | None, vng: str | None, timeout: float = 90.0) -> tuple[bool, str]:
    """Whether a guest really boots under KVM (cached: the probe boots one)."""
    if not os.path.exists("/dev/kvm"):
        return False, "no /dev/kvm"
    cpuinfo = Path("/proc/cpuinfo").read_text()
    if not re.search(r"^flags\s*:.*\b(vmx|svm)\b", cpuinfo, re.M):
        return False, "/dev/kvm exists but the CPU shows no vmx/svm flag: guests do not boot " \
                      "under KVM here (nested virtualisation missing); using TCG"
    if kernel is None or vng is None:
        return False, "no guest kernel or vng to try KVM with"
    key = f"{platform.release()} {kernel} {shutil.which('qemu-system-x86_64')}"
    try:
        cached = json.loads(KVM_CACHE.read_text())
        if cached.get("key") == key:
            return bool(cached["ok"]), str(cached["why"])
    except (OSError, ValueError, KeyError):
        pass
    try:
        proc = subprocess.run([vng, "--run", str(kernel), "--memory", "512M", "--exec",
                               "echo kvm-boot-ok"], capture_output=True, text=True,
                              timeout=timeout, stdin=subprocess.DEVNULL,
                              start_new_session=True)
        ok = "kvm-boot-ok" in proc.stdout
        why = "a KVM guest booted" if ok else "a KVM guest failed to boot"
    except subprocess.TimeoutExpired:
        ok, why = False, f"a KVM guest did not boot within {timeout:.0f} s"
    KVM_CACHE.parent.mkdir(parents=True, exist_ok=True)
    KVM_CACHE.write_text(json.dumps({"key": key, "ok": ok, "why": why}))
    return ok, why


def missing(features: dict[str, bool], needed: tuple[str, ...] = NETWORK_FEATURES) -> list[str]:
    return [f for f in needed if not features.get(f)]


def diagnose(check_kvm: bool = True) -> Report:
    """Probe everything and decide the verdict: where the default suite would run."""
    from .placement import PlacementError, decide

    t0 = time.monotonic()
    feats = probe_network()
    feats["soft_dirty"] = dirty.probe_soft_dirty()
    feats["uffd_wp_scan"] = dirty.probe_uffd_wp_scan()
    tools = probe_tools()
    in_vm = os.environ.get(IN_VM_ENV) == "1"
    gaps = missing(feats)
    reasons = [f"{f}: {FIXES.get(f, 'missing')}" for f in gaps]
    if not tools["mnexec"]:
        reasons.append(f"mnexec: {FIXES['mnexec']}")
    absent = [t for t in ("qemu", "vng", "busybox_static", "full_kernel") if not tools[t]]
    vm = None
    if not absent and not in_vm:
        kernel = Path(str(tools["full_kernel"]))
        kvm_ok, why = kvm_can_boot(kernel, tools["vng"]) if check_kvm else (False, "not probed")
        vm = {"kernel": str(kernel), "accelerator": "kvm" if kvm_ok else "tcg",
              "accelerator_reason": why}
    placement: dict[str, object] | None = None
    if not feats["netns"] or not feats["veth"]:
        verdict = "cannot-run"
        reasons.append("no network namespaces or veth (run as root on Linux)")
    else:
        try:
            # about the kernel it runs on, inside the VM too (no VM within the VM)
            chosen = decide(SUITE_FEATURES, feats, vm_available=not (absent or in_vm),
                            kernel=f"kernel {platform.release()}",
                            vm_reason="already inside the testbed's VM" if in_vm else
                            "; ".join(f"{t}: {FIXES[t]}" for t in absent))
            verdict, placement = chosen.where, chosen.describe()
        except PlacementError as exc:
            verdict = "cannot-run"
            reasons.append(str(exc))
    if not tools["mnexec"]:
        verdict = "cannot-run"
    tracking = [name for name, ok in (("pagemap-scan-uffd-wp", feats["uffd_wp_scan"]),
                                      ("soft-dirty", feats["soft_dirty"])) if ok] + ["hash"]
    return Report(
        kernel=platform.release(), in_vm=in_vm, features=feats, tools=tools, verdict=verdict,
        reasons=reasons, vm=vm, routing_isolation="vrf" if feats["vrf"] else "policy-routing",
        dirty_tracking=tracking, probe_s=round(time.monotonic() - t0, 3), placement=placement)

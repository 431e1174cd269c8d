"""Remove everything a testbed run may have left behind (like ``mn -c``, but only ours).

What counts as ours: what the run registry (``testbed.host.state``) recorded for runs whose owner
is gone; Mininet node shells (``mininet:<node>`` in their command line) and every process in
their network namespaces; named namespaces with the testbed's prefixes; root-namespace veth
links with Mininet's ``<node>-eth<N>`` names; OVS bridges recorded by a run; the per-run
directories under the registry's directory (QEMU's QMP sockets, consoles, TLS files) of runs
that are gone, and any QEMU whose command line names one of them. Idempotent.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from . import state

NETNS_PREFIXES = ("tb-", "tbprobe-")
MININET_LINK = re.compile(r"^[A-Za-z][\w.]*-eth\d+$")


@dataclass
class CleanReport:
    processes: list[str] = field(default_factory=list)
    namespaces: list[str] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    ovs_bridges: list[str] = field(default_factory=list)
    registry: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not (self.processes or self.namespaces or self.links or self.ovs_bridges
                    or self.registry or self.files)

    def lines(self) -> list[str]:
        if self.empty:
            return ["nothing to clean"]
        out = []
        for label, items in (("processes killed", self.processes),
                             ("namespaces removed", self.namespaces),
                             ("links removed", self.links),
                             ("OVS bridges removed", self.ovs_bridges),
                             ("run directories removed", self.files),
                             ("stale run records removed", self.registry)):
            if items:
                out.append(f"{label} ({len(items)}): {', '.join(items)}")
        return out


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
        return True
    except ProcessLookupError:
        return False
    except PermissionError:
        return True


def _all_pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def split_runs() -> tuple[list[state.RunState], list[state.RunState]]:
    """The recorded runs as (dead, live): a run is dead when its owner process is gone (or
    is this very process, which is cleaning up after itself)."""
    dead, live = [], []
    for st in state.load_all():
        owner_gone = not _alive(st.owner_pid) or st.owner_pid == os.getpid()
        (dead if owner_gone else live).append(st)
    return dead, live


def leftover_namespaces(dead: list[state.RunState],
                        live: list[state.RunState]) -> dict[int, str]:
    """Network namespace inodes of testbed nodes whose run is gone: inode -> label."""
    protected = {ino for st in live for ino in st.netns_inodes.values()}
    found: dict[int, str] = {}
    for st in dead:
        for node, ino in st.netns_inodes.items():
            if ino:
                found[ino] = f"{st.run_id}:{node}"
    for pid in _all_pids():
        cmd = _cmdline(pid)
        if "mininet:" in cmd and "mnexec" not in cmd.split(" ", 1)[0]:
            ino = state.netns_inode(pid)
            if ino and ino not in protected:
                found.setdefault(ino, cmd.rsplit("mininet:", 1)[-1])
    init_ns = state.netns_inode(os.getpid())
    found.pop(init_ns or -1, None)
    return found


def kill_namespaces(inodes: dict[int, str], report: CleanReport,
                    spare: set[int] | None = None) -> None:
    """SIGKILL every process whose network namespace is one of ``inodes`` (but ``spare``)."""
    keep = (spare or set()) | {os.getpid()}
    for _ in range(5):
        victims = [(pid, _cmdline(pid)) for pid in _all_pids()
                   if pid not in keep and state.netns_inode(pid) in inodes]
        if not victims:
            return
        for pid, cmd in victims:
            try:
                os.kill(pid, signal.SIGKILL)
                report.processes.append(f"{pid} ({cmd[:60] or '?'})")
            except ProcessLookupError:
                pass
        time.sleep(0.2)


def kill_recorded_processes(dead: list[state.RunState], report: CleanReport) -> None:
    for st in dead:
        for pid in st.processes:
            cmd = _cmdline(pid)
            if cmd and any(word in cmd for word in ("nsenter", "testbed", "agents", "iperf3",
                                                     "vng", "qemu-system")):
                try:
                    os.kill(pid, signal.SIGKILL)
                    report.processes.append(f"{pid} ({cmd[:60]})")
                except ProcessLookupError:
                    pass


def remove_run_directories(dead: list[state.RunState], live: list[state.RunState],
                           report: CleanReport) -> None:
    """Per-run directories (``<registry>/qemu/<run>/...``) of runs that are gone: first any
    QEMU still using one (its command line names the directory), then the directory."""
    root = state.STATE_DIR.resolve()
    spare = {st.run_id for st in live}
    dirs = {Path(p) for st in dead for p in st.paths}
    qemu_root = state.STATE_DIR / "qemu"
    if qemu_root.is_dir():  # also a run whose record is gone altogether
        dirs |= {d for d in qemu_root.iterdir() if d.name not in spare}
    dirs = {d for d in dirs if d.resolve().is_relative_to(root) and d.resolve() != root}
    for pid in _all_pids() if dirs else []:
        cmd = _cmdline(pid)
        if "qemu-system" in cmd and any(str(d) in cmd for d in dirs):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
                report.processes.append(f"{pid} ({cmd[:60]})")
    for d in sorted(dirs):
        if d.exists():
            shutil.rmtree(d, ignore_errors=True)
            report.files.append(str(d))
    if qemu_root.is_dir():
        for d in qemu_root.iterdir():  # a dead run's now empty parent
            if d.name not in spare and d.is_dir() and not any(d.iterdir()):
                d.rmdir()


def remove_named_namespaces(report: CleanReport, spare: set[str] | None = None,
                            only: set[str] | None = None) -> None:
    """Kill what runs in our named namespaces and delete them (but ``spare``: a live run's;
    with ``only``, just those). Listed and removed through pyroute2, the processes found by
    their namespace's inode."""
    from pyroute2 import netns

    for name in netns.listnetns():
        if only is not None and name not in only:
            continue
        if name.startswith(NETNS_PREFIXES) and name not in (spare or set()):
            try:
                inode = os.stat(f"{netns.NETNS_RUN_DIR}/{name}").st_ino
            except OSError:
                inode = None
            for pid in _all_pids() if inode is not None else []:
                try:
                    if os.stat(f"/proc/{pid}/ns/net").st_ino != inode:
                        continue
                    os.kill(pid, signal.SIGKILL)
                    report.processes.append(f"{pid} (in netns {name})")
                except (ProcessLookupError, FileNotFoundError, PermissionError):
                    pass
            with contextlib.suppress(OSError):
                netns.remove(name)
            report.namespaces.append(name)


def remove_root_links(dead: list[state.RunState], report: CleanReport) -> None:
    """Delete the root namespace's links a dead run made (recorded, or Mininet's veth names)."""
    from pyroute2 import IPRoute

    recorded = {name for st in dead for name in st.root_links}
    with IPRoute() as ipr:
        for link in ipr.get_links():
            name = link.get_attr("IFLA_IFNAME") or ""
            info = link.get_attr("IFLA_LINKINFO")
            kind = info.get_attr("IFLA_INFO_KIND") if info is not None else None
            if name in recorded or (MININET_LINK.match(name) and kind == "veth"):
                try:
                    ipr.link("del", index=link["index"])
                except Exception:  # gone meanwhile (its peer's deletion took it along)
                    continue
                report.links.append(name)


def remove_ovs_bridges(dead: list[state.RunState], report: CleanReport) -> None:
    if not shutil.which("ovs-vsctl"):
        return
    recorded = {br for st in dead for br in st.ovs_bridges}
    if not recorded:
        return
    probe = subprocess.run(["ovs-vsctl", "--timeout=3", "list-br"], capture_output=True,
                           text=True)
    for br in probe.stdout.split() if probe.returncode == 0 else []:
        if br in recorded:
            subprocess.run(["ovs-vsctl", "--timeout=3", "--if-exists", "del-br", br],
                           capture_output=True)
            report.ovs_bridges.append(br)


def clean() -> CleanReport:
    """Remove every leftover of dead runs; say what was removed."""
    report = CleanReport()
    dead, live = split_runs()
    kill_recorded_processes(dead, report)
    kill_namespaces(leftover_namespaces(dead, live), report)
    remove_named_namespaces(report, spare={n for st in live for n in st.named_netns})
    remove_run_directories(dead, live, report)
    remove_ovs_bridges(dead, report)
    remove_root_links(dead, report)
    from . import rxe  # Soft-RoCE paths whose owner is gone: rdma links, anchors, rules

    report.links.extend(rxe.clean())
    for st in dead:
        st.remove()
        report.registry.append(st.run_id)
    return report

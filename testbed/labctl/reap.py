"""Remove what one lab left when its supervisor died (kill -9): that lab's run records only.

The lab's own record and the impairment appliance's (both owned by the supervisor's PID)
are handed to the clean module's functions (``testbed.host.clean``) one run at a time, so
other labs and runs on the machine are never touched (unlike ``testbed clean``, which sweeps
every dead run and every Mininet-named leftover).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from ..host import clean, state
from .records import LabRecord, run_states


def dead_runs(rec: LabRecord) -> list[state.RunState]:
    """The run records of ``rec``'s lab whose owner (the supervisor) is gone."""
    if rec.alive():
        return []
    return [st for st in run_states() if st.run_id == rec.run_id or st.owner_pid == rec.pid]


def reap(rec: LabRecord) -> clean.CleanReport:
    """Kill, delete and unrecord everything of ``rec``'s dead lab; say what was removed."""
    report = clean.CleanReport()
    dead = dead_runs(rec)
    # the appliance's QEMU by its record; the lab's own processes all live in its namespaces
    clean.kill_recorded_processes([st for st in dead if st.run_id != rec.run_id], report)
    clean.kill_namespaces({ino: f"{st.run_id}:{node}" for st in dead
                           for node, ino in st.netns_inodes.items() if ino}, report)
    named = {n for st in dead for n in st.named_netns}
    if named:
        clean.remove_named_namespaces(report, only=named)
    clean.remove_ovs_bridges(dead, report)
    for st in dead:
        for name in st.root_links:  # recorded by name: never a Mininet-looking stranger
            if subprocess.run(["ip", "link", "del", name],
                              capture_output=True).returncode == 0:
                report.links.append(name)
        for path in st.paths:
            if state.STATE_DIR.resolve() in Path(path).resolve().parents:
                shutil.rmtree(path, ignore_errors=True)
                report.files.append(path)
        st.remove()
        report.registry.append(st.run_id)
    rec.remove()
    rec.log.unlink(missing_ok=True)
    return report

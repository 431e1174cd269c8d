"""`testbed clean`'s parts on things this test made alone (never another run's): a named
namespace with a process in it, and a dead run's root-namespace veth."""

import os
import subprocess
import time

import pytest

from testbed.host import clean, state

pytestmark = pytest.mark.integration


def test_a_named_namespace_and_its_process_are_removed():
    name = f"tb-cleantest-{os.getpid()}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    proc = subprocess.Popen(["ip", "netns", "exec", name, "sleep", "300"])
    try:
        time.sleep(0.3)
        report = clean.CleanReport()
        clean.remove_named_namespaces(report, only={name})
        assert name in report.namespaces
        assert proc.wait(timeout=10) != 0  # killed
        assert name not in subprocess.run(["ip", "netns", "list"], capture_output=True,
                                          text=True).stdout.split()
    finally:
        proc.kill()
        subprocess.run(["ip", "netns", "del", name], capture_output=True)


def test_a_dead_runs_recorded_root_link_is_removed():
    a, b = f"tbcl{os.getpid() % 10000}a", f"tbcl{os.getpid() % 10000}b"
    subprocess.run(["ip", "link", "add", a, "type", "veth", "peer", "name", b], check=True)
    try:
        dead = state.RunState(run_id="cleantest", owner_pid=0, root_links=[a])
        report = clean.CleanReport()
        clean.remove_root_links([dead], report)
        assert report.links == [a]
        links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
        assert f" {a}@" not in links and f" {b}@" not in links  # the peer went with it
    finally:
        subprocess.run(["ip", "link", "del", a], capture_output=True)

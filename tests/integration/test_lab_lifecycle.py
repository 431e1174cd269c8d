"""`testbed lab up / list / exec / inspect / migrate / down`, end to end, and a lab whose
supervisor is killed with SIGKILL, then removed from its own records only."""

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from testbed.labctl import records
from tests.helpers import alive

pytestmark = pytest.mark.integration


def tb(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "testbed", "--vm", "never", *args],
                          capture_output=True, text=True, timeout=timeout)


def _namespace_holders(inodes: set[int]) -> list[int]:
    """PIDs of every process whose network namespace is one of ``inodes``."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            if os.stat(f"/proc/{pid}/ns/net").st_ino in inodes and alive(int(pid)):
                found.append(int(pid))
        except OSError:
            pass
    return found


def _root_links() -> set[str]:
    out = subprocess.run(["ip", "-j", "link", "show"], capture_output=True, text=True).stdout
    return {li["ifname"] for li in json.loads(out or "[]")}


def _wait_gone(pids: list[int], timeout: float = 10) -> list[int]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and any(alive(p) for p in pids):
        time.sleep(0.1)
    return [p for p in pids if alive(p)]


@pytest.fixture
def lab_name():
    """A unique lab name; whatever the test leaves of it is taken down afterwards."""
    name = f"t-{uuid.uuid4().hex[:6]}"
    yield name
    if records.load(name) is not None:
        tb("lab", "down", "--name", name, timeout=180)


def test_lab_up_exec_inspect_migrate_down(lab_name):
    up = tb("lab", "up", "pair", "delay_ms=0", "bw_mbps=200", "--name", lab_name)
    assert up.returncode == 0, up.stderr
    rec = records.load(lab_name)
    assert rec is not None and rec.status == "up" and rec.alive()
    st = rec.run_state()
    assert st is not None and st.owner_pid == rec.pid and set(st.node_pids) == {"h1", "h2"}
    # the lab outlives the command that brought it up, and a second one of that name is refused
    again = tb("lab", "up", "pair", "--name", lab_name)
    assert again.returncode == 2 and lab_name in again.stderr
    listed = json.loads(tb("lab", "list", "--json").stdout)
    assert any(r["name"] == lab_name and r["status"] == "up" for r in listed)

    ping = tb("lab", "exec", "-n", lab_name, "h1", "--", "ping", "-c", "2", "-i", "0.2",
              "-W", "2", "10.0.0.2")
    assert ping.returncode == 0 and "2 received" in ping.stdout, ping.stderr
    assert tb("lab", "exec", "-n", lab_name, "h2", "--", "sh", "-c", "exit 3").returncode == 3
    bad = tb("lab", "exec", "-n", lab_name, "h9", "--", "true")
    assert bad.returncode == 2 and "h9" in bad.stderr and "h1" in bad.stderr
    bg = tb("lab", "exec", "-n", lab_name, "h2", "--", "sh", "-c",
            "sleep 600 >/dev/null 2>&1 & echo $!")
    straggler = int(bg.stdout.strip())
    assert alive(straggler)

    got = tb("lab", "inspect", "-n", lab_name, "--measure", "--json")
    assert got.returncode == 0, got.stderr
    snap = json.loads(got.stdout)
    addrs = {n["name"]: [a for i in n["interfaces"] for a in i["addrs"]] for n in snap["nodes"]}
    assert "10.0.0.1/24" in addrs["h1"] and "10.0.0.2/24" in addrs["h2"]
    (link,) = snap["links"]
    assert link["asked"]["a_to_b"] == "200 Mbit/s"
    assert all(q.startswith("tbf") and "rate=200Mbit" in q
               for qs in link["applied"].values() for q in qs) and len(link["applied"]) == 2
    assert link["measured"]["loss_pct"] == 0 and link["measured"]["rtt_p50_ms"] < 5
    assert "measured ping 10.0.0.2" in tb("lab", "inspect", "-n", lab_name, "--measure").stdout

    mig = tb("lab", "migrate", "-n", lab_name, "h1", "h2", "--workload-mib", "8",
             "--dirty-rate-mbs", "1", "--json")
    assert mig.returncode == 0, mig.stderr
    res = json.loads(mig.stdout)
    assert res["completed"] and res["integrity_ok"] and res["destination_address"] == "10.0.0.2"
    assert res["image_bytes"] >= 8 << 20 and res["bytes_on_wire"] > 1 << 20
    assert res["goodput_mbps"] <= 200 * 1.1
    nohost = tb("lab", "migrate", "-n", lab_name, "h1", "h7")
    assert nohost.returncode == 2 and "h7" in nohost.stderr

    inodes = {ino for ino in st.netns_inodes.values() if ino}
    down = tb("lab", "down", "-n", lab_name, timeout=180)
    assert down.returncode == 0, down.stderr
    assert not _wait_gone([rec.pid, straggler, *st.node_pids.values()])
    assert not _namespace_holders(inodes)
    assert not st.path.exists() and records.load(lab_name) is None
    assert not rec.socket.exists()
    gone = tb("lab", "inspect", "-n", lab_name)
    assert gone.returncode == 2 and lab_name in gone.stderr


def test_lab_killed_with_sigkill_is_removed_from_its_records_only(lab_name):
    """kill -9 of the supervisor leaves namespaces, a root bridge and its ports; `lab down`
    of the dead lab removes exactly those (the clean module's functions, for its records)."""
    up = tb("lab", "up", "lan", "hosts=2", "switch=bridge", "--name", lab_name)
    assert up.returncode == 0, up.stderr
    rec = records.load(lab_name)
    st = rec.run_state()
    assert st is not None and "s1" in st.root_links
    inodes = {ino for ino in st.netns_inodes.values() if ino}
    root_links = set(st.root_links) & _root_links()
    assert "s1" in root_links
    others = {s.run_id: s.owner_pid for s in records.run_states() if s.run_id != st.run_id}
    # a user's process in a node keeps its namespace (and the node's links) alive
    bg = tb("lab", "exec", "-n", lab_name, "h1", "--", "sh", "-c",
            "sleep 600 >/dev/null 2>&1 & echo $!")
    straggler = int(bg.stdout.strip())

    os.kill(rec.pid, signal.SIGKILL)
    assert not _wait_gone([rec.pid])
    time.sleep(0.5)  # the node shells hang up with their pty; the rest stays
    assert alive(straggler) and _namespace_holders(inodes) == [straggler]
    assert "s1" in _root_links()
    listed = json.loads(tb("lab", "list", "--json").stdout)
    assert any(r["name"] == lab_name and r["status"].startswith("dead") for r in listed)
    assert tb("lab", "exec", "-n", lab_name, "h1", "--", "true").returncode == 1

    down = tb("lab", "down", "-n", lab_name)
    assert down.returncode == 0, down.stderr
    assert "removed what its dead supervisor left" in down.stdout
    assert not _wait_gone([straggler, *st.node_pids.values()])
    assert not _namespace_holders(inodes)
    assert not root_links & _root_links()
    assert not Path(st.path).exists() and records.load(lab_name) is None
    # every other run's record is still there (other labs on this machine are not touched)
    still = {s.run_id for s in records.run_states()}
    assert all(r in still for r, owner in others.items() if alive(owner)), (others, still)

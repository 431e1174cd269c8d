"""kill -9 a running `testbed run` halfway, then `testbed clean`: nothing of it is left."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from testbed.host import state
from tests.helpers import alive, processes

pytestmark = pytest.mark.integration


def _footprint() -> dict[str, set]:
    """Namespaces (by inode) other than init's, veth links, root qdiscs, testbed processes."""
    init_ns = os.stat("/proc/self/ns/net").st_ino
    netns, procs = set(), set()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            ino = os.stat(f"/proc/{pid}/ns/net").st_ino
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if ino != init_ns:
            netns.add(ino)
            procs.add(f"{pid}:{cmd[:80]}")
        if "mininet:" in cmd or "iperf3" in cmd or "qemu-system" in cmd:
            procs.add(f"{pid}:{cmd[:80]}")
    links = json.loads(subprocess.run(["ip", "-j", "link", "show", "type", "veth"],
                                      capture_output=True, text=True).stdout or "[]")
    taps = json.loads(subprocess.run(["ip", "-j", "-d", "link", "show"], capture_output=True,
                                     text=True).stdout or "[]")
    qdiscs = json.loads(subprocess.run(["tc", "-j", "qdisc", "show"], capture_output=True,
                                       text=True).stdout or "[]")
    return {
        "netns": netns, "procs": procs,
        "veth": {li["ifname"] for li in links if "ifname" in li},
        "tap": {li["ifname"] for li in taps if "ifname" in li
                if (li.get("linkinfo") or {}).get("info_kind") == "tun"},
        "qdiscs": {f"{q['dev']}:{q['kind']}" for q in qdiscs
                   if q["kind"] in ("netem", "tbf", "htb")},
        "named_netns": set(subprocess.run(["ip", "netns", "list"], capture_output=True,
                                          text=True).stdout.split()),
        "registry": {p.name for p in state.STATE_DIR.glob("*.json")}
        if state.STATE_DIR.is_dir() else set(),
    }


def _still_running(procs: set[str]) -> bool:
    """Whether any of ``procs`` ("pid:cmdline") still runs (a zombie does not)."""
    return any(alive(int(entry.split(":", 1)[0])) for entry in procs)


def _pids_running(needle: str) -> list[int]:
    return [pid for pid, _ in processes(needle)]


def _stop_run_halfway(tmp_path: Path, spec_text: str, vm: str = "never",
                      sig: int = signal.SIGKILL) -> int:
    """Start `testbed run`, send it ``sig`` while iperf3 moves data; its exit status."""
    spec = tmp_path / "slow.toml"
    spec.write_text(spec_text)
    proc = subprocess.Popen([sys.executable, "-m", "testbed", "--vm", vm, "run",
                             str(spec), "--out", str(tmp_path / "out")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 360  # an appliance boots first (TCG, loaded machine)
    seen = ""
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        seen += line
        if "iperf3" in line and "RTT" in line:  # the lab is up and iperf3 is starting
            break
        if not line and proc.poll() is not None:
            pytest.fail(f"testbed run ended before it could be killed:\n{seen}")
    while time.monotonic() < deadline and not _pids_running("iperf3 -c"):
        time.sleep(0.2)
    assert _pids_running("iperf3 -c"), f"iperf3 client never started:\n{seen}"
    time.sleep(1.0)  # halfway: iperf3 is moving data
    assert proc.poll() is None, seen
    proc.send_signal(sig)
    try:
        return proc.wait(timeout=120)
    except subprocess.TimeoutExpired:
        proc.kill()
        pytest.fail(f"testbed run did not exit within 120 s of signal {sig}")


SLOW = 'name = "slow"\n[link]\n{link}\n[measure]\nping_count = 10\niperf_seconds = 30\n'


@pytest.mark.parametrize("link,vm", [
    pytest.param("bw_mbps = 50\ndelay_ms = 0", "never", id="tbf"),
    pytest.param("bw_mbps = 50\ndelay_ms = 20", "never", id="netem",
                 marks=pytest.mark.needs("netem")),
    pytest.param("bw_mbps = 50\ndelay_ms = 20", "auto", id="appliance"),
])
def test_kill9_then_clean_leaves_nothing(tmp_path, link, vm):
    before = _footprint()
    _stop_run_halfway(tmp_path, SLOW.format(link=link), vm=vm)
    left = _footprint()
    assert left["netns"] - before["netns"], "the killed run should have left namespaces behind"
    out = subprocess.run([sys.executable, "-m", "testbed", "clean"], capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert "stale run records removed" in out.stdout, out.stdout
    if _still_running(left["procs"] - before["procs"]):
        assert "processes killed" in out.stdout, out.stdout
    time.sleep(0.5)
    after = _footprint()
    for key in after:
        assert after[key] <= before[key], f"{key} left behind: {after[key] - before[key]}"
    again = subprocess.run([sys.executable, "-m", "testbed", "clean"], capture_output=True,
                           text=True, timeout=60)
    assert again.stdout.strip() == "nothing to clean", again.stdout


def test_ctrl_c_tears_the_appliance_down(tmp_path):
    """Interrupted while iperf3 runs through the appliance: the lab and the appliance (its
    QEMU, taps and namespace) are gone when `testbed run` exits 130, with no `clean`."""
    before = _footprint()
    rc = _stop_run_halfway(tmp_path, SLOW.format(link="bw_mbps = 50\ndelay_ms = 20"),
                           vm="auto", sig=signal.SIGINT)
    assert rc == 130
    time.sleep(0.5)
    after = _footprint()
    for key in after:
        assert after[key] <= before[key], f"{key} left behind: {after[key] - before[key]}"
    assert (tmp_path / "out" / "slow.json").exists(), "partial results were not kept"

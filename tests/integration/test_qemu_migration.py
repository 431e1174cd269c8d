"""Real QEMU guests (TCG) migrated by QEMU itself between lab hosts' migration stacks.

Each test boots a small Debian-kernel guest whose dirtier prints a heartbeat counter on the
serial console: "alive after the move" means the destination's console carries on from the
source's counter (a fresh boot would start at 1).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from agents.qemu.command import Guest, Options
from agents.qemu.driver import Plan, QemuError, local_launcher, migrate
from testbed.host import clean, state
from testbed.lab import Lab
from testbed.measure.qemu_migration import QEMU_RUN_DIR, QemuJob, migrate_qemu
from tests.helpers import processes
from topologies import build

pytestmark = pytest.mark.integration
GUEST = Guest(ram_mib=192, dirty_mib=48, dirty_rate_mbs=4, hot_mib=8)


def _assert_moved(res: dict) -> None:
    assert res["completed"], res.get("error")
    assert res["integrity_ok"], res["guest"]
    g = res["guest"]
    assert g["destination_running"] and not g["source_running"], g
    assert g["destination_first_beat"] > g["source_last_beat"] >= 1, g
    assert res["downtime_ms"] is not None and res["setup_time_ms"] is not None
    # the times end where the guest runs at the destination (its STOP / RESUME events), at
    # or after QEMU's own, which end at the source's last write
    assert res["timing"] == "guest-resumed-at-destination", res["timing"]
    assert res["downtime_ms"] >= res["qemu_downtime_ms"] - 5, res
    assert res["migration_time_s"] * 1000 >= res["qemu_total_time_ms"] - 5, res
    assert res["rounds"] == res["dirty_sync_count"] >= 2
    assert res["iterations"] and res["iterations"][0]["iteration"] == 1
    # the dirtier's 48 MiB are random: QEMU had to send at least that much
    assert res["bytes_on_wire"] >= GUEST.dirty_mib * 2**20
    assert res["image_bytes"] >= GUEST.ram_mib * 2**20


def test_qemu_guest_moves_between_fabric_hosts_over_migration_stacks():
    net = build("spine_leaf", host_link_mbps=200)  # tbf-shaped host links
    with Lab(net) as lab:
        res = migrate_qemu(lab, QemuJob("h1-1", "h2-1", guest=GUEST, iperf3_s=2))
    _assert_moved(res)
    mig = net.stacks_of("h1-1")["migration"].ip
    assert res["source_addresses_seen"] == [mig], res["source_addresses_seen"]
    assert res["uri"] == f"tcp:{net.stacks_of('h2-1')['migration'].ip}:4444"
    assert 0 < res["iperf3_mbps"] <= 200 * 1.1
    assert 0 < res["goodput_mbps"] <= 200, res["goodput_mbps"]  # the tbf cap holds


def test_qemu_migration_with_tls_and_multifd():
    net = build("spine_leaf")
    opts = Options(multifd_channels=2, compression="zstd", tls=True)
    with Lab(net) as lab:
        res = migrate_qemu(lab, QemuJob("h1-1", "h2-1", guest=GUEST, options=opts))
        assert not (QEMU_RUN_DIR / lab.run_id).exists(), "run directory left behind"
    _assert_moved(res)
    assert res["encrypted"] and res["transport"] == "tls" and res["streams"] == 2
    assert res["multifd_bytes"] > 0 and res["compression"] == "zstd"


def test_destination_killed_mid_way_source_guest_runs_on():
    net = build("spine_leaf")
    killed: list[int] = []

    def kill_destination(procs) -> None:
        time.sleep(0.5)
        procs["destination"].kill()
        killed.append(procs["destination"].pid)

    opts = Options(max_bandwidth_mbps=40)  # slow enough to be mid-way after 0.5 s
    with Lab(net) as lab:
        res = migrate_qemu(lab, QemuJob("h1-1", "h2-1", guest=GUEST, options=opts),
                           on_active=kill_destination)
    assert killed
    assert not res["completed"] and res["status"] == "failed", res
    assert res["error"], res
    g = res["guest"]
    assert g["source_running"] and g["source_ran_on"], g  # QEMU's own rollback
    assert g["source_last_beat_after"] > g["source_last_beat"]


def test_qemu_refusal_and_start_failure_are_clear_errors(tmp_path):
    # QEMU's own bound: downtime-limit is at most 2000 s
    refused = Plan("127.0.0.1", tmp_path / "refused", 47461, GUEST,
                   Options(downtime_limit_ms=3_000_000))
    with pytest.raises(QemuError, match="refused the migration settings: .*downtime"):
        migrate(refused, local_launcher())
    huge = Plan("127.0.0.1", tmp_path / "huge", 47462, Guest(ram_mib=64 * 2**20))  # 64 TiB
    with pytest.raises(QemuError, match="exited .* before its QMP socket came up: .*qemu"):
        migrate(huge, local_launcher())
    assert not [p for p in _qemu_pids() if str(tmp_path) in p[1]]


def _qemu_pids() -> list[tuple[int, str]]:
    return processes("qemu-system")


DRIVER = textwrap.dedent("""
    import json, sys
    from agents.qemu.command import Guest, Options
    from testbed.lab import Lab
    from testbed.measure.qemu_migration import QemuJob, migrate_qemu
    from topologies.pair import pair
    with Lab(pair(delay_ms=0, bw_mbps=None)) as lab:
        print(json.dumps({"run_id": lab.run_id}), flush=True)
        migrate_qemu(lab, QemuJob("h1", "h2", guest=Guest(192, 1, 48, 4, 8),
                                  options=Options(max_bandwidth_mbps=8), timeout_s=120))
""")


def test_kill_9_of_the_driver_then_clean_removes_qemu():
    proc = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).parents[2])
    run_id = json.loads(proc.stdout.readline())["run_id"]
    run_dir = QEMU_RUN_DIR / run_id
    deadline = time.monotonic() + 60
    while len([p for p in _qemu_pids() if str(run_dir) in p[1]]) < 2:
        assert time.monotonic() < deadline and proc.poll() is None, "no QEMU started"
        time.sleep(0.2)
    time.sleep(1.0)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert [p for p in _qemu_pids() if str(run_dir) in p[1]], "QEMU should outlive a kill -9"
    assert any(run_dir.iterdir())
    ours = [st for st in state.load_all() if st.run_id == run_id]
    assert len(ours) == 1 and ours[0].paths
    # clean only what this run recorded (other labs on this machine stay untouched)
    _, live = clean.split_runs()
    report = clean.CleanReport()
    clean.kill_recorded_processes(ours, report)
    clean.kill_namespaces({ino: n for n, ino in ours[0].netns_inodes.items() if ino}, report)
    clean.remove_run_directories(ours, live, report)
    ours[0].remove()
    time.sleep(0.3)
    assert not [p for p in _qemu_pids() if str(run_dir) in p[1]]
    assert not run_dir.exists()
    assert any("qemu-system" in p for p in report.processes), report.processes
    assert str(run_dir / "h1-h2-4444") in report.files or str(run_dir) in report.files

"""Disk migration alongside memory: dirty blocks re-sent, or a replica verified by digest."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from agents.memory.process import process_state
from tests.helpers import (
    assert_runs_on,
    counter_of,
    destination,
    kill,
    run_source,
    workload,
)

pytestmark = pytest.mark.integration


def make_disk(path, mib: int) -> None:
    """Half random blocks, half zero blocks (zero blocks go as references)."""
    path.write_bytes(os.urandom(mib << 19) + bytes(mib << 19))


def test_disk_dirty_blocks_resent_and_guest_continues_on_migrated_disk(tmp_path):
    src_disk, dst_disk = tmp_path / "src.img", tmp_path / "dst.img"
    make_disk(src_disk, 16)
    with destination("--listen", "127.0.0.1:0", "--disk-dest", str(dst_disk)) as (dproc, port):
        rc, res = run_source("--workload", "16M", "--dirty-rate", "10", "--disk", str(src_disk),
                             "--disk-rate", "8", "--to", f"127.0.0.1:{port}",
                             "--downtime-ms", "100", "--bandwidth-cap", "400")
        try:
            assert rc == 0, res["error"]
            assert res["completed"] and res["integrity_ok"] and res["resumed"]
            assert res["disk_mode"] == "transfer" and res["disk_bytes"] == 16 << 20
            blocks = res["disk_blocks_per_round"]
            assert blocks[0] == 4096 and len(blocks) == res["rounds"]
            assert sum(blocks[1:]) > 0  # the guest wrote blocks during the migration
            # the random half always goes; blocks still zero go as references (the guest
            # has been writing since it started, so some of the zero half is data by now)
            resent = sum(blocks[1:]) * 4200
            assert (8 << 20) < res["disk_bytes_on_wire"] < (16 << 20) + resent
            assert res["disk_bytes_on_wire"] < res["bytes_on_wire"]
            assert dst_disk.stat().st_size == 16 << 20
            before = dst_disk.read_bytes()
            time.sleep(0.3)
            assert dst_disk.read_bytes() != before  # the resumed guest writes its new disk
            assert counter_of(res["destination_service"]) >= res["counter_at_switchover"]
        finally:
            kill(res.get("destination_pid"))
            kill(res.get("source_pid"))


def test_replicated_disk_is_verified_not_sent(tmp_path):
    src_disk, replica = tmp_path / "src.img", tmp_path / "replica.img"
    make_disk(src_disk, 8)
    shutil.copy(src_disk, replica)
    with destination("--listen", "127.0.0.1:0", "--no-resume", "--disk-dest",
                     str(replica)) as (dproc, port), \
            workload("--size", "8M", "--dirty-rate", "5") as (wproc, info):
        rc, res = run_source("--pid", str(info["pid"]), "--disk", str(src_disk), "--replicated",
                             "--to", f"127.0.0.1:{port}")
        assert rc == 0, res["error"]
        assert res["integrity_ok"] and res["disk_mode"] == "replicated"
        assert res["disk_bytes"] == 8 << 20 and res["disk_bytes_on_wire"] == 0
        assert res["disk_blocks_per_round"] == []
        assert res["bytes_on_wire"] < 8 << 20  # memory only (zero pages elided)


def test_replica_that_differs_is_refused_and_workload_stays(tmp_path):
    src_disk, replica = tmp_path / "src.img", tmp_path / "replica.img"
    make_disk(src_disk, 4)
    raw = bytearray(src_disk.read_bytes())
    raw[123_456] ^= 0xFF  # one byte the replication missed
    replica.write_bytes(raw)
    with destination("--listen", "127.0.0.1:0", "--disk-dest", str(replica)) as (dproc, port), \
            workload("--size", "8M", "--dirty-rate", "5") as (wproc, info):
        rc, res = run_source("--pid", str(info["pid"]), "--disk", str(src_disk), "--replicated",
                             "--to", f"127.0.0.1:{port}")
        assert rc != 0 and not res["completed"] and not res["integrity_ok"]
        assert "disk digest mismatch (replicated)" in res["error"]
        assert not res["resumed"]
        time.sleep(0.2)
        assert_runs_on(info)


def test_disk_without_destination_target_is_refused(tmp_path):
    src_disk = tmp_path / "src.img"
    make_disk(src_disk, 1)
    with destination("--listen", "127.0.0.1:0") as (dproc, port), \
            workload("--size", "4M") as (wproc, info):
        rc, res = run_source("--pid", str(info["pid"]), "--disk", str(src_disk),
                             "--to", f"127.0.0.1:{port}")
        assert rc != 0 and "no --disk-dest" in res["error"]
        assert process_state(info["pid"]) not in "tTZ"

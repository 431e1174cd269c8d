"""Where the agents' CPU goes: the process readings, a phase between two of them, the thread
tally of the destination's integrity check, and both ends' figures from a local migration."""

from __future__ import annotations

import os
import time

import trio

from agents.destination import Destination, DestinationConfig
from agents.memory.image import ImageMemory
from agents.runtime.cputime import ThreadCpu, cpu_between, process_cpu
from agents.source import SourceConfig, migrate

PS = 4096


def test_a_phase_is_the_difference_of_two_readings_or_none():
    a, b = {"user": 1.25, "system": 0.5}, {"user": 2.0, "system": 0.75}
    assert cpu_between(a, b) == {"user": 0.75, "system": 0.25}
    assert cpu_between(None, b) is None and cpu_between(a, None) is None
    now = process_cpu()
    assert set(now) == {"user", "system"} and now["user"] > 0


def test_the_thread_tally_counts_work_and_not_sleep():
    tally = ThreadCpu()
    t0 = tally.start()
    time.sleep(0.2)
    tally.stop(t0)
    assert tally.blocks == 1 and tally.seconds < 0.05  # asleep: no CPU
    t0 = tally.start()
    end = time.monotonic() + 0.1
    while time.monotonic() < end:
        pass
    tally.stop(t0)
    assert tally.blocks == 2 and tally.seconds > 0.05


def test_both_ends_report_the_copy_phase_and_the_destination_its_check(tmp_path):
    path = tmp_path / "img"
    # enough pages that hashing them takes well over the 0.1 ms the figures are rounded to
    path.write_bytes(os.urandom(PS * 1536) + bytes(PS * 512))

    async def main():
        d = Destination(DestinationConfig("127.0.0.1", 0, resume=False, idle_timeout=5))
        async with trio.open_nursery() as n:
            port = await n.start(d.serve, True)
            cfg = SourceConfig("127.0.0.1", port, preflight="off", batch_pages=16)
            res = await migrate(ImageMemory(path), cfg, kind="image")
        return res, d.outcomes

    res, (out,) = trio.run(main)
    assert res.completed and out["ok"], res.error
    assert res.cpu_copy_s is not None and min(res.cpu_copy_s.values()) >= 0
    copy = out["cpu_copy_s"]
    assert copy is not None and min(copy.values()) >= 0 and out["copy_wall_s"] > 0
    for phase in ("cpu_setup_s", "cpu_commit_s"):  # the phases before and after it
        assert out[phase] is not None and min(out[phase].values()) >= 0, phase
    # every batch of every round was hashed and checked, inside the copy phase
    assert out["verified_batches"] == sum(-(-n // 16) for n in res.pages_sent_per_round)
    assert 0 < out["cpu_verify_s"] <= copy["user"] + copy["system"] + 0.01

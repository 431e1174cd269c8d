"""Layouts, the image source's dirty model and trace, the hash tracker, pre-copy policy."""

import time

import pytest

from agents.__main__ import build_parser
from agents.guest.workload import (
    Config,
    fill_arena,
    new_arena,
    parse_fraction,
    parse_mix,
    parse_size,
    read_header,
    write_header,
)
from agents.memory.dirty import HashTracker
from agents.memory.image import DirtyModel, ImageMemory
from agents.memory.layout import Layout, Region
from agents.precopy import PrecopyPolicy
from agents.wire.digest import image_digest, page_hashes


def test_layout_runs_split_at_region_edges():
    lay = Layout(4096, [Region(0x10000, 3), Region(0x80000, 2)])
    assert lay.npages == 5
    assert list(lay.runs([0, 1, 2, 3, 4])) == [(0, 3, 0x10000), (3, 2, 0x80000)]
    assert list(lay.runs([1, 4])) == [(1, 1, 0x11000), (4, 1, 0x81000)]
    assert lay.address(4) == 0x81000
    with pytest.raises(IndexError):
        lay.address(5)


@pytest.mark.parametrize("bad", [
    {"page_size": 4096},
    {"page_size": 3000, "regions": [[0, 1, ""]]},
    {"page_size": 4096, "regions": [[0, -1, ""]]},
    {"page_size": 4096, "regions": [[0, 1 << 40, ""]]},
])
def test_layout_from_peer_refuses_nonsense(bad):
    with pytest.raises(ValueError):
        Layout.from_json(bad)


def test_image_model_really_dirties_pages(tmp_path):
    path = tmp_path / "img"
    path.write_bytes(bytes(4096 * 1000))
    src = ImageMemory(path, DirtyModel(rate_mbps=50, wss_mib=1))
    src.start_tracking()
    before = page_hashes(src.read_all(), 4096)
    time.sleep(0.2)
    dirty = src.dirty()
    after = page_hashes(src.read_all(), 4096)
    changed = [i for i, (a, b) in enumerate(zip(before, after, strict=True)) if a != b]
    assert dirty == changed
    assert 0 < len(dirty) <= 256  # the working set is 1 MiB = 256 pages
    src.pause()
    time.sleep(0.05)
    assert src.dirty() == []  # a paused guest dirties nothing


def test_image_trace_replay(tmp_path):
    path = tmp_path / "img"
    path.write_bytes(bytes(4096 * 10))
    src = ImageMemory(path, trace=[(0.0, 1), (0.0, 3), (100.0, 5)])
    src.start_tracking()
    assert src.mechanism == "trace"
    assert src.dirty() == []  # pages at t=0 were consumed by start_tracking
    assert bytes(src.read_all()[4096:8192]) != bytes(4096)


def test_hash_tracker_compares_with_what_was_sent():
    buf = bytearray(4096 * 8)
    t = HashTracker(lambda: memoryview(buf), 4096)
    t.reset()
    buf[4096 * 2] = 1
    buf[4096 * 7 + 100] = 1
    assert t.collect() == [2, 7]
    assert t.collect() == [2, 7]  # still dirty: nothing was sent
    mv = memoryview(buf)
    t.note_sent(2, mv[2 * 4096 : 3 * 4096])
    t.note_sent(7, mv[7 * 4096 : 8 * 4096])
    assert t.collect() == []
    # ABA: sent while changed, then changed back to the content of the previous scan
    buf[4096 * 3] = 9
    assert t.collect() == [3]
    t.note_sent(3, mv[3 * 4096 : 4 * 4096])
    buf[4096 * 3] = 0
    assert t.collect() == [3]


def test_digest_changes_with_any_page():
    a = bytearray(4096 * 4)
    d1 = image_digest(page_hashes(a, 4096))
    a[4096 * 3 + 5] = 1
    assert image_digest(page_hashes(a, 4096)) != d1


def test_switchover_rule_and_stop_conditions():
    pol = PrecopyPolicy(downtime_limit_s=0.1, max_rounds=5, max_bytes=1000)
    assert pol.switchover(0, 100_001, 1e6, 0) is None
    assert pol.switchover(0, 100_000, 1e6, 0) == "converged"  # 1 MB/s x 0.1 s
    assert pol.switchover(4, 10**9, 1e6, 0) == "max-rounds"
    assert pol.switchover(1, 10**9, 1e6, 1000) == "max-bytes"


def test_auto_converge_steps():
    pol = PrecopyPolicy()
    assert pol.next_throttle(0.0, dirty_Bps=10, bandwidth_Bps=100) == 0.0
    lvl = pol.next_throttle(0.0, 90, 100)
    assert lvl == pytest.approx(0.2)
    for _ in range(20):
        lvl = pol.next_throttle(lvl, 90, 100)
    assert lvl == pytest.approx(0.99)


def test_workload_arena_mix_and_header():
    cfg = Config(4 << 20, mix=parse_mix("zero=50,random=50"))
    arena = new_arena(cfg.size_bytes)
    fill_arena(arena, cfg)
    write_header(arena, cfg, counter=42)
    zero = bytes(4096)
    zeros = sum(arena[o : o + 4096] == zero for o in range(4096, len(arena), 4096))
    assert 0.4 < zeros / 1023 < 0.6
    cfg2, counter = read_header(arena)
    assert counter == 42 and cfg2 == cfg
    assert parse_size("64M") == 64 << 20 and parse_size("1.5G") == 3 << 29


def test_hot_set_arguments_reach_the_source_and_are_checked(capsys):
    args = build_parser().parse_args(["source", "--workload", "192M", "--to", "10.0.0.2:7000",
                                      "--hot-fraction", "0.0333", "--hot-share", "1"])
    assert (args.hot_fraction, args.hot_share) == (0.0333, 1.0)
    assert parse_fraction("0.5") == 0.5
    for bad in ("0", "1.5", "-0.1", "half"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["source", "--workload", "8M", "--to", "10.0.0.2:7000",
                                       "--hot-share", bad])
        assert "is not a fraction in (0, 1]" in capsys.readouterr().err

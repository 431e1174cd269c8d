"""Preflight's bandwidth judgement: a cold probe on a long path is a lower bound, not a verdict."""

from agents.preflight import judge_bandwidth
from agents.wire.delivery import PathSignals

FLOOR = 250e6
PATH = PathSignals(slow_start=False, rwnd_limited_s=0.0)


def test_a_short_path_is_judged_on_the_probe():
    ok = judge_bandwidth(225e6, 0.3, 238e6, PATH, FLOOR)
    assert ok.estimate_bps == 238e6 and ok.limited_by == "path" and ok.problem is None
    slow = judge_bandwidth(100e6, 0.7, 90e6, PATH, FLOOR)
    assert slow.problem is not None and "100 Mbit/s" in slow.problem


def test_slow_start_and_the_receive_window_make_a_lower_bound_not_a_problem():
    ss = judge_bandwidth(32e6, 2.1, 163e6, PathSignals(True, 0.0), FLOOR)
    assert ss.limited_by == "slow start" and ss.problem is None
    assert ss.estimate_bps == 163e6  # the best round trip beats the cold average
    rwnd = judge_bandwidth(100e6, 0.67, 101e6, PathSignals(False, 0.17), FLOOR)
    assert rwnd.limited_by == "receive window" and rwnd.problem is None


def test_without_tcp_info_the_average_is_judged():
    b = judge_bandwidth(50e6, 1.0, None, None, FLOOR)
    assert b.limited_by == "unknown" and b.problem is not None and b.estimate_bps == 50e6


def test_a_cap_below_the_floor_is_a_problem_whatever_held_the_probe():
    capped = judge_bandwidth(49e6, 1.0, 50e6, PathSignals(True, 0.0), FLOOR, cap_bps=50e6)
    assert capped.limited_by == "cap" and "the migration's cap" in capped.problem
    high = judge_bandwidth(32e6, 2.1, 163e6, PathSignals(True, 0.0), FLOOR, cap_bps=1e9)
    assert high.limited_by == "slow start" and high.problem is None

import math

import pytest

from testbed.results import model


def test_single_round_is_plain_copy():
    p = model.precopy(1e9, 1e8, 0.0, rounds=1)
    assert math.isclose(p.migration_time_s, 10.0)
    assert math.isclose(p.downtime_ms, 10_000.0)  # n = 0: everything after the stop


def test_converging_precopy_matches_closed_form():
    v, r, d, rounds = 4e9, 1.25e8, 2.5e7, 5  # lambda = 0.2
    p = model.precopy(v, r, d, rounds)
    series = sum(v * 0.2 ** k / r for k in range(rounds))
    assert math.isclose(p.migration_time_s, series, rel_tol=1e-12)
    assert math.isclose(p.downtime_ms, v * 0.2 ** 4 / r * 1000, rel_tol=1e-12)


def test_lambda_one_and_deviation_flags():
    p = model.precopy(1e9, 1e8, 1e8, rounds=3)
    assert math.isclose(p.migration_time_s, 30.0)
    assert model.flagged(model.deviation(13.0, 10.0))
    assert not model.flagged(model.deviation(11.0, 10.0))
    assert model.deviation(1.0, 0.0) is None
    with pytest.raises(ValueError):
        model.precopy(1e9, 0, 0, 1)


def _inputs(**kw):
    base = dict(volume_bytes=1e9, rate_bytes_s=1e8, dirty_bytes_s=2e7,
                downtime_target_ms=300.0, max_rounds=30)
    return model.ModelInputs(**(base | kw))


def test_the_model_stops_by_its_own_rule():
    # lambda = 0.2: after round n the rest is 1e9 * 0.2**n; it fits 300 ms at 1e8 B/s
    # (3e7 bytes) from n = 3 on: rounds 0, 1, 2 pre-copy, round 3 the stop-and-copy
    assert model.stop_round(_inputs()) == 4
    assert model.stop_round(_inputs(dirty_bytes_s=2e8, max_rounds=7)) == 7  # never fits
    assert model.stop_round(_inputs(volume_bytes=0.0)) == 2
    # in a burst it decides at the rate it has then: the others have ended, its share doubled
    # (6e7 bytes fit 300 ms), so what is left after round 2 (4e7) no longer needs round 3
    assert model.stop_round(_inputs(final_rate_bytes_s=2e8)) == 3


def test_forecast_adds_the_round_trips_and_the_resume():
    bare = model.forecast(_inputs())
    slow = model.forecast(_inputs(rtt_s=0.15, resume_s=0.02))
    piped = model.forecast(_inputs(rtt_s=0.15, resume_s=0.02, acked_rounds=False))
    assert slow.rounds == bare.rounds == piped.rounds == 4
    # three acknowledged pre-copy rounds, then PREPARED and DECISION at the switchover
    assert math.isclose(slow.migration_time_s - bare.migration_time_s, 5 * 0.15 + 0.02)
    assert math.isclose(slow.downtime_ms - bare.downtime_ms, 320.0)
    # rounds that follow each other on one stream: only the switchover's two
    assert math.isclose(piped.migration_time_s - bare.migration_time_s, 2 * 0.15 + 0.02)
    assert piped.downtime_ms == slow.downtime_ms
    # the queue drained before the pause for 0.1 s: 2e7 B/s more dirt, sent at 1e8 B/s
    drained = model.forecast(_inputs(acked_rounds=False, drain_s=0.1))
    assert math.isclose(drained.downtime_ms - bare.downtime_ms, 0.1 * 2e7 / 1e8 * 1000)


def test_inputs_come_from_what_was_measured():
    m = {"iperf3_mbps": 800.0, "fair_share_mbps": 200.0, "pages_sent_per_round": [1000, 50, 10],
         "zero_pages_per_round": [400, 0, 0], "round_seconds": [1.0, 0.5],
         "dirty_pages_per_round": [60, 30, 10], "downtime_target_ms": 100,
         "max_rounds": 5, "rtt_measured_ms": 20.0, "resume_ms": 5.0}
    inp = model.inputs_from(m)
    assert inp.volume_bytes == 600 * 4096  # zero pages travel as references
    assert inp.rate_bytes_s == 200e6 / 8  # the share beside the other migrations
    assert math.isclose(inp.dirty_bytes_s, 90 * 4096 / 1.5)  # measured, not configured
    assert (inp.downtime_target_ms, inp.max_rounds, inp.rtt_s, inp.resume_s) == \
        (100, 5, 0.02, 0.005)
    assert inp.acked_rounds and not model.inputs_from(m | {"pipelined": True}).acked_rounds
    assert model.inputs_from({"iperf3_mbps": 100.0}) is None
    # the destination's own durations, where it reported them: GO -> DECISION holds the
    # resume and its hook (and the durable record), final round -> PREPARED the verification
    timed = model.inputs_from(m | {"stop_ms": 2.0, "hooks": {"on_resume": {"ms": 3.0}},
                                   "commit_ms": 40.0, "prepare_ms": 12.0})
    assert math.isclose(timed.resume_s, 0.042) and math.isclose(timed.prepare_s, 0.012)
    assert math.isclose(model.inputs_from(m | {"stop_ms": 2.0,
                                                "hooks": {"on_resume": {"ms": 3.0}}}).resume_s,
                        0.010)


def test_preparing_waits_after_the_last_round_and_overlaps_the_source_check():
    bare = model.forecast(_inputs(rtt_s=0.01))
    prep = model.forecast(_inputs(rtt_s=0.01, prepare_s=0.05))
    assert math.isclose(prep.downtime_ms - bare.downtime_ms, 50.0)
    # a source check longer than the last round, PREPARED and its round trip hides them
    checked = model.forecast(_inputs(rtt_s=0.01, prepare_s=0.05, check_s=5.0))
    assert math.isclose(checked.downtime_ms, (5.0 + 0.01) * 1000)


def test_a_hot_set_guest_dirties_less_per_second_in_long_rounds_and_is_calibrated():
    skew = model.Skew(pages=32767, hot_pages=3276, hot_share=0.9, writes_per_s=1953)
    short, long_ = skew.dirtied(0.4), skew.dirtied(4.0)
    assert long_ / 4.0 < 0.6 * short / 0.4  # rewrites of hot pages count once
    assert skew.dirtied(1e6) <= 32767 * 4096 + 1  # never more than the guest
    # the tracker's round 0 gives back the write rate
    seen = skew.dirtied_in_first_round(3.5)
    back = model.Skew.calibrated(32767, 0.1, 0.9, seen, 3.5)
    assert abs(back.writes_per_s - 1953) / 1953 < 0.01


def test_round_0_read_along_a_slow_start_calibrates_the_guests_own_write_rate():
    # a long path: the first 4 s of a 6.3 s round 0 deliver 30 % of the image (slow start)
    curve = model.PathCurve(((1.0, 1e6), (2.0, 4e6), (3.0, 12e6), (4.0, 30e6)), 30e6)
    profile = curve.read_profile(100e6)
    assert len(profile) == model.PROFILE_SLICES and profile[-1] < 1.0
    assert all(a < b for a, b in zip(profile[:-1], profile[1:], strict=True))
    assert profile[len(profile) // 3] > 0.6  # a third of the image took most of the time
    even = model.PathCurve(((1.0, 10e6),), 10e6).read_profile(100e6)
    assert all(abs(p - (i + 0.5) / len(even)) < 1e-9 for i, p in enumerate(even))
    guest = model.Skew(32767, 3276, 0.9, 1953, read_profile=profile)
    t = curve.time_for(100e6)
    seen = guest.dirtied_in_first_round(t)
    back = model.Skew.calibrated(32767, 0.1, 0.9, seen, t, read_profile=profile)
    assert abs(back.writes_per_s - 1953) / 1953 < 0.01
    # read evenly instead, the cold pages seem exposed longer: the rate comes out low (as
    # measured: 1375-1520 pages/s at 150-200 ms for this guest's 1953)
    assert model.Skew.calibrated(32767, 0.1, 0.9, seen, t).writes_per_s < 0.85 * 1953


def test_the_skewed_forecast_uses_the_last_rounds_set_not_one_rate():
    m = {"iperf3_mbps": 233.0, "image_bytes": 128 << 20, "source_kind": "workload",
         "pages_sent_per_round": [32768, 3055, 758], "zero_pages_per_round": [7667, 0, 0],
         "dirty_pages_per_round": [3055, 758, 758], "round_seconds": [3.53, 0.43],
         "rtt_measured_ms": 2.05, "resume_ms": 16.9, "source_verify_ms": 34.2,
         "downtime_target_ms": 300.0, "max_rounds": 30}
    inp = model.inputs_from(m)
    assert inp.skew is not None
    f = model.forecast(inp)
    assert f.rounds == 3 and abs(f.downtime_ms - 153.7) / 153.7 < 0.2  # measured: 153.7
    uniform = model.forecast(model.inputs_from(m | {"source_kind": "pid"}))
    assert uniform.downtime_ms < f.downtime_ms  # one rate misses the hot set's share
    # a burst member whose share at its end is a tenth of its average decides at that rate:
    # the 3.1 MB left after round 1 no longer fit 300 ms, so it pre-copies more rounds
    slow_end = model.forecast(model.inputs_from(m | {"final_share_mbps": 23.3}))
    assert slow_end.rounds > f.rounds


def test_a_path_curve_gives_slow_start_then_the_steady_rate():
    # iperf3 from cold at 200 ms: 2, 14, 28 MB by the end of seconds 1-3, then 30 MB/s
    curve = model.PathCurve(((1.0, 2e6), (2.0, 14e6), (3.0, 28e6)), 30e6)
    assert curve.time_for(0) == 0 and math.isclose(curve.time_for(1e6), 0.5)
    assert math.isclose(curve.time_for(8e6), 1.5)  # inside the run: interpolated
    assert math.isclose(curve.time_for(88e6), 5.0)  # beyond it: the steady rate
    m = {"iperf3_mbps": 60.0, "iperf3_steady_mbps": 240.0,
         "iperf3_delivered": [[1.0, 2e6], [2.0, 14e6], [3.0, 28e6]],
         "pages_sent_per_round": [21484, 100], "round_seconds": [5.2, 0.4],
         "dirty_pages_per_round": [100, 20], "rtt_measured_ms": 200.0}
    inp = model.inputs_from(m)
    assert inp.curve == curve and inp.rate_bytes_s == 30e6  # later rounds: steady
    assert math.isclose(inp.first_round_s(), 5.0, rel_tol=1e-3)  # not 88 MB / 7.5 MB/s
    flat = model.inputs_from(m | {"iperf3_delivered": None})
    assert flat.curve is None and math.isclose(flat.first_round_s(), 21484 * 4096 / 7.5e6)
    # a migration sharing its path (a burst) keeps its fair share: no cold-start curve
    assert model.inputs_from(m | {"fair_share_mbps": 100.0}).curve is None

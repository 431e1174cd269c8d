import math

import pytest

from testbed import predict


def test_single_round_is_plain_copy():
    p = predict.precopy(1e9, 1e8, 0.0, rounds=1)
    assert math.isclose(p.migration_time_s, 10.0)
    assert math.isclose(p.downtime_ms, 10_000.0)  # n = 0: everything after the stop


def test_converging_precopy_matches_closed_form():
    v, r, d, rounds = 4e9, 1.25e8, 2.5e7, 5  # lambda = 0.2
    p = predict.precopy(v, r, d, rounds)
    series = sum(v * 0.2 ** k / r for k in range(rounds))
    assert math.isclose(p.migration_time_s, series, rel_tol=1e-12)
    assert math.isclose(p.downtime_ms, v * 0.2 ** 4 / r * 1000, rel_tol=1e-12)


def test_lambda_one_and_deviation_flags():
    p = predict.precopy(1e9, 1e8, 1e8, rounds=3)
    assert math.isclose(p.migration_time_s, 30.0)
    assert predict.flagged(predict.deviation(13.0, 10.0))
    assert not predict.flagged(predict.deviation(11.0, 10.0))
    assert predict.deviation(1.0, 0.0) is None
    with pytest.raises(ValueError):
        predict.precopy(1e9, 0, 0, 1)

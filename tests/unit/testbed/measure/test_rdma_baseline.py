"""ib_write_bw's report parsed into Mbit/s, and the machine's CPU time from /proc/stat."""

import pytest

from testbed.measure import cpustat
from testbed.measure.rdma_baseline import parse

# the end of `ib_write_bw -d tbrxeNs -s 1048576 -D 2 -F --report_gbits` between two rxe
# devices as the rdma kind's integration test printed it (TCG VM, 100 Mbit/s pair link)
MEASURED = """\
---------------------------------------------------------------------------------------
 #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]
 1048576    19           0.000000            0.079546            0.000009
---------------------------------------------------------------------------------------
"""
# perftest's warning when CPU frequencies differ, printed between the header and the row
WARNING = ("Conflicting CPU frequency values detected: 2394.454000 != 2394.459000. "
           "CPU Frequency is not max.")
HEADER = " #bytes     #iterations    BW peak[Gb/sec]    BW average[Gb/sec]   MsgRate[Mpps]"
GBITS = MEASURED.replace(HEADER, HEADER + "\n" + WARNING)


def test_the_average_of_the_result_row_in_mbit_s():
    expected = {"message_bytes": 1048576, "iterations": 19, "peak_mbps": 0.0,
                "ib_write_bw_mbps": 79.546}
    assert parse(MEASURED) == expected
    assert WARNING in GBITS and parse(GBITS) == expected


# the same run's report where perftest's cycle clock failed under TCG (before-A2, 2026-12-02)
CLOCK_FAILED = MEASURED.replace("19           0.000000            0.079546            0.000009",
                                "28           0.000000            0.000000            0.000000")


def test_an_average_of_zero_with_iterations_done_is_taken_from_the_iterations():
    r = parse(CLOCK_FAILED, seconds=3)
    assert r["rate_from"] == "iterations" and r["iterations"] == 28
    assert r["ib_write_bw_mbps"] == pytest.approx(28 * 1048576 * 8 / 3 / 1e6, abs=1e-3)
    assert parse(CLOCK_FAILED)["ib_write_bw_mbps"] == 0.0  # no duration: as perftest said
    # where perftest's clock worked its figure stands, and the iterations agree with it
    ok = parse(MEASURED, seconds=2)
    assert "rate_from" not in ok and ok["ib_write_bw_mbps"] == 79.546
    assert ok["ib_write_bw_mbps"] == pytest.approx(19 * 1048576 * 8 / 2 / 1e6, rel=0.003)
    nothing = CLOCK_FAILED.replace(" 1048576    28 ", " 1048576    0 ")
    assert parse(nothing, seconds=3)["ib_write_bw_mbps"] == 0.0


def test_megabytes_per_second_are_mebibytes():
    text = (" #bytes     #iterations    BW peak[MB/sec]    BW average[MB/sec]   MsgRate[Mpps]\n"
            " 65536      5000             120.00             100.00             0.001600\n")
    r = parse(text)
    assert r["message_bytes"] == 65536 and r["ib_write_bw_mbps"] == pytest.approx(838.861, abs=1e-3)


def test_a_report_without_a_result_is_an_error_naming_what_it_said():
    cut = GBITS.split(" 1048576")[0] + " Failed to complete run\n"
    with pytest.raises(ValueError, match="no result row.*Failed to complete run"):
        parse(cut)
    with pytest.raises(ValueError, match="no result row"):
        parse("Couldn't connect to 10.0.0.2:18515\n")
    with pytest.raises(ValueError, match="reports in 'Kb/sec'"):
        parse(" #bytes #iterations BW peak[Kb/sec] BW average[Kb/sec]\n 1 2 3 4\n")


STAT = ("cpu  1000 50 400 9000 100 10 90 0 0 0\n"
        "cpu0 500 25 200 4500 50 5 45 0 0 0\n")


def test_machine_cpu_time_by_kind_and_its_difference():
    hz = __import__("os").sysconf("SC_CLK_TCK")
    a = cpustat.machine_cpu_s(STAT)
    assert a == {"user": 1050 / hz, "system": 400 / hz, "softirq": 100 / hz,
                 "idle": 9100 / hz}
    b = cpustat.machine_cpu_s(STAT.replace(" 400 ", " 500 ", 1).replace(" 90 ", " 290 ", 1))
    d = cpustat.since(a, b)
    assert d["system"] == round(100 / hz, 3) and d["softirq"] == round(200 / hz, 3)
    assert d["user"] == 0 and d["idle"] == 0
    with pytest.raises(ValueError, match="total line"):
        cpustat.machine_cpu_s("intr 1 2 3\n")
    live = cpustat.machine_cpu_s()
    assert live["idle"] > 0 and set(live) == {"user", "system", "softirq", "idle"}

"""The client probe's summary on synthetic records: loss, outage, locations, continuity."""

import json
import socket
import struct
import threading

import pytest

from agents.client import probe as cp

IV = 0.001  # 1 ms between requests
T0 = 100.0  # monotonic time of the first send
RTT = 0.0002


def rows(n, answer):
    """``answer(i) -> (counter, pid) | None`` for request i, sent at T0 + i ms."""
    out = []
    for i in range(n):
        a = answer(i)
        sent = T0 + i * IV
        out.append((i, sent) if a is None else (i, sent, sent + RTT, *a))
    return out


def test_clean_run():
    s = cp.summarize(rows(1000, lambda i: (10 + i, 42)), IV)
    assert s["requests"] == s["answered"] == 1000
    assert s["lost"] == 0 and s["loss_pct"] == 0.0
    assert s["achieved_interval_ms"] == pytest.approx(1.0)
    assert s["rtt_p50_ms"] == pytest.approx(0.2) and s["rtt_p99_ms"] == pytest.approx(0.2)
    assert s["locations"] == [42]
    assert s["switch_at_s"] is None and s["counter_continuity_ok"] is None
    assert s["counter_before"] is None and s["counter_after"] is None
    assert s["outage_ms"] is None and s["outage_start_s"] is None and s["outage_end_s"] is None
    assert s["gaps"] == [] and s["answers_from_old_after_switch"] == 0
    json.dumps(s)


def move(i, counter_after=None):
    """Old pid 1 answers requests 0..499, nothing for 500..539 (40 ms), pid 2 from 540."""
    if i < 500:
        return 1000 + i, 1
    if i < 540:
        return None
    return (counter_after if counter_after is not None else 1500) + (i - 540), 2


def test_move_with_a_40ms_gap_and_the_counter_carrying_on():
    s = cp.summarize(rows(1000, move), IV)
    assert s["lost"] == 40 and s["loss_pct"] == pytest.approx(4.0)
    assert s["locations"] == [1, 2]
    assert s["switch_at_s"] == pytest.approx(0.540 + RTT)
    assert s["outage_start_s"] == pytest.approx(0.500)
    assert s["outage_end_s"] == pytest.approx(0.540 + RTT)
    assert s["outage_ms"] == pytest.approx(40.2)
    assert s["outage_resolved"] is True
    assert s["outage_counter_before"] == 1499 and s["outage_counter_after"] == 1500
    assert s["counter_before"] == 1499 and s["counter_after"] == 1500
    assert s["counter_continuity_ok"] is True
    assert s["answers_from_old_after_switch"] == 0
    assert s["gaps"] == [[pytest.approx(0.5), pytest.approx(40.0)]]


def test_counter_reset_breaks_continuity():
    s = cp.summarize(rows(1000, lambda i: move(i, counter_after=0)), IV)
    assert s["locations"] == [1, 2]
    assert s["counter_before"] == 1499 and s["counter_after"] == 0
    assert s["counter_continuity_ok"] is False


def test_answers_from_the_old_pid_after_the_switch_are_counted():
    def split_brain(i):
        if i >= 600 and i % 10 == 0:
            return 5000 + i, 1  # the source kept answering some requests
        return move(i)

    s = cp.summarize(rows(1000, split_brain), IV)
    assert s["locations"] == [1, 2]
    assert s["answers_from_old_after_switch"] == 40
    assert s["counter_before"] == 1499  # the last before the switch, not a later one
    assert s["counter_continuity_ok"] is True


def test_longest_run_is_the_outage_and_gaps_are_sorted():
    lost = set(range(100, 103)) | set(range(300, 320)) | {500} | set(range(700, 710))
    s = cp.summarize(rows(1000, lambda i: None if i in lost else (i, 7)), IV)
    assert s["lost"] == len(lost)
    assert s["outage_start_s"] == pytest.approx(0.3)
    assert s["outage_ms"] == pytest.approx(20.2)
    assert [g[1] for g in s["gaps"]] == pytest.approx([20.0, 10.0, 3.0])  # no single loss
    assert s["locations"] == [7] and s["switch_at_s"] is None


def test_outage_at_the_end_is_unresolved():
    s = cp.summarize(rows(100, lambda i: None if i >= 90 else (i, 7)), IV)
    assert s["outage_start_s"] == pytest.approx(0.09)
    assert s["outage_ms"] is None and s["outage_end_s"] is None
    assert s["outage_resolved"] is False
    assert s["outage_counter_before"] == 89 and s["outage_counter_after"] is None


def test_outage_ends_at_the_earliest_answer_after_it():
    r = rows(100, lambda i: None if 40 <= i < 50 else (i, 7))
    r[50] = (50, r[50][1], r[50][1] + 0.005, 50, 7)  # reordered: 51's answer came first
    s = cp.summarize(r, IV)
    assert s["outage_end_s"] == pytest.approx(0.051 + RTT)
    assert s["outage_counter_before"] == 39 and s["outage_counter_after"] == 51


def test_records_columns_round_trip_and_grow():
    rec = cp.Records(2)
    for i in range(5):
        assert rec.add(T0 + i) == i
    rec.answer(3, T0 + 3.1, 9, 77)
    assert len(rec) == 5
    assert rec[3] == cp.Record(3, T0 + 3, T0 + 3.1, 9, 77)
    assert rec[0] == cp.Record(0, T0) and rec[0].pid is None
    assert cp.summarize(rec, 1.0) == cp.summarize(list(rec), 1.0)
    with pytest.raises(IndexError):
        rec[5]


def test_empty():
    s = cp.summarize([], IV)
    assert s["requests"] == 0 and s["loss_pct"] == 0.0 and s["outage_ms"] is None


def test_run_against_a_local_echo_keeps_its_schedule():
    """run() end to end, with a stand-in for the workload's service in a thread."""
    srv = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    srv.bind(("127.0.0.1", 0))
    srv.settimeout(0.1)
    target = srv.getsockname()
    done = threading.Event()

    def serve():
        n = 0
        while not done.is_set():
            try:
                data, peer = srv.recvfrom(64)
            except TimeoutError:
                continue
            n += 1
            srv.sendto(b"C" + struct.pack("<QI", n, 4242) + data[1:17], peer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        res = cp.run(target, 0.002, duration_s=0.5, bind="127.0.0.1", timeout_s=0.2)
    finally:
        done.set()
        t.join()
        srv.close()
    assert res["target"] == list(target) and res["bind"] == "127.0.0.1"
    assert res["interval_ms"] == 2.0 and res["timeout_ms"] == 200.0
    assert res["requests"] + res["skipped_slots"] == 250
    assert res["answered"] == res["requests"] - res["late"]
    assert res["locations"] == [4242]
    assert 1.9 < res["achieved_interval_ms"] < 2.5
    assert res["duplicates"] == 0 and res["send_errors"] == 0


def test_run_stops_on_the_event():
    stop = threading.Event()
    threading.Timer(0.2, stop.set).start()
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sink:
        sink.bind(("127.0.0.1", 0))  # never answers
        res = cp.run(sink.getsockname(), 0.001, stop=stop, timeout_s=0.05)
    assert 100 < res["requests"] < 300
    assert res["answered"] == 0 and res["loss_pct"] == 100.0
    assert res["outage_resolved"] is False and res["locations"] == []


def test_cli_arguments():
    args = cp.build_parser().parse_args(["--target", "[::1]:7", "--interval-ms", "2"])
    assert args.target == ("::1", 7) and args.interval_ms == 2.0 and args.timeout_ms == 1000.0
    with pytest.raises(SystemExit):
        cp.build_parser().parse_args(["--target", "nohost"])

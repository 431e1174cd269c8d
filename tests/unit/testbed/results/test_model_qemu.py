"""QEMU's model (its 7.2 stop rule), the report's dispatch to it, the side-by-side section."""

import math

from agents.qemu.driver import _reason
from testbed.results import figures, side_by_side
from testbed.results import model_qemu as predict_qemu

MB = 1e6


def _inp(**kw) -> predict_qemu.QemuInputs:
    base = {"volume_bytes": 150 * MB, "rate_bytes_s": 30 * MB, "dirty_bytes_s": 1 * MB,
            "qemu_bandwidth_bytes_s": 30 * MB, "downtime_limit_ms": 300, "max_rounds": 30}
    return predict_qemu.QemuInputs(**(base | kw))


def test_downtime_sits_just_under_the_limit_however_little_is_dirtied():
    # QEMU stops with up to a threshold's worth of the current pass unsent
    for dirty in (0.0, 0.2 * MB, 1 * MB):
        f = predict_qemu.forecast(_inp(dirty_bytes_s=dirty))
        assert 250 <= f.downtime_ms < 300, (dirty, f)
    idle = predict_qemu.forecast(_inp(dirty_bytes_s=0.0))
    assert idle.rounds == 3  # the setup's sync, the first pass's, the stop's
    assert math.isclose(idle.migration_time_s, 5.0)
    busy = predict_qemu.forecast(_inp(dirty_bytes_s=1 * MB))
    assert busy.rounds == 4 and busy.migration_time_s > 5.0  # one short pass re-sends 5 MB


def test_a_guest_smaller_than_the_threshold_stops_at_once_and_the_limit_forces():
    tiny = predict_qemu.forecast(_inp(volume_bytes=3 * MB))
    assert tiny.rounds == 2 and math.isclose(tiny.downtime_ms, 100.0)
    forced = predict_qemu.forecast(_inp(dirty_bytes_s=29 * MB, max_rounds=6))
    assert forced.rounds == 6 and forced.downtime_ms >= 300  # everything left, unbounded


def _qemu_result(**kw) -> dict:
    iters = [{"iteration": 1, "dirty_pages_rate": 0, "mbps": 0},
             {"iteration": 2, "dirty_pages_rate": 250, "mbps": 240.0},
             {"iteration": 4, "dirty_pages_rate": 250, "mbps": 240.0}]
    return {"hypervisor": "qemu", "completed": True, "integrity_ok": True,
            "migration_time_s": 5.2, "downtime_ms": 270, "rounds": 4, "dirty_sync_count": 4,
            "pages_sent_per_round": [36621, 300, 0], "page_size": 4096, "iterations": iters,
            "iperf3_mbps": 240.0, "downtime_limit_ms": 300, "max_iterations": 30,
            "setup_time_ms": 3, "bytes_on_wire": 155 * MB, "image_bytes": 192 * 2**20,
            "accel": "tcg", "guest": {"heartbeat_continued": True},
            "compare_at": "RTT 1 ms", "case": "qemu @ 1 ms", "downtime_target_ms": 300} | kw


def test_report_uses_qemus_rule_for_qemu_results():
    m = _qemu_result()
    inp = predict_qemu.inputs_from(m)
    assert inp is not None and inp.volume_bytes == 36621 * 4096
    assert math.isclose(inp.dirty_bytes_s, 250 * 4096)
    assert math.isclose(inp.qemu_bandwidth_bytes_s, 30e6)
    p = figures.prediction_for(m)
    assert p is not None and "QEMU" in p["stop_rule"] and p["rounds"] == 4
    assert abs(p["deviation_downtime"]) < 0.2
    assert figures.prediction_for(m | {"completed": False}) is None
    assert predict_qemu.inputs_from(m | {"pages_sent_per_round": []}) is None


def _agents_result(**kw) -> dict:
    return {"hypervisor": "agents", "completed": True, "integrity_ok": True,
            "migration_time_s": 1.9, "downtime_ms": 310, "rounds": 3,
            "pages_sent_per_round": [16384, 800, 40], "zero_pages_per_round": [0, 0, 0],
            "round_seconds": [1.5, 0.1, 0.01], "dirty_pages_per_round": [800, 40, 2],
            "iperf3_mbps": 240.0, "downtime_target_ms": 300, "max_rounds": 30,
            "bytes_on_wire": 68 * MB, "image_bytes": 64 * 2**20, "rtt_measured_ms": 1.1,
            "transport_choice": "bdp-buffers", "compare_at": "RTT 1 ms",
            "case": "bdp-buffers @ 1 ms"} | kw


def _doc(migs: list[dict]) -> dict:
    return {"spec": {"name": "ld", "kind": "long-distance"},
            "variants": [{"migrations": migs}]}


def test_side_by_side_section_only_when_both_ran_and_says_why_they_differ():
    assert side_by_side.section(_doc([_agents_result()])) == []
    lines = side_by_side.section(_doc([_qemu_result(), _agents_result()]))
    text = "\n".join(lines)
    rows = [ln for ln in lines if ln.startswith("| RTT 1 ms")]
    assert len(rows) == 2 and "agents" in rows[0] and "qemu (tcg)" in rows[1]
    for why in ("*Bytes.*", "*Downtime*", "*Switchover rule", "*TCP buffers.*", "TCG",
                "threshold_size = bandwidth x downtime_limit"):
        assert why in text, why
    assert "155 MB on the wire" in text and "68 MB" in text
    failed = side_by_side.section(_doc([_qemu_result(completed=False), _agents_result()]))
    assert any("**failed**" in ln for ln in failed)
    assert "Only one side completed" in "\n".join(failed)


def test_switchover_reason():
    assert _reason({"status": "failed"}, None, None) is None
    assert _reason({"status": "completed"}, None, None).startswith("converged")
    assert _reason({"status": "completed"}, None, 3.0).startswith("max-rounds")
    assert _reason({"status": "completed"}, 1.0, None) == "postcopy"


def test_the_stop_and_copy_waits_behind_the_socket_backlog():
    # 6 MB unsent at the stop at 30 MB/s: 200 ms more downtime, the total unchanged
    bare, queued = predict_qemu.forecast(_inp()), predict_qemu.forecast(_inp(backlog_bytes=6 * MB))
    assert math.isclose(queued.downtime_ms - bare.downtime_ms, 200.0)
    assert queued.migration_time_s == bare.migration_time_s
    # what the measured queue means: unsent bytes, or unacknowledged beyond a round trip
    assert predict_qemu.backlog({"send_q_bytes": 9e6, "notsent_bytes": 1e6}, 30 * MB, 0.2) \
        == 3e6
    assert predict_qemu.backlog({"send_q_bytes": 5e6, "notsent_bytes": 1e6}, 30 * MB, 0.2) \
        == 1e6
    assert predict_qemu.backlog(None, 30 * MB, 0.2) == 0.0


def test_what_qemu_wrote_after_its_last_poll_before_the_stop():
    polls = [[100.0, 50e6, 9e6, 240.0, 1], [100.05, 60e6, 4e6, 240.0, 2],
             [100.2, 70e6, 0, 240.0, 4]]
    m = {"source_stopped_at_unix": 100.1, "bytes_on_wire": 66e6, "polls": polls}
    # written after the poll at 100.05, whose count had moved since the one before
    assert predict_qemu.written_after_last_poll(m) == (6e6, False)
    # a count standing still at that poll: QEMU's writes were blocked on a full socket
    still = [[100.0, 60e6, 9e6, 240.0, 1], *polls[1:]]
    assert predict_qemu.written_after_last_poll(m | {"polls": still}) == (6e6, True)
    assert predict_qemu.written_after_last_poll(m | {"polls": []}) is None
    assert predict_qemu.written_after_last_poll(m | {"source_stopped_at_unix": 99.0}) is None

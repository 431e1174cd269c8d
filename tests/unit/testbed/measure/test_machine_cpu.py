"""The machine's CPU over a migration's or a burst's window, and how the report shows it."""

from testbed.measure.cpustat import MachineCpuSampler
from testbed.results import report
from testbed.results.documents import Document
from testbed.run.runner import note_machine_cpu


def _sampler(busy_per_s: list[float]) -> MachineCpuSampler:
    """Two CPUs sampled once a second, busy (all user time) ``busy_per_s`` of each second."""
    s = MachineCpuSampler()
    cpu = {"user": 0.0, "system": 0.0, "softirq": 0.0, "idle": 0.0}
    s.add(0.0, dict(cpu))
    for i, busy in enumerate(busy_per_s, start=1):
        cpu = cpu | {"user": cpu["user"] + 2 * busy, "idle": cpu["idle"] + 2 * (1 - busy)}
        s.add(float(i), dict(cpu))
    return s


def test_a_window_is_read_from_the_samples_around_it():
    s = _sampler([0.5, 1.0, 1.0, 0.2])
    w = s.window(1.0, 3.0)
    assert w["busy"] == 1.0 and w["user"] == 1.0 and w["saturated"]
    assert w["seconds"] == 2.0
    w = s.window(0.5, 3.5)  # widened to the samples outside it: 0 .. 4
    assert w["busy"] == round((0.5 + 1 + 1 + 0.2) / 4, 3) and not w["saturated"]
    assert s.window(-1.0, 2.0) is None and s.window(3.0, 9.0) is None


def test_migrations_and_bursts_get_their_windows():
    s = _sampler([0.1, 0.1, 1.0, 1.0, 1.0, 0.1])
    a = {"case": "a", "monotonic_s": {"round0": 2.0, "pause": 3.0, "decided": 4.0}}
    b = {"case": "b", "monotonic_s": {"round0": 2.0, "pause": 4.0, "decided": 5.0}}
    qemu = {"case": "q"}  # no stamps: nothing said
    burst = {"concurrency": 2, "migrations": [a, b]}
    variant = {"paths": [{"bursts": [burst]}], "migrations": [a, b, qemu]}
    note_machine_cpu(variant, s)
    assert a["machine_cpu"]["busy"] == 1.0 and b["machine_cpu"]["busy"] == 1.0
    assert burst["machine_cpu"]["seconds"] == 3.0
    assert "machine_cpu" not in qemu and "machine_cpu" not in variant


def _doc(*busy: float) -> Document:
    migs = []
    for i, x in enumerate(busy):
        migs.append({"case": f"m{i}", "completed": True, "integrity_ok": True,
                     "downtime_ms": 120.0, "migration_time_s": 2.0, "iperf3_mbps": 95.0,
                     "pages_sent_per_round": [1000, 100, 10], "zero_pages_per_round": [0] * 3,
                     "round_seconds": [0.4, 0.05], "dirty_pages_per_round": [100, 10, 5],
                     "image_bytes": 4096000,
                     "machine_cpu": {"busy": x, "saturated": x >= 0.9, "saturated_at": 0.9}})
    return Document.from_json({"spec": {"name": "x", "kind": "smoke"}, "environment": {},
                               "variants": [{"migrations": migs}]})


def test_the_report_says_which_migrations_ran_on_a_saturated_machine():
    lines = report.migration_table(_doc(0.95, 0.5, 0.7))
    assert any("| **95%** |" in row for row in lines)
    assert any("| 50% |" in row for row in lines)
    assert "1 of 3 migrations ran while this machine's CPUs were 90 % busy" in lines[-1]
    assert "No migration" in report.migration_table(_doc(0.3))[-1]

"""The rdma kind's report section, verdicts and plot, from a canned document alone."""

import copy
import json

import pytest

from testbed.results import report
from testbed.results.documents import Document, load
from testbed.results.kinds import rdma


def mig(transport, rtt, loss, goodput, base, dst_user, dst_sys, ok=True, dropped=None):
    m = {"case": f"{transport} @ {rtt:g} ms, {loss:g} %", "transport_choice": transport,
         "rtt_ms": rtt, "loss_pct": loss, "completed": ok, "integrity_ok": ok,
         "image_bytes": 8 << 20, "rounds": 2, "migration_time_s": 1.5, "downtime_ms": 250.0,
         "goodput_mbps": goodput if ok else 0.0,
         "baseline_tool": "iperf3" if transport == "tcp" else "ib_write_bw",
         "baseline_mbps": base, "goodput_vs_baseline": round(goodput / base, 3) if ok else None,
         "iperf3_mbps": 95.0, "hypervisor": "agents",
         "bottleneck_drop_pct": float(loss if dropped is None else dropped)}
    cpu = {"src_user": 0.5, "src_system": 0.3, "dst_user": dst_user, "dst_system": dst_sys,
           "src_copy_user": 0.4, "src_copy_system": 0.2,
           "dst_copy_user": dst_user / 2, "dst_copy_system": dst_sys / 2,
           "dst_verify": dst_user / 4, "dst_setup": dst_sys / 4, "dst_commit": dst_sys / 8,
           "machine_system": 2.0, "machine_softirq": 0.7 if transport == "rdma" else 0.1}
    m |= {f"{k}_s_per_gb": (v if ok else None) for k, v in cpu.items()}
    if not ok:
        m["error"] = "transport retry counter exceeded"
    return m


MIGS = [mig("tcp", 0, 0, 90.0, 95.0, 0.40, 0.20),
        mig("rdma", 0, 0, 36.0, 40.0, 0.06, 0.02, dropped=7.5),
        mig("tcp", 0, 1, 60.0, 70.0, 0.40, 0.20), mig("rdma", 0, 1, 10.0, 30.0, 0.3, 0.1),
        mig("tcp", 10, 0, 80.0, 90.0, 0.40, 0.20), mig("rdma", 10, 0, 85.0, 88.0, 0.1, 0.1),
        mig("tcp", 10, 1, 50.0, 60.0, 0.40, 0.20), mig("rdma", 10, 1, 0, 20.0, 0, 0, ok=False)]
POINTS = [{"rtt_ms": r, "loss_pct": x, "ping": {"rtt_p50_ms": r + 0.2}}
          for r in (0, 10) for x in (0, 1)]


def document(virt="qemu", where="vm", migs=MIGS):
    return {"spec": {"name": "rd", "kind": "rdma", "bw_mbps": 100.0, "queue_pkts": 1000},
            "status": "completed",
            "environment": {"kernel": "6.1.0", "mode": where,
                            "placement": {"where": where, "why": "test", "missing": []}},
            "variants": [{"sweep_point": {}, "repetition": 0, "virtualization": virt,
                          "points": POINTS, "migrations": migs}]}


def test_the_table_has_a_row_per_point_and_transport_and_failed_is_failed():
    doc = Document.from_json(document())
    lines = rdma.section(doc)
    rows = [ln for ln in lines if ln.startswith("| ") and "transport |" not in ln]
    assert len(rows) == 8
    assert rows[0].startswith("| 0 (0.20) | 0 | tcp | 0.00 | iperf3 95.0 | 90.0 | 0.95 |")
    assert "| rdma | 7.50 | ib_write_bw 40.0 | 36.0 | 0.90 |" in rows[1]
    assert "0.060 / 0.020" in rows[1] and "2.000 / 0.700" in rows[1]
    # each end's copy phase (user + system), then the destination's check within it
    assert "| 0.600 / 0.040 | 0.015 |" in rows[1]
    assert "| 0.600 / 0.300 | 0.100 |" in rows[0]
    bad = rows[-1]
    assert "| 10 (10.20) | 1 | rdma | 1.00 |" in bad and "**failed**" in bad
    assert "| failed | failed |" in bad and " 0.0 |" not in bad
    assert "| failed / failed | failed |" in bad


def test_a_baseline_taken_from_perftests_iterations_is_marked():
    doc = copy.deepcopy(document())
    doc["variants"][0]["points"][0]["ib_write_bw"] = {"ib_write_bw_mbps": 40.0,
                                                      "rate_from": "iterations"}
    text = "\n".join(rdma.section(Document.from_json(doc)))
    assert "| rdma | 7.50 | ib_write_bw 40.0 (iterations) | 36.0 |" in text
    assert text.count("(iterations)") == 2 and "cycle clock failed" in text
    assert "(iterations)" not in "\n".join(rdma.section(Document.from_json(document())))


def test_the_verdicts_from_the_document():
    lines = rdma.verdict_lines(document()["variants"][0])
    text = "\n".join(lines)
    assert "unimpaired point (RTT 0 ms, loss 0 %): **0.90** of ib_write_bw's 40.0 Mbit/s" in text
    assert "target >= 0.9: met" in text
    # destination process CPU: 0.08 vs 0.60 s/GB
    assert "RDMA 0.080 vs TCP 0.600 s/GB = **0.13 x**" in text and "<= 0.2 x: met" in text
    assert "its system time RDMA 0.020, TCP 0.200 s/GB" in text
    assert "the figure issue 18's target is judged on" in text
    # whole run 0.08 / 0.60; copy phase half of it; the check a quarter of the user time
    assert "of the destination's 0.080 (RDMA) and 0.600 (TCP) s/GB, the copy phase" in text
    assert "took 0.040 and 0.300; within it the integrity check" in text
    assert "0.015 and 0.100; the transfer itself (the copy phase less the check) 0.025 " \
           "(RDMA) vs 0.200 (TCP) s/GB = 0.12 x" in text
    # set-up 0.005 / 0.050, commit 0.0025 / 0.025, the rest of 0.08 / 0.6
    assert "the RDMA region) 0.005 and 0.050, the commit" in text
    assert "to the decision) 0.003 and 0.025, the rest" in text
    assert "after the decision) 0.033 and 0.225." in text
    assert "softirq RDMA 0.700, TCP 0.100 s/GB" in text
    assert "- RTT 0 ms: RDMA falls below TCP from 0 % loss." in lines
    assert "- RTT 10 ms: RDMA falls below TCP from 1 % loss." in lines  # it failed there
    # an overflowing queue is said; the configured loss alone is not
    assert "- rdma @ 0 ms, 0 %: **7.50 %** of its packets dropped at the bottleneck where 0 % " \
           "loss was set: the queue overflowed." in lines
    assert sum("overflowed" in ln for ln in lines) == 1


def test_rdma_not_below_tcp_and_targets_not_met_are_said():
    migs = [mig("tcp", 5, 0, 50.0, 95.0, 0.1, 0.1), mig("rdma", 5, 0, 60.0, 100.0, 0.3, 0.1),
            mig("tcp", 5, 0.1, 0, 90.0, 0, 0, ok=False),
            mig("rdma", 5, 0.1, 0, 90.0, 0, 0, ok=False)]
    text = "\n".join(rdma.verdict_lines(document(migs=migs)["variants"][0]))
    assert "**0.60** of ib_write_bw's 100.0 Mbit/s (issue 18's target >= 0.9: **not met**)" \
        in text
    assert "= **2.00 x** (issue 18's target <= 0.2 x: **not met**)" in text
    assert "RTT 5 ms: RDMA falls below TCP at no loss measured (not comparable at 0.1 %" in text
    assert rdma.below_tcp(migs[0], None) is None
    assert rdma.below_tcp(migs[2], migs[1]) is False  # TCP failed, RDMA did not


def test_whose_cpu_the_figures_are_is_said():
    tcg = "\n".join(rdma.section(Document.from_json(document())))
    assert "under software emulation (QEMU TCG" in tcg and "emulator's" in tcg
    assert "not charge to the destination process" in tcg
    assert "Bottleneck queue: 1000 packets at every point" in tcg
    unknown = "\n".join(rdma.section(Document.from_json(document(virt=None))))
    assert "in the full-kernel VM (accelerator not recorded): under TCG every CPU figure is " \
           "the emulator's" in unknown
    native = "\n".join(rdma.section(Document.from_json(document(virt="none", where="native"))))
    assert "natively on kernel 6.1.0" in native and "emulator" not in native


def test_the_report_and_plot_are_made_from_the_document_alone(tmp_path):
    (tmp_path / "rd.json").write_text(json.dumps(document() | {"duration_s": 12.0}))
    docs = load(tmp_path)
    made = rdma.plot(docs[0], tmp_path)
    assert [p.name for p in made] == ["rd-0-tcp-vs-rdma.png"] and made[0].stat().st_size > 1000
    path = report.write_report(tmp_path, docs, made)
    text = path.read_text()
    assert "## rd (rdma)" in text and "RDMA falls below TCP" in text
    assert "![rd-0-tcp-vs-rdma](rd-0-tcp-vs-rdma.png)" in text
    assert "**1 migration(s) failed or were not verified:** rdma @ 10 ms, 1 %" in text


def test_the_destinations_cpu_split_and_what_is_missing():
    m = mig("rdma", 0, 0, 36.0, 40.0, 0.4, 0.2)
    assert rdma.dst_split(m) == pytest.approx({"total": 0.6, "copy": 0.3, "verify": 0.1,
                                               "transfer": 0.2, "setup": 0.05,
                                               "commit": 0.025, "rest": 0.225})
    old = {k: v for k, v in m.items()
           if not any(p in k for p in ("copy", "verify", "setup", "commit"))}
    assert rdma.dst_split(old) == {"total": rdma.dst_split(m)["total"], "copy": None,
                                   "verify": None, "transfer": None, "setup": None,
                                   "commit": None, "rest": None}
    failed_ = mig("rdma", 0, 0, 0, 40.0, 0, 0, ok=False)
    assert set(rdma.dst_split(failed_).values()) == {None}
    migs = [mig("tcp", 0, 0, 90.0, 95.0, 0.4, 0.2), old]
    text = "\n".join(rdma.verdict_lines(document(migs=migs)["variants"][0]))
    assert "by phase: not measured for both transports" in text

"""The rdma kind end to end: `testbed run` of a one-point spec (a TCP and an RDMA migration of
a small guest on one pair lab with a Soft-RoCE path), its document and report, and nothing of
the path left afterwards. Also covers what test_rdma.py's integrity + resume test checked
(the RDMA migration verified, resumed and serving at the destination, its pages crossing the
shaped link by WRITE), which it replaces."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from testbed.host import rxe
from testbed.lab.lab import Lab
from testbed.lab.roce import roce_path
from tests.helpers import run_spec
from topologies.pair import pair

pytestmark = [pytest.mark.integration, pytest.mark.needs("rdma_rxe", "netem")]

SPEC = '''
name = "rk"
kind = "rdma"
rtt_ms = [4]
loss_pct = [0]
bw_mbps = 100
baseline_seconds = 2
idle_timeout_s = 60
[migration]
workload_mib = 8
dirty_rate_mbs = 2
timeout_s = 300
'''


def nothing_left(devices: set[str]) -> None:
    """No rxe link, anchor veth, rule 1818 or path record of ours is left."""
    names = {x["ifname"].split("/")[0] for x in rxe.rxe_links()}
    assert not names & devices, f"rxe links left: {names & devices}"
    links = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True).stdout
    assert rxe.LINK_PREFIX not in links, links
    rules = subprocess.run(["ip", "rule", "show"], capture_output=True, text=True).stdout
    assert f"{rxe.RULE_PREF}:" not in rules and rules.startswith("0:"), rules
    assert not list(rxe.RECORD_DIR.glob("*.json")) if rxe.RECORD_DIR.is_dir() else True


def test_rdma_kind_runs_both_transports_and_leaves_no_path(tmp_path):
    doc, out = run_spec(tmp_path, SPEC)
    (variant,) = doc["variants"]
    (point,) = variant["points"]
    assert point["iperf3"]["iperf3_mbps"] > 0
    assert (point["ib_write_bw"]["ib_write_bw_mbps"] or 0) > 0, point["ib_write_bw"]
    assert point["ping"]["rtt_p50_ms"] >= 4
    tcp, rdma = variant["migrations"]
    assert [tcp["transport_choice"], rdma["transport_choice"]] == ["tcp", "rdma"]
    for m in (tcp, rdma):
        assert m["completed"] and m["integrity_ok"], m.get("error")
        assert m["goodput_mbps"] > 0 and m["goodput_vs_baseline"] > 0
        for k in ("src_user", "src_system", "dst_user", "dst_system", "machine_system",
                  "machine_softirq"):
            assert m[f"{k}_s_per_gb"] is not None and m[f"{k}_s_per_gb"] >= 0, k
        assert m["dst_user_s_per_gb"] + m["dst_system_s_per_gb"] > 0
        # where the CPU went: each end's copy phase, the destination's check within it
        copy = m["dst_copy_user_s_per_gb"] + m["dst_copy_system_s_per_gb"]
        assert m["src_copy_user_s_per_gb"] + m["src_copy_system_s_per_gb"] > 0
        assert 0 < m["dst_verify_s_per_gb"] <= copy + 0.5, m
        assert copy <= m["dst_user_s_per_gb"] + m["dst_system_s_per_gb"] + 0.5, m
        assert m["dst_setup_s_per_gb"] >= 0 and m["dst_commit_s_per_gb"] >= 0
        assert m["destination_outcome"]["verified_batches"] >= 8  # every batch checked
        assert m["bottleneck_drops"] >= 0 and m["bottleneck_drop_pct"] is not None
        assert m["destination_outcome"]["ok"] and m["destination_outcome"]["decision"] == \
            "committed"
        # resumed at the destination, whose guest answered the source's probe and counted on
        assert m["resumed"] and m["counter_continuity_ok"] is True, m
        assert m["source_verified"] is not False
    assert tcp["baseline_tool"] == "iperf3" and tcp["transport"] == "tcp"
    assert rdma["baseline_tool"] == "ib_write_bw" and rdma["transport"].startswith("rdma+")
    assert rdma["baseline_mbps"] == point["ib_write_bw"]["ib_write_bw_mbps"]
    r = rdma["rdma"]
    assert r["device"] == point["rdma_path"]["source"]
    assert r["region_bytes"] >= rdma["image_bytes"]
    # most of the image went by WRITE, across the shaped link (not a loopback shortcut)
    assert r["bytes_written"] > 0.5 * rdma["image_bytes"]
    assert rdma["link_rx_bytes"] >= r["bytes_written"]
    assert tcp.get("rdma") is None and tcp["link_rx_bytes"] >= 0.5 * tcp["image_bytes"]
    report = (out / "report.md").read_text()
    print("\n".join(["ib_write_bw said:", *point["ib_write_bw"]["report"], ""]
                    + [ln for ln in report.splitlines() if ln.startswith(("|", "- RTT", "- RDMA",
                                                                          "- Dest", "This ran"))]))
    assert "| RTT ms (p50) | loss % | transport |" in report
    assert "RDMA migration goodput / ib_write_bw at the unimpaired point" in report
    assert "the figure issue 18's target is judged on" in report
    assert "within it the integrity check" in report and "the transfer itself" in report
    assert "RTT 4 ms: RDMA falls below TCP" in report
    assert "softirq" in report and (out / "rk-0-tcp-vs-rdma.png").stat().st_size > 0
    csv = (out / "rk.csv").read_text()
    assert "goodput_vs_baseline" in csv and "dst_user_s_per_gb" in csv
    nothing_left({point["rdma_path"]["source"], point["rdma_path"]["destination"]})
    # the document alone re-makes the report
    (out / "report.md").unlink()
    subprocess.run([sys.executable, "-m", "testbed", "report", str(out)], check=True,
                   capture_output=True, timeout=300)
    assert "at the unimpaired point" in (out / "report.md").read_text()
    assert json.loads((out / "rk.json").read_text())["status"] == "completed"


def test_a_lab_removes_its_roce_path_when_it_stops_on_an_error():
    devices: set[str] = set()
    with pytest.raises(RuntimeError, match="in the lab"), \
            Lab(pair(delay_ms=0, bw_mbps=50)) as lab:
        path = roce_path(lab, "h1", "h2")
        devices = {path.source.rxe, path.destination.rxe}
        assert devices <= {x["ifname"].split("/")[0] for x in rxe.rxe_links()}
        raise RuntimeError("an error in the lab")
    assert devices
    nothing_left(devices)

"""`testbed run` with QEMU guests in core-load and cloud-encrypted (small sizes; TCG guests
here); long-distance, agents and QEMU side by side: test_experiments.py."""

import pytest

from tests.helpers import run_spec

pytestmark = pytest.mark.integration


def _moved(m: dict) -> None:
    assert m["hypervisor"] == "qemu" and m["completed"], m.get("error")
    assert m["integrity_ok"], m["guest"]
    assert m["guest"]["destination_first_beat"] > m["guest"]["source_last_beat"] >= 1
    assert m["rounds"] == m["dirty_sync_count"] >= 2 and m["downtime_ms"] is not None
    assert m["bytes_on_wire"] >= 16 * 2**20  # the dirtier's random pages at least
    assert m["switchover_reason"].startswith("converged")


def test_core_load_with_a_burst_of_qemu_guests(tmp_path):
    doc, out = run_spec(tmp_path, '''
name = "clq"
kind = "core-load"
concurrency = [2]
paths = ["own-stack"]
background_mbps = 20
[migration]
hypervisor = "qemu"
workload_mib = 16
dirty_rate_mbs = 2
''')
    (path,) = doc["variants"][0]["paths"]
    (burst,) = path["bursts"]
    assert burst["hypervisor"] == "qemu" and len(burst["migrations"]) == 2
    for m in burst["migrations"]:
        _moved(m)
        # over the migration stack: the connection QEMU made used its address
        assert m["source_addresses_seen"] == [m["source_address"]], m
        assert m["fair_share_mbps"] and m["concurrency"] == 2
    assert len({m["src"] for m in burst["migrations"]}) == 2  # two hosts, one guest each
    moved = sum(s["bytes"] for s in burst["spines"].values())
    assert moved >= 0.5 * sum(m["bytes_on_wire"] for m in burst["migrations"]), moved
    assert "| own-stack | 2 QEMU |" in (out / "report.md").read_text()
    assert doc["variants"][0]["qemu_mapping"]["streams"]


def test_cloud_encrypted_qemu_through_the_gateway_with_tls(tmp_path):
    doc, out = run_spec(tmp_path, '''
name = "cq"
kind = "cloud-encrypted"
rtt_ms = 0
bw_mbps = 100
[migration]
hypervisor = "qemu"
workload_mib = 16
dirty_rate_mbs = 2
''')
    v = doc["variants"][0]
    public = v["public"].split(":")[0]
    plain, enc = v["migrations"]
    for m in (plain, enc):
        _moved(m)
        # the source connects to the gateway's public address; QEMU listens behind the NAT
        assert m["connect_uri"].startswith(f"tcp:{public}:") and m["uri"] != m["connect_uri"]
    assert not plain["encrypted"] and plain["wire"]["markers_found"] > 0
    assert enc["encrypted"] and enc["transport"] == "tls"
    assert enc["tls_hostname"] == "c-h1.cloud.test"
    assert enc["wire"]["markers_found"] == 0 and enc["wire"]["payload_bytes"] > 16 * 2**20
    assert v["isolation"]["isolated"]
    # the path's baseline: the median of three iperf3 runs through the published port
    runs = v["iperf3"]["runs_mbps"]
    assert len(runs) == 3 and v["iperf3"]["iperf3_mbps"] == sorted(runs)[1] > 50, runs
    assert "QEMU encrypted" in (out / "report.md").read_text()

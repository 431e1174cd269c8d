"""A topology file users write: in a spec (`testbed run`), and as a lab that stays up."""

import json
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from testbed.labctl import records

pytestmark = pytest.mark.integration

# h1 -- r1 -- h2: 80 Mbit/s from h1 into the router, the rest unshaped (no netem: native)
TRIANGLE = """\
name = "hrh"
[[node]]
name = "h1"
[[node]]
name = "r1"
role = "router"
[[node]]
name = "h2"
[[link]]
a = "h1"
b = "r1"
a_addr = "10.7.1.1/24"
b_addr = "10.7.1.254/24"
a_to_b = { bw_mbps = 80 }
[[link]]
a = "r1"
b = "h2"
a_addr = "10.7.2.254/24"
b_addr = "10.7.2.1/24"
[[route]]
node = "h1"
dst = "default"
via = "10.7.1.254"
[[route]]
node = "h2"
dst = "default"
via = "10.7.2.254"
"""


def tb(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "testbed", "--vm", "never", *args],
                          capture_output=True, text=True, timeout=timeout)


def test_a_smoke_spec_over_a_topology_file(tmp_path: Path):
    (tmp_path / "hrh.toml").write_text(TRIANGLE)
    spec = tmp_path / "over-file.toml"
    spec.write_text('name = "over-file"\nkind = "smoke"\n[topology]\nfile = "hrh.toml"\n'
                    '[measure]\nping_count = 10\niperf_seconds = 3\n')
    out = tmp_path / "out"
    res = tb("run", str(spec), "--out", str(out))
    assert res.returncode == 0, res.stdout[-2000:] + res.stderr[-2000:]
    doc = json.loads((out / "over-file.json").read_text())
    (variant,) = doc["variants"]
    topo = variant["topology"]
    assert topo["name"] == "hrh" and {n["name"] for n in topo["nodes"]} == {"h1", "r1", "h2"}
    assert variant["ping"]["loss_pct"] == 0  # h1 reached h2 through the router
    assert 40 < variant["iperf3"]["iperf3_mbps"] <= 80 * 1.1  # the file's 80 Mbit/s held
    # not one direct h1-h2 link: nothing "configured" to compare with is claimed
    assert variant["summary"]["configured_bw_mbps"] is None
    shaped = {(r["node"], r["dev"]) for r in variant["links"]}
    assert shaped == {("h1", "h1-eth0")}


def test_lab_up_a_topology_file_routes_through_its_router(tmp_path: Path):
    path = tmp_path / "hrh.toml"
    path.write_text(TRIANGLE)
    name = f"f-{uuid.uuid4().hex[:6]}"
    try:
        up = tb("lab", "up", str(path), "--name", name)
        assert up.returncode == 0, up.stderr
        trace = tb("lab", "exec", "-n", name, "h1", "--", "ping", "-c", "1", "-W", "2",
                   "-t", "1", "10.7.2.1")  # TTL 1: the router answers, so it is on the path
        assert trace.returncode != 0 and "10.7.1.254" in trace.stdout, trace.stdout
        ping = tb("lab", "exec", "-n", name, "h1", "--", "ping", "-c", "2", "-i", "0.2",
                  "10.7.2.1")
        assert ping.returncode == 0 and "ttl=63" in ping.stdout, ping.stdout
        snap = json.loads(tb("lab", "inspect", "-n", name, "--json").stdout)
        assert snap["topology"] == "hrh" and snap["params"]["file"] == str(path.resolve())
        bad = tb("lab", "up", str(path), "rtt_ms=3", "--name", f"{name}x")
        assert bad.returncode == 2 and "parameters" in bad.stderr
    finally:
        if records.load(name) is not None:
            assert tb("lab", "down", "-n", name).returncode == 0
    assert records.load(name) is None

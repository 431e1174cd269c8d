"""RDMA's iperf3: perftest's ``ib_write_bw`` between two lab nodes' RDMA devices, the baseline
an RDMA migration is held against as iperf3 is for TCP.

The server runs in one node and the client in the other; they exchange their queue pairs
over TCP to the server node's address, then the client RDMA-WRITEs 1 MiB messages for the
given seconds. A run that fails (a lossy path can exhaust RoCE's retries) is recorded as
failed (``ib_write_bw_mbps`` None, ``error``), never as 0. perftest times its runs in CPU
cycles at the clock rate it reads from the CPU; under TCG that reading sometimes fails and a
run of 28 completed 1 MiB WRITEs in 3 s reported 0.000000 Gb/sec. Such a rate is taken from
the completed iterations over the run's duration instead (``rate_from: "iterations"``; where
perftest's own figure is right the two agree within 0.3 %).
"""

from __future__ import annotations

import re
import subprocess
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..lab.lab import Lab

PERFTEST_PORT = 18515
MESSAGE_BYTES = 1 << 20
# perftest's units: Gb/sec is 10^9 bit/s (--report_gbits), MB/sec is 2^20 byte/s
_MBIT_PER_UNIT = {"Gb/sec": 1000.0, "MB/sec": 2**20 * 8 / 1e6}
_ROW = re.compile(r"^\s*(\d+)\s+(\d+)\s+([\d.]+)\s+([\d.]+)(?:\s+([\d.]+))?\s*$")


def parse(text: str, seconds: float | None = None) -> dict[str, Any]:
    """The result row of ``ib_write_bw``'s report: message bytes, iterations, peak and average
    bandwidth in Mbit/s. Lines between the header and the row (perftest's CPU-frequency
    warnings) are skipped; ValueError when the report has no result. An average of 0 with
    iterations completed in a run of ``seconds`` (``-D``) is perftest's clock failing: the
    rate is then the iterations' bytes over ``seconds``."""
    lines = text.splitlines()
    for i, line in enumerate(lines):
        head = re.search(r"BW average\[([^\]]+)\]", line)
        if not head:
            continue
        unit = head.group(1)
        if unit not in _MBIT_PER_UNIT:
            raise ValueError(f"ib_write_bw reports in {unit!r}, expected "
                             f"{' or '.join(_MBIT_PER_UNIT)}")
        for row in lines[i + 1:]:
            m = _ROW.match(row)
            if m:
                f = _MBIT_PER_UNIT[unit]
                out = {"message_bytes": int(m.group(1)), "iterations": int(m.group(2)),
                       "peak_mbps": round(float(m.group(3)) * f, 3),
                       "ib_write_bw_mbps": round(float(m.group(4)) * f, 3)}
                if out["ib_write_bw_mbps"] == 0 and out["iterations"] and seconds:
                    out["ib_write_bw_mbps"] = round(
                        out["iterations"] * out["message_bytes"] * 8 / seconds / 1e6, 3)
                    out["rate_from"] = "iterations"
                return out
        break
    raise ValueError("no result row in ib_write_bw's output: "
                     + " / ".join(ln.strip() for ln in lines[-4:] if ln.strip()))


def ib_write_bw(lab: Lab, client: str, server: str, server_ip: str, client_dev: str,
                server_dev: str, seconds: float = 5.0, message_bytes: int = MESSAGE_BYTES,
                port: int = PERFTEST_PORT) -> dict[str, Any]:
    """RDMA WRITE bandwidth from ``client``'s device ``client_dev`` to ``server``'s
    ``server_dev`` (``server_ip``: where the client reaches the server node)."""
    secs = max(1, round(seconds))
    common = ["-s", str(message_bytes), "-D", str(secs), "-F", "--report_gbits",
              "-p", str(port)]
    out: dict[str, Any] = {"tool": "ib_write_bw", "seconds": secs,
                           "message_bytes": message_bytes, "ib_write_bw_mbps": None}
    srv = lab.popen(server, ["ib_write_bw", "-d", server_dev, *common],
                    stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        _wait_listening(lab, server, port, srv)
        proc = lab.run(client, ["ib_write_bw", "-d", client_dev, *common, server_ip],
                       check=False, timeout=secs + 90)
    except (subprocess.TimeoutExpired, RuntimeError) as exc:
        return out | {"error": f"{type(exc).__name__}: {exc}"}
    finally:
        if srv.poll() is None:
            srv.kill()
        srv.wait()
    text = proc.stdout + proc.stderr
    out["report"] = proc.stdout.strip().splitlines()[-4:]  # its header and result row
    if proc.returncode != 0:
        return out | {"error": f"exit {proc.returncode}: {_tail(text)}"}
    try:
        return out | parse(proc.stdout, secs)
    except ValueError as exc:
        return out | {"error": str(exc)}


def _wait_listening(lab: Lab, node: str, port: int, server: Any, limit_s: float = 30.0) -> None:
    """Until the server listens for the client's TCP exchange (RuntimeError if it exits)."""
    deadline = time.monotonic() + limit_s
    while time.monotonic() < deadline:
        if server.poll() is not None:
            said = server.stdout.read() if server.stdout else ""
            raise RuntimeError(f"ib_write_bw server on {node} exited ({server.returncode}): "
                               f"{_tail(said)}")
        if lab.run(node, ["ss", "-Hltn", f"sport = :{port}"], check=False).stdout.strip():
            return
        time.sleep(0.1)
    raise RuntimeError(f"ib_write_bw server on {node} not listening on {port} after "
                       f"{limit_s:.0f} s")


def _tail(text: str) -> str:
    return " / ".join(ln.strip() for ln in text.strip().splitlines()[-4:])

"""Cloud site behind a NAT/firewall gateway: only the published migration port is reachable
from on-prem; the cloud's management plane is not (although on-prem has a route to it).

Runs on the host kernel (nftables; no netem: the WAN link is unimpaired here).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from testbed.lab import Lab
from topologies import build

pytestmark = pytest.mark.integration

CLIENT = """
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=1.5)
    s.sendall(b"ping\\n")
    s.settimeout(1.5)
    print(s.recv(64).decode().strip() or "closed")
except OSError as exc:
    print(type(exc).__name__)
"""
SERVER = """
import socket, sys, threading
def serve(port):
    ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind(("0.0.0.0", port)); ls.listen(16)
    while True:
        c, peer = ls.accept()
        c.recv(64); c.sendall(f"hello-{port}-from-{sys.argv[1]}-{peer[0]}".encode())
        c.close()
for p in sys.argv[2:]:
    threading.Thread(target=serve, args=(int(p),), daemon=True).start()
threading.Event().wait()
"""


def talk(lab: Lab, node: str, host: str, port: int) -> str:
    return lab.run(node, [sys.executable, "-c", CLIENT, host, str(port)]).stdout.strip()


def test_only_the_published_port_is_reachable_from_on_prem(testbed_lab):
    net = build("cloud", cloud_hosts=2, onprem_hosts=1, service_port=7000, stack_mode="policy")
    gw = net.gateways[0]
    c1 = net.stacks_of("c-h1")
    onprem = net.stacks_of("a-h1")["migration"].ip
    lab = testbed_lab(net)
    for host in ("c-h1", "c-h2"):  # the service, plus a port nothing publishes
        lab.popen(host, [sys.executable, "-c", SERVER, host, "7000", "22"],
                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for host in ("c-h1", "c-h2"):
        deadline = time.monotonic() + 10
        while "7000" not in lab.run(host, ["ss", "-Hltn"]).stdout:
            assert time.monotonic() < deadline
            time.sleep(0.05)
    # control: from inside the cloud, both planes answer (so failures below are the wall)
    assert talk(lab, "cgw", c1["management"].ip, 22).startswith("hello-22")
    assert talk(lab, "cgw", c1["migration"].ip, 7000).startswith("hello-7000")

    # published: port 7000 -> c-h1, 7001 -> c-h2; the cloud host sees the on-prem source
    r1 = lab.run("a-h1", [sys.executable, "-c", CLIENT, gw.public_addr, "7000"]).stdout
    assert r1.strip() == f"hello-7000-from-c-h1-{net.address('a-h1')}"
    r2 = lab.run("a-h1", [sys.executable, "-c", CLIENT, gw.public_addr, "7001"]).stdout
    assert r2.strip().startswith("hello-7000-from-c-h2-")
    # nothing else: other ports of the public address, the cloud hosts' own addresses,
    # and the whole management plane
    for host, port in ((gw.public_addr, 22), (gw.public_addr, 7002),
                       (c1["migration"].ip, 7000), (c1["management"].ip, 22),
                       (c1["management"].ip, 7000)):
        assert talk(lab, "a-h1", host, port) == "TimeoutError", (host, port)
    ping = lab.run("a-h1", ["ping", "-c", "2", "-i", "0.2", "-W", "1", "-I", onprem,
                            c1["management"].ip], check=False)
    assert ping.returncode != 0
    # cloud hosts reach on-prem, masqueraded behind the gateway's public address
    lab.popen("a-h1", [sys.executable, "-c", SERVER, "a-h1", "9000"],
              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    out = talk(lab, "c-h1", net.address("a-h1"), 9000)
    assert out == f"hello-9000-from-a-h1-{gw.public_addr}"
    listing = lab.run("cgw", ["nft", "-j", "list", "table", "ip", "testbed"]).stdout
    # the firewall's own drop counters saw the refused attempts
    dropped = [next(e["counter"]["packets"] for e in r["expr"] if "counter" in e)
               for r in (x["rule"] for x in json.loads(listing)["nftables"] if "rule" in x)
               if any("drop" in e for e in r["expr"]) and any("counter" in e for e in r["expr"])]
    assert len(dropped) == 2 and all(n > 0 for n in dropped), dropped

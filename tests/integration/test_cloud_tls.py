"""Encrypted, authenticated migration to the cloud site, proven on the WAN link.

One cloud lab (1 on-prem host, 1 cloud host, host kernel, no netem): the destination agent on
c-h1 listens on its migration address; the source on a-h1 (bound to its migration stack)
finds it through a service locator naming the gateway's published port. A capture on the
gateway's WAN interface shows the workload's markers in a plaintext migration and none in an
encrypted one; a bit-flipping relay on the gateway makes an encrypted migration abort with the
guest still running at the source; the management planes stay apart.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from agents.security.credentials import make_credentials
from testbed.host.nsexec import ns_prefix
from testbed.lab import Lab
from testbed.measure import wirecheck
from topologies import build

pytestmark = pytest.mark.integration

PY = [sys.executable, "-m", "agents"]
PORT = 7000
IDENTITY = "c-h1.migration.cloud"
MARKERS = 64

COUNTER = """
import socket, struct, sys, time
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.settimeout(1)
out = []
for _ in range(2):
    s.sendto(b"C" + b"t" * 8, (sys.argv[1], int(sys.argv[2])))
    out.append(struct.unpack_from("<Q", s.recvfrom(64)[0], 1)[0]); time.sleep(0.3)
print(*out)
"""
CLIENT = """
import socket, sys
s = socket.socket(); s.bind((sys.argv[1], 0)); s.settimeout(1.5)
try:
    s.connect((sys.argv[2], int(sys.argv[3]))); s.sendall(b"x"); print(s.recv(64).decode())
except OSError as exc:
    print(type(exc).__name__)
"""
LISTENER = """
import socket, sys
ls = socket.socket(); ls.bind((sys.argv[1], int(sys.argv[2]))); ls.listen(8)
while True:
    c, _ = ls.accept(); c.recv(8); c.sendall(b"management-plane"); c.close()
"""
RELAY = """
import socket, sys, threading
port, up_host, up_port, flip_at = int(sys.argv[1]), sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
def pump(a, b, flip):
    n = 0
    try:
        while data := a.recv(65536):
            if flip and n <= flip_at < n + len(data):
                data = bytearray(data); data[flip_at - n] ^= 0x04
                print("flipped", flush=True)
            n += len(data)
            b.sendall(data)
    except OSError:
        pass
    for s in (a, b):
        try: s.shutdown(socket.SHUT_RDWR)
        except OSError: pass
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("0.0.0.0", port)); ls.listen(16); print("ready", flush=True)
while True:
    c, _ = ls.accept()
    u = socket.create_connection((up_host, up_port))
    threading.Thread(target=pump, args=(c, u, True), daemon=True).start()
    threading.Thread(target=pump, args=(u, c, False), daemon=True).start()
"""


@pytest.fixture(scope="module")
def cloud():
    net = build("cloud", onprem_hosts=1, cloud_hosts=1, service_port=PORT, stack_mode="policy")
    with Lab(net) as lab:
        yield lab, net


def readline(proc: subprocess.Popen, timeout: float = 20.0) -> str:
    got: list[str] = []
    t = threading.Thread(target=lambda: got.append(proc.stdout.readline()), daemon=True)
    t.start()
    t.join(timeout)
    return got[0] if got else ""


def migrate(lab: Lab, net, tmp: Path, mode: str, *, capture: bool = True,
            dest_extra: tuple[str, ...] = ()) -> tuple[dict, list[dict], wirecheck.WireReport]:
    """One migration a-h1 -> c-h1 through the gateway, with the WAN link captured."""
    dst_ip = net.stacks_of("c-h1")["migration"].ip
    creds = make_credentials(tmp / "creds", IDENTITY, [dst_ip], valid_s=600)
    gw = net.gateways[0]
    locator = tmp / "locator.toml"
    locator.write_text(f'service = "{gw.public_addr}:{PORT}"\nidentity = "{IDENTITY}"\n'
                       f'credentials = "creds"\nencryption = "{mode}"\n')
    dest = lab.popen("c-h1", [*PY, "destination", "--listen", f"{dst_ip}:{PORT}",
                              "--encryption", mode, "--credentials", str(creds),
                              "--idle-timeout", "10", *dest_extra],
                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert "listening" in readline(dest)
    src_argv = [*PY, "source", "--workload", "16M", "--markers", str(MARKERS), "--dirty-rate",
                "5", "--locator", str(locator), "--bind",
                net.stacks_of("a-h1")["migration"].ip, "--preflight", "off",
                "--idle-timeout", "10", "--timeout", "60", "--warmup", "0.2"]
    pcap = tmp / "wan.pcap"
    report = wirecheck.WireReport()

    def source() -> dict:
        # stderr to a file: a guest left running at the source inherits it
        with open(tmp / "source.err", "w") as err:
            proc = lab.popen("a-h1", src_argv, stdout=subprocess.PIPE, stderr=err, text=True)
            out, _ = proc.communicate(timeout=90)
        return json.loads(out.strip().splitlines()[-1])

    if capture:
        with wirecheck.capture(lab.pid("cgw"), "cgw-wan", pcap, f"tcp port {PORT}") as cap:
            res = source()
        assert cap.dropped == 0, cap.stderr
        report = wirecheck.inspect(pcap, PORT)
    else:
        res = source()
    try:
        dout, _ = dest.communicate(timeout=15)
    except subprocess.TimeoutExpired:
        dest.kill()
        dout, _ = dest.communicate()
    docs = [json.loads(line) for line in dout.splitlines() if line.startswith("{")]
    return res, docs, report


def test_encrypted_migration_through_the_gateway_carries_no_plaintext(cloud, tmp_path):
    lab, net = cloud
    res, dest, wire = migrate(lab, net, tmp_path, "required", dest_extra=("--no-resume",))
    assert res["completed"], res["error"]
    assert res["encrypted"] is True and res["transport"] == "tls1.3"
    assert res["cipher"].startswith("TLS_AES_")
    assert dest[-1]["ok"] is True
    # the WAN carried the whole migration (on-prem source -> gateway's published port) ...
    src_ip = net.stacks_of("a-h1")["migration"].ip
    up = sum(n for k, n in wire.flows.items()
             if k.startswith(f"{src_ip}:") and k.endswith(f">{net.gateways[0].public_addr}:{PORT}"))
    assert up >= res["bytes_on_wire"] * 0.95, wire.flows
    # ... and not one of the markers planted in the guest's pages
    assert wire.markers == set()


def test_plaintext_migration_shows_the_markers_on_the_wan(cloud, tmp_path):
    lab, net = cloud
    res, dest, wire = migrate(lab, net, tmp_path, "disabled", dest_extra=("--no-resume",))
    assert res["completed"], res["error"]
    assert res["encrypted"] is False and res["transport"] == "tcp"
    assert len(wire.markers) >= MARKERS // 2, wire.markers  # the check can fail


def test_live_migration_resumes_in_the_cloud(cloud, tmp_path):
    lab, net = cloud
    res, dest, _ = migrate(lab, net, tmp_path, "required", capture=False)
    assert res["completed"] and res["resumed"] and res["encrypted"], res["error"]
    assert dest[-1]["ok"] and dest[-1]["resumed"]
    host, port = res["destination_service"]
    c1, c2 = map(int, lab.run("c-h1", [sys.executable, "-c", COUNTER, host, str(port)])
                 .stdout.split())
    assert c2 > c1 >= res["counter_at_switchover"]


def test_bit_flipping_middlebox_aborts_and_the_guest_stays(cloud, tmp_path):
    """A relay on the gateway (nft redirect of the published port) flips one bit of the
    source's stream after 1 MiB: TLS refuses the record, the migration aborts, and the guest
    keeps running at the source."""
    lab, net = cloud
    dst_ip = net.stacks_of("c-h1")["migration"].ip
    relay = lab.popen("cgw", [sys.executable, "-c", RELAY, "7099", dst_ip, str(PORT),
                              str(1 << 20)], stdout=subprocess.PIPE, text=True)
    assert readline(relay) == "ready\n"
    mitm = ("table ip tbt_mitm {\n chain pre {\n  type nat hook prerouting priority -150;\n"
            f'  iifname "cgw-wan" tcp dport {PORT} redirect to :7099\n }}\n}}\n')
    subprocess.run([*ns_prefix(lab.pid("cgw")), "nft", "-f", "-"], input=mitm, text=True,
                   check=True, timeout=10)
    ins = lab.run("cgw", ["nft", "-e", "-a", "insert", "rule", "ip", "testbed", "filterin",
                          "iifname", "cgw-wan", "tcp", "dport", "7099", "accept"])
    handle = ins.stdout.split("# handle")[-1].split()[0]
    try:
        res, dest, _ = migrate(lab, net, tmp_path, "required", capture=False)
    finally:
        lab.run("cgw", ["nft", "delete", "rule", "ip", "testbed", "filterin", "handle", handle])
        lab.run("cgw", ["nft", "delete", "table", "ip", "tbt_mitm"])
        relay.kill()
        flips = relay.communicate()[0]
    assert "flipped" in flips  # the middlebox really altered the stream
    assert not res["completed"] and res["error"], res
    assert dest[-1]["ok"] is False, dest
    assert "bad record mac" in (res["error"] + json.dumps(dest)).lower()
    # the guest was never lost: still running at the source, counter moving
    svc = "127.0.0.1"
    info = json.loads(lab.run("a-h1", ["cat", f"/tmp/agents-workload/{res['source_pid']}.json"])
                      .stdout)
    c1, c2 = map(int, lab.run("a-h1", [sys.executable, "-c", COUNTER, svc,
                                       str(info["service"][1])]).stdout.split())
    assert c2 > c1 >= (res["counter_at_switchover"] or 0)


def test_on_prem_cannot_reach_the_cloud_management_plane(cloud):
    lab, net = cloud
    a, c = net.stacks_of("a-h1"), net.stacks_of("c-h1")
    lab.popen("c-h1", [sys.executable, "-c", LISTENER, c["management"].ip, "7100"],
              stdout=subprocess.DEVNULL)
    lab.popen("c-h1", [sys.executable, "-c", LISTENER, c["migration"].ip, "7101"],
              stdout=subprocess.DEVNULL)
    time.sleep(0.5)

    def talk(node, bind, host, port):
        return lab.run(node, [sys.executable, "-c", CLIENT, bind, host, str(port)]).stdout.strip()

    # control: inside the cloud the management service answers
    assert talk("cgw", "0.0.0.0", c["management"].ip, 7100) == "management-plane"
    # from on-prem's management plane (and its migration plane): nothing but silence
    for bind in (a["management"].ip, a["migration"].ip):
        assert talk("a-h1", bind, c["management"].ip, 7100) == "TimeoutError", bind
    # nor does on-prem reach the migration network directly, only via the published port
    assert talk("a-h1", a["migration"].ip, c["migration"].ip, 7101) == "TimeoutError"

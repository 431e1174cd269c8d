"""The agents' fork server: agents forked into a namespace behave like started ones."""

import json
import subprocess
import uuid

import pytest

from testbed.lab.zygote import Zygote

pytestmark = pytest.mark.integration


@pytest.fixture
def netns():
    name = f"tbt-zyg-{uuid.uuid4().hex[:6]}"
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        for cmd in (["ip", "link", "set", "lo", "up"],
                    ["ip", "link", "add", "d0", "type", "veth", "peer", "name", "d1"],
                    ["ip", "addr", "add", "10.77.0.1/24", "dev", "d0"],
                    ["ip", "link", "set", "d1", "up"], ["ip", "link", "set", "d0", "up"]):
            subprocess.run(["ip", "netns", "exec", name, *cmd], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


@pytest.fixture
def zygote():
    z = Zygote()
    try:
        yield z
    finally:
        z.close()


def test_agent_runs_in_the_namespace_it_was_forked_into(zygote, netns):
    # 10.77.0.1 exists only in that namespace: binding it proves where the guest runs
    guest = zygote.spawn(["workload", "--size", "1M", "--host", "10.77.0.1", "--port", "7000"],
                         f"/run/netns/{netns}", stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        info = json.loads(guest.stdout.readline())
        assert info["service"] == ["10.77.0.1", 7000] and info["pid"] == guest.pid
        pids = subprocess.run(["ip", "netns", "pids", netns], capture_output=True,
                              text=True).stdout.split()
        assert str(guest.pid) in pids
        assert guest.poll() is None
        with open(f"/proc/{guest.pid}/comm") as comm:  # ps tells it from its zygote
            assert comm.read().strip() == "agents workload"
    finally:
        guest.kill()
    assert guest.wait(timeout=10) == -9  # killed by SIGKILL, like Popen's returncode


def test_exit_status_and_streams_come_back(zygote):
    bad = zygote.spawn(["source", "--workload", "1M"], stdout=subprocess.PIPE,
                       stderr=subprocess.PIPE, text=True)
    out, err = bad.communicate(timeout=60)
    assert bad.returncode == 1 and "--to HOST:PORT" in err and out == ""
    ok = zygote.spawn(["probe", "--help"], stdout=subprocess.PIPE, text=True)
    out, _ = ok.communicate(timeout=60)
    assert ok.returncode == 0 and "--interval-ms" in out


def test_a_namespace_that_does_not_exist_fails_the_agent_not_the_server(zygote):
    lost = zygote.spawn(["probe", "--help"], "/run/netns/tbt-no-such-namespace",
                        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, err = lost.communicate(timeout=60)
    assert lost.returncode == 1 and "tbt-no-such-namespace" in err
    again = zygote.spawn(["probe", "--help"], stdout=subprocess.DEVNULL)
    assert again.wait(timeout=60) == 0

"""The agents run alone: their imports need only the four dependencies of the base install
(trio, zstandard, xxhash, cryptography) and the standard library; never the testbed, the
topologies, Mininet or the lab's and plots' packages."""

import subprocess
import sys

FORBIDDEN = ["testbed", "topologies", "mininet", "pyroute2", "scapy", "iperf3", "click",
             "rich", "pydantic", "matplotlib", "virtme_ng"]
CHECK = f"""
import importlib.abc, sys
FORBIDDEN = {FORBIDDEN!r}
class Block(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in FORBIDDEN:
            raise ImportError("the agents imported " + name)
        return None
sys.meta_path.insert(0, Block())
import agents.__main__, agents.source, agents.destination, agents.resolve
import agents.security.tls, agents.security.credentials, agents.memory.process
import agents.memory.image, agents.memory.disk, agents.guest.workload, agents.client.probe
import agents.qemu.driver, agents.qemu.command, agents.qemu.image
print("ok")
"""


def test_agents_import_nothing_of_the_lab():
    out = subprocess.run([sys.executable, "-c", CHECK], capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


def test_the_agents_cli_answers_without_the_lab():
    out = subprocess.run([sys.executable, "-c", CHECK.replace('print("ok")', "") +
                          "sys.argv = ['agents', '--help']\nagents.__main__.main(['--help'])"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0 and "workload" in out.stdout, out.stderr[-2000:]

"""The management probe keeps its schedule without taking a core (iputils ping spins below
10 ms: a whole core of this 2-core machine during every core-load run)."""

import os
import resource
import signal
import subprocess
import time

import pytest

from testbed.measure.probes import REPLY, SENT, fping_command

pytestmark = pytest.mark.integration


def test_a_probe_every_5_ms_costs_little_cpu():
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    proc = subprocess.Popen(fping_command("127.0.0.1", "127.0.0.1", 0.005),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(2.0)
    proc.send_signal(signal.SIGINT)
    out, _ = proc.communicate(timeout=10)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    replies = [line for line in out.splitlines() if REPLY.match(line)]
    sent = int(SENT.search(out)[1])
    assert 360 <= sent <= 440 and len(replies) >= 0.95 * sent, (sent, len(replies))
    assert cpu < 0.3, f"{cpu:.2f} s of CPU in 2 s ({os.cpu_count()} CPUs)"

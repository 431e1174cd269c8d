"""One progress line per event, whatever phase the source is in."""

from testbed.measure.migration import MigrationJob
from testbed.run.progress import describe

JOB = MigrationJob("h1", "h2", "10.0.0.2", label="own-stack x2 #1")
MIB = 1 << 20


def test_each_phase_says_what_it_is():
    assert describe(JOB, {"phase": "ready"}) == \
        "own-stack x2 #1: connected and measured, waiting for the burst's common start"
    line = describe(JOB, {"phase": "precopy", "round": 0, "sent_bytes": 64 * MIB,
                          "image_bytes": 64 * MIB, "rate_mbps": 800.0,
                          "remaining_bytes": 4 * MIB})
    assert line.startswith("own-stack x2 #1: round 0 done at 800 Mbit/s, 64 MiB sent")
    assert "4.0 MiB dirtied" in line and "~0.0 s" in line
    assert "guest paused, last round 2" in describe(
        JOB, {"phase": "stop-and-copy", "round": 2, "remaining_bytes": MIB})
    assert describe(JOB, {"phase": "decided", "round": 3, "elapsed_s": 1.2}).endswith(
        "decided after 3 rounds, 0 MiB sent of a 0 MiB image, 1.2 s")

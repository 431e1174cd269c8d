"""A burst's common start: the gate opens once every source is ready or has ended."""

import io

from testbed.measure.migration import MigrationJob, StartGate


class _Source:
    def __init__(self) -> None:
        self.stdin = io.StringIO()


def _job(i: int) -> MigrationJob:
    return MigrationJob(src=f"h{i}", dst="d", dst_addr="10.0.0.1", port=7000 + i)


def test_go_only_once_every_source_is_ready_or_ended():
    gate, jobs, srcs = StartGate(3), [_job(i) for i in range(3)], [_Source() for _ in range(3)]
    gate.ready(jobs[0], srcs[0])
    gate.ended(jobs[0])  # said again at its end: counted once
    gate.ready(jobs[1], srcs[1])
    assert gate.opened_s is None and srcs[0].stdin.getvalue() == ""
    gate.ended(jobs[2])  # failed before round 0: the others do not wait for it
    assert gate.opened_s is not None
    assert [s.stdin.getvalue() for s in srcs] == ["go\n", "go\n", ""]


def test_a_source_gone_before_go_does_not_stop_the_others():
    class Gone(_Source):
        def __init__(self) -> None:
            super().__init__()
            self.stdin.close()  # writing raises ValueError, as a closed pipe raises OSError

    gate, jobs = StartGate(2), [_job(0), _job(1)]
    alive = _Source()
    gate.ready(jobs[0], Gone())
    gate.ready(jobs[1], alive)
    assert alive.stdin.getvalue() == "go\n"

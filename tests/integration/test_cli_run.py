"""`testbed run` as a user sees it: progress lines in a pipe, run.log, exit codes, and
`testbed report` re-making the report from the saved documents."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration

TESTBED = [sys.executable, "-m", "testbed"]
TINY = """name = "tiny"
kind = "core-load"
spines = 1
leaves = 2
hosts_per_leaf = 1
concurrency = [1]
paths = ["own-stack"]
background_flow = false
[migration]
workload_mib = 16
"""


def _run(*args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([*TESTBED, *args], capture_output=True, text=True, timeout=timeout)


def test_progress_in_a_pipe_is_plain_lines_and_run_log_has_every_round(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY)
    out = tmp_path / "results"
    res = _run("run", str(spec), "--out", str(out), "-v")
    text = res.stdout + res.stderr
    assert res.returncode == 0, text[-2000:]
    assert "\x1b[" not in text  # no colours or cursor movement when not a terminal
    assert "round 0 done at" in text and "decided after" in text
    log = (out / "run.log").read_text()
    assert "round 0 done at" in log and "guest paused" in log and "run ended after" in log
    # the report is re-made from the documents alone
    (out / "report.md").unlink()
    again = _run("report", str(out))
    assert again.returncode == 0, again.stderr
    report = (out / "report.md").read_text()
    assert "## tiny (core-load)" in report and "results schema" in report


def test_quiet_prints_only_the_summary(tmp_path):
    spec = tmp_path / "tiny.toml"
    spec.write_text(TINY)
    res = _run("run", "-q", str(spec), "--out", str(tmp_path / "r"))
    assert res.returncode == 0, res.stderr[-2000:]
    assert "variant 1/1" not in res.stderr and "decided after" not in res.stderr
    assert "summary" in res.stderr


def test_exit_codes_for_bad_input(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "b"\nkind = "core-load"\nspines = 0\n')
    res = _run("run", str(bad), "--out", str(tmp_path / "r"))
    assert res.returncode == 2 and "bad.toml:3" in res.stderr and "spines" in res.stderr
    assert not (tmp_path / "r").exists()  # validated before anything else
    missing = _run("report", str(tmp_path / "nowhere"))
    assert missing.returncode == 2 and "nowhere" in missing.stderr
    empty = tmp_path / "empty"
    empty.mkdir()
    assert _run("report", str(empty)).returncode == 2

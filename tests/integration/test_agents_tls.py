"""Encrypted migrations between real agent processes over loopback: locator, refusals, replay.

Every refusal is checked on both sides (the source's error, the destination's ``rejected``
line) and for its effect: nothing written at the destination, the guest running at the source.
"""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time

import pytest

from agents.memory.process import process_state
from agents.security.credentials import make_credentials
from tests.helpers import destination as loopback_destination
from tests.helpers import kill

pytestmark = pytest.mark.integration
PY = [sys.executable, "-m", "agents"]
ID = "dst.loopback"


def destination(*extra):
    return loopback_destination("--listen", "127.0.0.1:0", "--idle-timeout", "10", *extra)


def source(*args, timeout=60) -> dict:
    proc = subprocess.Popen([*PY, "source", "--workload", "16M", "--dirty-rate", "5",
                             "--preflight", "off", "--warmup", "0.2", "--json", *args],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    out, _ = proc.communicate(timeout=timeout)
    res = json.loads(out)
    res["rc"] = proc.returncode
    return res


def lines(proc, n, timeout=15) -> list[dict]:
    """The next ``n`` JSON lines the destination prints (fewer if it goes quiet)."""
    out: list[dict] = []

    def read():
        while len(out) < n and (line := proc.stdout.readline()):
            if line.startswith("{"):
                out.append(json.loads(line))

    t = threading.Thread(target=read, daemon=True)
    t.start()
    t.join(timeout)
    return out


def test_encrypted_live_migration_via_locator(tmp_path):
    creds = make_credentials(tmp_path / "c", ID, ["127.0.0.1"])
    with destination("--encryption", "required", "--credentials", str(creds)) as (d, port):
        loc = tmp_path / "loc.json"
        loc.write_text(json.dumps({"service": f"127.0.0.1:{port}", "identity": ID,
                                   "credentials": "c", "encryption": "required"}))
        res = source("--locator", str(loc), "--streams", "2")
        try:
            assert res["rc"] == 0 and res["completed"], res["error"]
            assert res["resumed"] and res["integrity_ok"]
            assert (res["transport"], res["encrypted"]) == ("tls1.3", True)
            assert res["cipher"].startswith("TLS_AES_")
            (outcome,) = lines(d, 1)
            assert outcome["ok"] and outcome["resumed"]
        finally:
            kill(res.get("destination_pid"))
            kill(res.get("source_pid"))


@pytest.mark.parametrize("case", ["other-migration", "plaintext"])
def test_unauthenticated_source_refused_nothing_written(tmp_path, case):
    creds = make_credentials(tmp_path / "c", ID)
    stranger = make_credentials(tmp_path / "s", ID)  # same name, another migration's CA
    image = tmp_path / "image.bin"
    with destination("--encryption", "required", "--credentials", str(creds),
                     "--save-image", str(image)) as (d, port):
        args = ["--to", f"127.0.0.1:{port}"]
        args += (["--credentials", str(stranger), "--encryption", "required"]
                 if case == "other-migration" else ["--encryption", "disabled"])
        res = source(*args)
        try:
            assert res["rc"] == 1 and not res["completed"]
            (rej,) = lines(d, 1)
            if case == "other-migration":
                assert "destination failed authentication as 'dst.loopback'" in res["error"]
                assert "TLS authentication failed" in rej["rejected"]
            else:
                assert "requires an encrypted, authenticated migration" in res["error"]
                assert "refused unencrypted source" in rej["rejected"]
            assert d.poll() is None  # still waiting for the real source
            assert not image.exists()
            time.sleep(0.2)
            assert process_state(res["source_pid"]) not in "tTZ"  # the guest runs on
        finally:
            kill(res.get("source_pid"))


def test_replayed_session_is_refused(tmp_path):
    creds = make_credentials(tmp_path / "c", ID)
    args = ["--credentials", str(creds), "--encryption", "required"]
    with destination("--keep-serving", "--no-resume", *args) as (d, port):
        first = source("--to", f"127.0.0.1:{port}", *args)
        second = source("--to", f"127.0.0.1:{port}", *args)
        try:
            assert first["completed"] and first["encrypted"], first["error"]
            assert not second["completed"]
            assert "already used (replayed session)" in second["error"]
            (rej,) = lines(d, 1)  # (--keep-serving prints outcomes only when it ends)
            assert "replayed session" in rej["rejected"]
        finally:
            kill(first.get("source_pid"))
            kill(second.get("source_pid"))


def test_opportunistic_falls_back_to_a_destination_without_encryption(tmp_path):
    creds = make_credentials(tmp_path / "c", ID)
    with destination("--encryption", "disabled", "--no-resume") as (d, port):
        res = source("--to", f"127.0.0.1:{port}", "--credentials", str(creds),
                     "--encryption", "opportunistic")
        try:
            assert res["completed"], res["error"]
            assert (res["transport"], res["encrypted"], res["cipher"]) == ("tcp", False, None)
        finally:
            kill(res.get("source_pid"))

"""The VM runner: exit status and output come back; a guest that cannot start, or does not
start in time, ends with a clear error within a bounded time."""

import os
import subprocess
import sys
import time

import pytest

from testbed.host import doctor
from testbed.host.vm import VMError, run_in_vm

pytestmark = pytest.mark.integration


def _kernel() -> str:
    kernel = doctor.find_full_kernel()
    if kernel is None:
        pytest.fail("no full kernel image in /boot: apt-get install linux-image-amd64")
    return str(kernel)


def test_exit_status_output_and_rwdir_come_back(tmp_path):
    long_word = "x" * 3000  # longer than the kernel command line vng would pass it on
    cmd = [sys.executable, "-m", "testbed", "vm-exec", "--rwdir", str(tmp_path), "--",
           "sh", "-c", f"uname -r; echo {long_word} | wc -c; echo written > "
                       f"{tmp_path}/from-guest; exit 7"]
    res = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert res.returncode == 7, res.stderr
    assert "3001" in res.stdout.split(), res.stdout
    assert os.path.basename(_kernel()).removeprefix("vmlinuz-") in res.stdout
    assert (tmp_path / "from-guest").read_text().strip() == "written"


def test_guest_that_cannot_boot_fails_fast_with_the_reason(tmp_path):
    bogus = tmp_path / "vmlinuz-broken"
    bogus.write_bytes(b"not a kernel")
    t0 = time.monotonic()
    with pytest.raises(VMError, match="did not start"):
        run_in_vm(["true"], str(bogus), "tcg")
    assert time.monotonic() - t0 < 60


def _qemu_pids() -> set[str]:
    return set(subprocess.run(["pgrep", "-f", "qemu-system-x86_64 -name virtme-ng"],
                              capture_output=True, text=True).stdout.split())


def test_guest_that_hangs_is_stopped_at_the_boot_deadline(monkeypatch):
    monkeypatch.setattr("testbed.host.vm.BOOT_TIMEOUT_S", 3.0)
    before = _qemu_pids()
    t0 = time.monotonic()
    with pytest.raises(VMError, match="within 3 s"):
        run_in_vm(["true"], _kernel(), "tcg")
    assert time.monotonic() - t0 < 20
    time.sleep(1)
    assert not (_qemu_pids() - before), "the stopped guest's qemu is still running"

import shlex

from testbed.host import doctor, vm


def test_guest_command_announces_then_execs_with_env():
    line = vm.guest_command(["python", "-m", "testbed", "run", "a b.toml"],
                            {"TESTBED_IN_VM": "1", "PATH": "/v/bin:/usr/bin"})
    first, rest = line.split(";", 1)
    assert vm.READY_MARKER in first
    assert "TESTBED_IN_VM=1" in rest and shlex.quote("a b.toml") in rest
    assert " exec env " in rest


def test_vng_command_disables_kvm_under_tcg_and_passes_rwdirs(tmp_path):
    cmd = vm.vng_command("/boot/vmlinuz-x", "tcg", "true", [tmp_path], 2, "4G")
    assert "--disable-kvm" in cmd and cmd[cmd.index("--rwdir") + 1] == str(tmp_path)
    assert "--disable-kvm" not in vm.vng_command("/boot/k", "kvm", "true", [], 2, "4G")


def test_vng_command_passes_each_qemu_argument_in_the_equals_form():
    cmd = vm.vng_command("/boot/k", "tcg", "true", [], 1, "1G",
                         qemu_opts=["-netdev", "tap,id=t0,ifname=t0"])
    assert "--qemu-opt=-netdev" in cmd and "--qemu-opt=tap,id=t0,ifname=t0" in cmd
    assert cmd[-2:] == ["--exec", "true"]


def test_missing_features():
    feats = dict.fromkeys(doctor.NETWORK_FEATURES, True) | {"netem": False}
    assert doctor.missing(feats) == ["netem"]
    assert doctor.missing(feats, ("veth",)) == []

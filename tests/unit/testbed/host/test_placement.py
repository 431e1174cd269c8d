"""Placement decisions (native, appliance, whole VM) from doctor-like feature reports."""

import pytest

from testbed.host.placement import PlacementError, decide

ALL = dict.fromkeys(("netns", "veth", "bridge", "htb", "tbf", "netem", "vrf", "openvswitch",
                     "ecmp", "vxlan"), True)
NO_NETEM = ALL | {"netem": False}
THIS_HOST = ALL | {"netem": False, "vrf": False, "openvswitch": False}
WAN = ("netns", "veth", "tbf", "netem")
FABRIC = ("netns", "veth", "tbf", "htb", "ecmp")


def test_a_kernel_with_everything_runs_natively():
    assert decide(WAN, ALL).where == "native"


def test_only_netem_missing_means_the_appliance():
    p = decide(WAN, THIS_HOST)
    assert p.where == "appliance" and p.missing == ("netem",)
    assert "netem" in p.why and "appliance" in p.why


def test_a_spec_without_netem_links_runs_natively_on_this_host():
    assert decide(FABRIC, THIS_HOST).where == "native"


def test_what_the_appliance_cannot_give_sends_the_whole_run_to_the_vm():
    p = decide(("netns", "veth", "openvswitch", "netem"), THIS_HOST)
    assert p.where == "vm" and set(p.missing) == {"openvswitch", "netem"}
    assert decide(("netns", "vrf"), THIS_HOST).where == "vm"


def test_always_forces_the_vm_even_where_everything_is_there():
    assert decide(WAN, ALL, mode="always").where == "vm"


def test_never_refuses_what_this_kernel_lacks():
    with pytest.raises(PlacementError, match="netem.*--vm never"):
        decide(WAN, NO_NETEM, mode="never")
    assert decide(FABRIC, NO_NETEM, mode="never").where == "native"


def test_no_vm_available_is_an_error_naming_why():
    with pytest.raises(PlacementError, match="no full kernel"):
        decide(WAN, NO_NETEM, vm_available=False, vm_reason="no full kernel")
    with pytest.raises(PlacementError, match="no full kernel"):
        decide(WAN, ALL, mode="always", vm_available=False, vm_reason="no full kernel")


def test_inside_the_vm_runs_there_or_fails():
    assert decide(WAN, ALL, in_vm=True).where == "vm"
    with pytest.raises(PlacementError, match="still lacks"):
        decide(WAN, NO_NETEM, in_vm=True)


def test_an_unknown_mode_is_refused():
    with pytest.raises(PlacementError, match="--vm"):
        decide(WAN, ALL, mode="sometimes")

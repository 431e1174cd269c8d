"""Where a run's network work happens, decided from what the kernel has and said out loud.

- ``native``: this kernel has every feature the spec needs; everything runs here.
- ``appliance``: it lacks only netem: the lab, agents, guests and probes still run here, and
  only the netem links pass through the impairment appliance (``testbed.host.appliance``).
- ``vm``: it lacks something the appliance cannot stand in for (a spec that insists on the
  OVS datapath or VRF, kernel modules such as rdma_rxe), or ``--vm always``: the whole run
  re-executes inside the full-kernel VM (``testbed.host.vm``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Where = Literal["native", "appliance", "vm"]
#: What the impairment appliance can stand in for.
APPLIANCE_FEATURES = frozenset({"netem"})
MODES = ("auto", "always", "never")


class PlacementError(RuntimeError):
    """The run cannot be placed anywhere; the message says what is missing and the fix."""


@dataclass(frozen=True)
class Placement:
    where: Where
    why: str
    missing: tuple[str, ...] = ()

    def describe(self) -> dict[str, object]:
        return {"where": self.where, "why": self.why, "missing": list(self.missing)}


def decide(needs: tuple[str, ...], features: dict[str, bool], *, mode: str = "auto",
           vm_available: bool = True, in_vm: bool = False, kernel: str = "this kernel",
           vm_reason: str = "") -> Placement:
    """The placement of a run that needs kernel features ``needs``.

    ``mode``: ``auto`` (the least emulation that gives every feature), ``always`` (the whole
    run in the VM) or ``never`` (no VM of any kind). ``vm_available``: a full kernel, qemu and
    virtme-ng are installed (``vm_reason`` says why not).
    """
    if mode not in MODES:
        raise PlacementError(f"--vm must be one of {', '.join(MODES)} (got {mode!r})")
    gaps = tuple(f for f in needs if not features.get(f))
    if in_vm:
        if gaps:
            raise PlacementError(f"inside the full-kernel VM and its {kernel} still lacks "
                                 f"{', '.join(gaps)}")
        return Placement("vm", f"inside the full-kernel VM ({kernel})")
    if mode == "always":
        if not vm_available:
            raise PlacementError(f"--vm always, but no VM can run here: {vm_reason}")
        return Placement("vm", "--vm always: the whole run in the full-kernel VM", gaps)
    if not gaps:
        return Placement("native", f"{kernel} has everything the run needs")
    if mode == "never":
        raise PlacementError(f"{kernel} lacks {', '.join(gaps)} and --vm never forbids a VM; "
                             "use --vm auto, or a kernel with them (`testbed doctor`)")
    if not vm_available:
        raise PlacementError(f"{kernel} lacks {', '.join(gaps)} and no VM can run here: "
                             f"{vm_reason}")
    if set(gaps) <= APPLIANCE_FEATURES:
        return Placement("appliance", f"{kernel} lacks {', '.join(gaps)}: the run is native, "
                         "its netem links pass through the impairment appliance", gaps)
    return Placement("vm", f"{kernel} lacks {', '.join(gaps)}, which the impairment appliance "
                     "cannot provide: the whole run in the full-kernel VM", gaps)

"""The ``hypervisor`` choice of a spec's ``[migration]`` table and what it maps to.

``hypervisor = "agents"`` (the default), ``"qemu"`` or a list of both (``["agents", "qemu"]``:
the same experiment runs both side by side, on the same path, one after the other).

The ``[migration]`` keys both honour are mapped for QEMU (:data:`QEMU_MAPPING` says how, the
result document echoes it). Keys only one side can honour live in its own table:
``[migration.agents]`` (a guest network identity: QEMU's guest has no network device) and
``[migration.qemu]`` (the QEMU guest's RAM, vCPUs, hot set; postcopy). A key set where the
chosen hypervisor cannot honour it is an error, never silently dropped.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from agents.qemu.command import KERNEL_MIB

Hypervisor = Literal["agents", "qemu"]
KNOWN: tuple[str, ...] = ("agents", "qemu")
GuestNetwork = Literal["none", "l2", "vxlan", "hostroute"]

#: How each common ``[migration]`` key reaches QEMU (echoed in results and the README).
QEMU_MAPPING: dict[str, str] = {
    "workload_mib": "the guest's dirtier allocation (random pages); guest RAM = "
                    "qemu.ram_mib or workload_mib + 96 MiB (at least 192)",
    "dirty_rate_mbs": "the dirtier's write rate into its hot set (qemu.hot_mib, default a "
                      "tenth of workload_mib like the agents' hot fraction)",
    "streams": "multifd channels when > 1 (1: QEMU's single migration stream)",
    "compress": "multifd-compression zstd (multifd with max(streams, 1) channels: QEMU "
                "compresses only multifd)",
    "downtime_ms": "downtime-limit (whole milliseconds)",
    "max_rounds": "once dirty-sync-count reaches max_rounds - 1 the driver raises "
                  "downtime-limit to QEMU's maximum, forcing the stop-and-copy as the agents "
                  "do at their round limit (switchover_reason 'max-rounds')",
    "bandwidth_cap_mbps": "max-bandwidth (unset: 10 GiB/s, i.e. no cap)",
    "timeout_s": "the driver cancels the migration after it (QEMU rolls back)",
    "guest_network": "only 'none' (QEMU's guest has no NIC); the agents' guests get one "
                     "from [migration.agents]",
    "client_probe_ms": "n/a (no guest network for QEMU)",
}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class AgentsOnly(_Strict):
    """``[migration.agents]``: what only the agents honour, in a spec that runs QEMU too."""

    guest_network: GuestNetwork | None = Field(
        None, description="the agents' guests' network identity (QEMU's guest has none)")
    client_probe_ms: float | None = Field(None, ge=0.2, le=1000)


class QemuParams(_Strict):
    """``[migration.qemu]``: the QEMU guest and what only QEMU has."""

    ram_mib: int | None = Field(None, ge=64, le=65536,
                                description="guest RAM (default workload_mib + 96, >= 192)")
    vcpus: int = Field(1, ge=1, le=16)
    hot_mib: int | None = Field(None, ge=1, description="the dirtier's hot set "
                                "(default: a tenth of workload_mib)")
    auto_converge: bool = Field(True, description="QEMU's auto-converge (the agents "
                                "throttle a guest that outruns the link by default too)")
    postcopy: bool = False
    postcopy_preempt: bool = False
    boot_timeout_s: float = Field(180.0, gt=0, le=3600,
                                  description="the source guest's boot (TCG: tens of s)")
    warmup_s: float = Field(1.0, ge=0, le=600, description="dirtying before the migration")

    @model_validator(mode="after")
    def _preempt_needs_postcopy(self) -> QemuParams:
        if self.postcopy_preempt and not self.postcopy:
            raise ValueError("postcopy_preempt needs postcopy = true")
        return self


def hypervisors(value: Any) -> list[str]:
    """The hypervisor choice as a list (a single name or a list of names)."""
    if value is None:
        return ["agents"]
    return [value] if isinstance(value, str) else list(value)


def check_choice(value: Any) -> Any:
    """'agents', 'qemu', or a non-empty list naming each of them at most once."""
    for name in hypervisors(value):
        if name not in KNOWN:
            raise ValueError(f"unknown hypervisor {name!r} (known: {', '.join(KNOWN)})")
    if isinstance(value, list):
        if not value:
            raise ValueError("names no hypervisor (use 'agents', 'qemu' or both)")
        if len(set(value)) != len(value):
            raise ValueError(f"names a hypervisor twice: {value}")
    return value


def check_for_qemu(key: str, value: Any, data: dict[str, Any]) -> Any:
    """Refuse a ``[migration]`` setting QEMU cannot honour when QEMU is one of the choices."""
    if "qemu" not in hypervisors(data.get("hypervisor")):
        return value
    if key == "guest_network" and value != "none":
        raise ValueError(f"{value!r}: QEMU's guest has no network device, so it has no "
                         "identity to move; keep 'none' with hypervisor 'qemu', or give only "
                         f"the agents' guests one: [migration.agents] guest_network = "
                         f"{value!r}")
    if key == "downtime_ms" and value != int(value):
        raise ValueError(f"{value}: QEMU's downtime-limit is whole milliseconds")
    return value


def check_tables(key: str, value: Any, data: dict[str, Any]) -> Any:
    """``[migration.qemu]`` needs 'qemu' among the choices, ``[migration.agents]`` needs both
    (with the agents alone its keys belong in ``[migration]``); guest RAM must hold the
    dirtier."""
    if value is None:
        return value
    chosen = hypervisors(data.get("hypervisor"))
    if key == "qemu":
        if "qemu" not in chosen:
            raise ValueError(f"is set but hypervisor = {data.get('hypervisor')!r} does not "
                             "run QEMU (add 'qemu' or remove the table)")
        ram, work = value.ram_mib, data.get("workload_mib")
        if ram is not None and work is not None and work + KERNEL_MIB > ram:
            raise ValueError(f"ram_mib {ram} cannot hold workload_mib {work} plus the "
                             f"guest kernel's {KERNEL_MIB} MiB")
        if value.hot_mib is not None and work is not None and value.hot_mib > work:
            raise ValueError(f"hot_mib {value.hot_mib} is larger than workload_mib {work}")
    if key == "agents" and chosen != ["agents", "qemu"] and chosen != ["qemu", "agents"]:
        raise ValueError("is for specs that run QEMU beside the agents; with "
                         f"hypervisor = {data.get('hypervisor')!r} put its keys in "
                         "[migration]")
    return value


def check_compare(value: Any, data: dict[str, Any]) -> None:
    """``compare_hypervisors_*`` say where the second hypervisor runs: it needs one."""
    m = data.get("migration")
    if value is not None and m is not None and len(m.hypervisors) < 2:
        raise ValueError(f"is set but migration.hypervisor = {m.hypervisor!r} names one "
                         "hypervisor (use a list, e.g. [\"agents\", \"qemu\"])")

"""Experiment specs (TOML) validated into typed models before anything touches the kernel.

Every spec has ``name``, ``kind`` (which experiment), ``description``, ``repetitions`` and an
optional ``[sweep]`` table: dotted keys of the spec mapped to lists of values; the run covers
the cartesian product of those lists. An error names the file, the line and key, and what is
wrong.
"""

from __future__ import annotations

import itertools
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from topologies.file import read_toml

from . import hypervisor as hv
from .topochoice import ChoiceError, TopologyChoice, check, resolve_file
from .topochoice import build as build_choice
from .topochoice import needs as network_needs


class SpecError(ValueError):
    """A spec file is unreadable or invalid; the message says where and why."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MigrationParams(Strict):
    """How each migration in an experiment is done, and by whom (``testbed.hypervisor_spec``:
    the agents, QEMU, or both side by side)."""

    hypervisor: str | list[str] = Field(
        "agents", description="who migrates: 'agents', 'qemu' or a list (both, side by side)")
    workload_mib: int = Field(32, ge=1, le=65536)
    dirty_rate_mbs: float = Field(4.0, ge=0, le=10_000)
    streams: int = Field(1, ge=1, le=64)
    compress: bool = False
    downtime_ms: float = Field(300.0, gt=0, le=60_000)
    max_rounds: int = Field(30, ge=1, le=1000)
    bandwidth_cap_mbps: float | None = Field(None, gt=0)
    timeout_s: float = Field(600.0, gt=0, le=86_400)
    guest_network: Literal["none", "l2", "vxlan", "hostroute"] = Field(
        "none", description="the guests' network identity and how it moves (none: guests "
                            "without one; see topologies/guests.py)")
    client_probe_ms: float = Field(1.0, ge=0.2, le=1000,
                                   description="the client's request interval to each guest")
    agents: hv.AgentsOnly | None = None
    qemu: hv.QemuParams | None = None

    @field_validator("hypervisor")
    @classmethod
    def _choice(cls, v: Any) -> Any:
        return hv.check_choice(v)

    @field_validator("guest_network", "downtime_ms")
    @classmethod
    def _qemu_can_honour(cls, v: Any, info: ValidationInfo) -> Any:
        return hv.check_for_qemu(str(info.field_name), v, info.data)

    @field_validator("agents", "qemu")
    @classmethod
    def _tables(cls, v: Any, info: ValidationInfo) -> Any:
        return hv.check_tables(str(info.field_name), v, info.data)

    @property
    def hypervisors(self) -> list[str]:
        return hv.hypervisors(self.hypervisor)

    def for_agents(self) -> MigrationParams:
        """The agents' settings: ``[migration]`` with ``[migration.agents]`` applied."""
        over = self.agents.model_dump(exclude_none=True) if self.agents else {}
        return self.model_copy(update=over)


class Common(Strict):
    name: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    kind: str
    description: str = ""
    repetitions: int = Field(1, ge=1, le=100)
    sweep: dict[str, list[Any]] = Field(default_factory=dict)
    topology: TopologyChoice | None = Field(
        None, description="the network, where the kind accepts a choice "
                          "(testbed/run/topochoice.py)")
    tcp_congestion: Literal["cubic", "bbr", "reno"] = Field(
        "cubic", description="every host's TCP congestion control (the agents', iperf3's and "
                             "QEMU's connections alike): pinned, never the machine's default")

    @property
    def needs(self) -> tuple[str, ...]:
        return ("netns", "veth", "tbf", "netem")

    @property
    def topology_owned(self) -> dict[str, Any]:
        """Parameters of a chosen topology that the spec's own keys set."""
        return {}

    def topology_needs(self, base: tuple[str, ...]) -> tuple[str, ...]:
        """``base`` plus what the chosen topology's links and routes need."""
        if self.topology is None:
            return base
        extra = network_needs(build_choice(self.topology, self.topology_owned))
        return base + tuple(f for f in extra if f not in base)

    @model_validator(mode="after")
    def _sweep_lists_not_empty(self) -> Common:
        for key, values in self.sweep.items():
            if not values:
                raise ValueError(f"sweep key {key!r} has no values")
        return self


class LinkParams(Strict):
    delay_ms: float = Field(25.0, ge=0, le=5000, description="one-way delay, each direction")
    bw_mbps: float | None = Field(100.0, gt=0, le=100_000)
    jitter_ms: float = Field(0.0, ge=0, le=1000)
    loss_pct: float = Field(0.0, ge=0, le=100)


class MeasureParams(Strict):
    ping_count: int = Field(20, ge=2, le=10_000)
    iperf_seconds: float = Field(5.0, gt=0, le=110)
    iperf_streams: int = Field(1, ge=1, le=64)


class SmokeSpec(Common):
    """Two hosts across one shaped link: RTT and iperf3 throughput vs the configured values."""

    kind: Literal["smoke"] = "smoke"
    link: LinkParams = LinkParams()
    measure: MeasureParams = MeasureParams()

    @property
    def needs(self) -> tuple[str, ...]:
        if self.topology is not None:
            return self.topology_needs(("netns", "veth"))
        netem = self.link.delay_ms or self.link.jitter_ms or self.link.loss_pct
        return ("netns", "veth", "tbf", "netem") if netem else ("netns", "veth", "tbf")


class CoreLoadSpec(Common):
    """Concurrent migrations across a spine-leaf fabric: spine load, ECMP, management impact."""

    kind: Literal["core-load"] = "core-load"
    spines: int = Field(2, ge=1, le=16)
    leaves: int = Field(2, ge=2, le=32)
    hosts_per_leaf: int = Field(2, ge=1, le=32)
    host_link_mbps: float = Field(200.0, gt=0)
    fabric_link_mbps: float = Field(100.0, gt=0)
    ecmp_hash: Literal["l3", "l4"] = "l4"
    concurrency: list[int] = Field(default_factory=lambda: [1, 4, 8], min_length=1)
    paths: list[Literal["own-stack", "shared-management", "capped"]] = Field(
        default_factory=lambda: ["own-stack", "shared-management", "capped"], min_length=1)
    migration_cap_mbps: float = Field(40.0, gt=0, description="cap of the 'capped' path")
    compare_paths_at: list[int] | None = Field(
        None, description="burst sizes at which the paths after the first are run "
                          "(default: every size in `concurrency`)")
    probe_interval_ms: float = Field(20.0, ge=1, le=1000)
    background_flow: bool = True
    background_mbps: float = Field(30.0, gt=0, description="the tenant flow's offered rate")
    sample_hz: float = Field(10.0, ge=1, le=100)
    tcp_baseline: bool = Field(
        True, description="after each burst of the agents' (2 or more), iperf3 sends the "
                          "same bytes over the same stacks, one flow per migration: how "
                          "evenly TCP alone shares them, against the same fluid model")
    migration: MigrationParams = MigrationParams(workload_mib=16, dirty_rate_mbs=2.0)
    compare_hypervisors_at: list[int] | None = Field(
        None, description="burst sizes at which the hypervisors after the first run (default: "
                          "every size in `concurrency`; may differ from them)")
    compare_hypervisors_on: list[Literal["own-stack", "shared-management", "capped"]] | None \
        = Field(None, description="paths on which they run (default: every path)")

    @property
    def needs(self) -> tuple[str, ...]:
        return ("netns", "veth", "tbf", "htb", "ecmp")

    @field_validator("compare_hypervisors_at", "compare_hypervisors_on")
    @classmethod
    def _compare(cls, v: Any, info: ValidationInfo) -> Any:
        hv.check_compare(v, info.data)
        if info.field_name == "compare_hypervisors_on" and v is not None:
            unknown = [p for p in v if p not in info.data.get("paths", [])]
            if unknown:
                raise ValueError(f"{unknown} not among paths {info.data.get('paths')}")
        elif v is not None and any(c < 1 for c in v):
            raise ValueError("burst sizes must be >= 1")
        return v


class LongDistanceSpec(Common):
    """One migration across a WAN at growing RTT: time, rounds, downtime, goodput vs iperf3."""

    kind: Literal["long-distance"] = "long-distance"
    rtt_ms: list[float] = Field(default_factory=lambda: [1, 10, 50, 100, 150, 200],
                                min_length=1)
    bw_mbps: float = Field(100.0, gt=0)
    loss_pct: float = Field(0.0, ge=0, le=100)
    jitter_ms: float = Field(0.0, ge=0)
    transports: list[Literal["default-buffers", "bdp-buffers", "streams"]] = Field(
        default_factory=lambda: ["default-buffers", "bdp-buffers", "streams"], min_length=1)
    streams: int = Field(4, ge=2, le=64)
    compare_transports_at: list[float] | None = Field(
        None, description="RTTs at which the transports after the first are run "
                          "(default: every RTT)")
    iperf_seconds: float = Field(5.0, gt=0, le=110)
    iperf_omit_s: float = Field(2.0, ge=0, le=30, description="seconds of slow start left "
                                "out of iperf3's steady-state figure (reported beside the "
                                "whole run's, which the migrations are compared with)")
    mark_rtt_ms: float = 150.0
    migration: MigrationParams = MigrationParams(workload_mib=32, dirty_rate_mbs=2.0)
    compare_hypervisors_at: list[float] | None = Field(
        None, description="RTTs at which the hypervisors after the first run (default: every "
                          "RTT); QEMU runs once per RTT: `transports` are the agents' socket "
                          "choices, QEMU sets no socket buffer (the kernel autotunes it)")

    @property
    def needs(self) -> tuple[str, ...]:
        base = ("netns", "veth", "tbf")
        base = (*base, "netem") if any(self.rtt_ms) or self.jitter_ms or self.loss_pct \
            else base
        return self.topology_needs(base)

    @property
    def topology_owned(self) -> dict[str, Any]:
        return {"rtt_ms": self.rtt_ms[0], "bw_mbps": self.bw_mbps, "loss_pct": self.loss_pct,
                "jitter_ms": self.jitter_ms}

    @field_validator("compare_hypervisors_at")
    @classmethod
    def _compare(cls, v: Any, info: ValidationInfo) -> Any:
        hv.check_compare(v, info.data)
        missing = [r for r in v or () if r not in info.data.get("rtt_ms", [])]
        if missing:
            raise ValueError(f"{missing} not among rtt_ms {info.data.get('rtt_ms')}")
        return v

    @model_validator(mode="after")
    def _no_vlan_around_the_wan(self) -> LongDistanceSpec:
        if self.migration.for_agents().guest_network == "l2":
            raise ValueError("migration.guest_network = 'l2' would join the sites' VM "
                             "networks by a link around the WAN (unshaped); use 'vxlan' or "
                             "'hostroute'")
        return self


class CloudMigrationParams(MigrationParams):
    """The cloud path's migrations: guests without a network identity."""

    @field_validator("agents")
    @classmethod
    def _no_identity_for_agents(cls, v: hv.AgentsOnly | None) -> hv.AgentsOnly | None:
        if v is not None and v.guest_network not in (None, "none"):
            cls._no_identity(v.guest_network)
        return v

    @field_validator("guest_network")
    @classmethod
    def _no_identity(cls, v: str) -> str:
        if v != "none":
            raise ValueError(f"{v!r} is not modelled on the cloud path (the cloud site's "
                             "addresses sit behind its NAT gateway; its guests move without "
                             "a network identity): use \"none\"")
        return v


class CloudSpec(Common):
    """On-prem -> WAN -> cloud gateway: plaintext vs encrypted, wire check, isolation check."""

    kind: Literal["cloud-encrypted"] = "cloud-encrypted"
    rtt_ms: float = Field(50.0, ge=0)
    bw_mbps: float = Field(100.0, gt=0)
    modes: list[Literal["plaintext", "encrypted"]] = Field(
        default_factory=lambda: ["plaintext", "encrypted"], min_length=1)
    wire_check: bool = True
    migration: CloudMigrationParams = CloudMigrationParams(workload_mib=32, dirty_rate_mbs=2.0)

    @property
    def needs(self) -> tuple[str, ...]:
        base = ("netns", "veth", "tbf")
        return (*base, "netem") if self.rtt_ms else base


class RdmaMigrationParams(MigrationParams):
    """The rdma kind's migrations: the agents' built-in guest, the same settings over TCP and
    over RDMA WRITE; a setting RDMA cannot honour is refused (the comparison would not be)."""

    @field_validator("hypervisor")
    @classmethod
    def _agents_only(cls, v: Any) -> Any:
        if hv.hypervisors(v) != ["agents"]:
            raise ValueError(f"{v!r}: only the agents migrate by RDMA WRITE; use \"agents\"")
        return v

    @field_validator("compress")
    @classmethod
    def _no_compress(cls, v: bool) -> bool:
        if v:
            raise ValueError("does not apply to RDMA WRITE (pages land in the destination's "
                             "image as they are); TCP and RDMA run with the same settings")
        return v

    @field_validator("bandwidth_cap_mbps")
    @classmethod
    def _no_cap(cls, v: float | None) -> float | None:
        if v is not None:
            raise ValueError("the cap paces the TCP streams, not RDMA WRITEs; set the path's "
                             "rate with bw_mbps")
        return v

    @field_validator("guest_network")
    @classmethod
    def _no_identity(cls, v: str) -> str:
        if v != "none":
            raise ValueError(f"{v!r}: the rdma kind migrates guests without a network "
                             "identity; use \"none\"")
        return v


class RdmaSpec(Common):
    """TCP vs RDMA (Soft-RoCE) migration on the same two-host path, per RTT and loss."""

    kind: Literal["rdma"] = "rdma"
    rtt_ms: list[float] = Field(default_factory=lambda: [0.0, 10.0, 50.0], min_length=1,
                                description="round-trip times (half each way)")
    loss_pct: list[float] = Field(default_factory=lambda: [0.0, 0.1, 1.0], min_length=1,
                                  description="random loss, % each way")
    bw_mbps: float = Field(100.0, gt=0, le=100_000, description="the path's rate (tbf)")
    queue_pkts: int | None = Field(
        1000, ge=1, le=1_000_000, description="the bottleneck's queue in packets, the same at "
        "every point (tbf without delay and loss, netem otherwise, which holds at least 1000): "
        "Soft-RoCE has no congestion control, so a shallower queue drops its bursts; None: "
        "one BDP, at least 64 packets, as the other kinds")
    baseline_seconds: float = Field(5.0, gt=0, le=60,
                                    description="each baseline: iperf3, then ib_write_bw")
    transports: list[Literal["tcp", "rdma"]] = Field(
        default_factory=lambda: ["tcp", "rdma"], min_length=1)
    idle_timeout_s: float = Field(60.0, gt=0, le=3600, description="how long each agent waits "
                                  "for its peer (a WRITE under loss recovers by go-back-N "
                                  "after RoCE's ACK timeout: seconds under emulation)")
    migration: RdmaMigrationParams = RdmaMigrationParams(workload_mib=32, dirty_rate_mbs=2.0)

    @property
    def needs(self) -> tuple[str, ...]:
        base = ("netns", "veth", "tbf", *(("rdma_rxe",) if "rdma" in self.transports else ()))
        return (*base, "netem") if any(self.rtt_ms) or any(self.loss_pct) else base

    @field_validator("rtt_ms", "loss_pct")
    @classmethod
    def _points(cls, v: list[float], info: ValidationInfo) -> list[float]:
        top = 5000.0 if info.field_name == "rtt_ms" else 100.0
        bad = [x for x in v if not 0 <= x <= top]
        if bad:
            raise ValueError(f"{bad} outside 0..{top:g}")
        if len(set(v)) != len(v):
            raise ValueError(f"{v} lists a value twice")
        return v

    @field_validator("transports")
    @classmethod
    def _once_each(cls, v: list[str]) -> list[str]:
        if len(set(v)) != len(v):
            raise ValueError(f"{v} names a transport twice")
        return v


KINDS: dict[str, type[Common]] = {
    "smoke": SmokeSpec, "core-load": CoreLoadSpec, "long-distance": LongDistanceSpec,
    "cloud-encrypted": CloudSpec, "rdma": RdmaSpec,
}
Spec = Common


def load(path: Path) -> Common:
    """Read and validate one spec file."""
    data, text = read_toml(path, SpecError)
    return parse(data, str(path), text)


def parse(data: dict[str, Any], origin: str = "<spec>", text: str = "") -> Common:
    """Validate ``data`` (a parsed spec) into its kind's model, sweep values included."""
    kind = data.get("kind", "smoke")
    model = KINDS.get(kind) if isinstance(kind, str) else None
    if model is None:
        line = _line_of(text, ("kind",))
        raise SpecError(f"{origin}{line}: key 'kind': unknown experiment kind {kind!r} "
                        f"(known: {', '.join(KINDS)})")
    data = {"name": Path(origin).stem if origin != "<spec>" else kind} | data
    resolve_file(data, origin)
    spec = _validate(model, data, origin, text)
    for variant in _expand(data, spec.sweep, origin):  # every sweep point must be valid too
        _check_topology(_validate(model, variant, origin, text), variant, origin, text)
    return spec


def _check_topology(spec: Common, data: dict[str, Any], origin: str, text: str) -> None:
    """A ``[topology]`` table must fit the kind (``testbed.run.topochoice``)."""
    if spec.topology is None:
        return
    try:
        check(spec.kind, spec.topology, spec.topology_owned, origin, text, set(data))
    except ChoiceError as exc:
        raise SpecError(str(exc)) from None


def _validate(model: type[Common], data: dict[str, Any], origin: str, text: str) -> Common:
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            loc = tuple(str(p) for p in err["loc"])
            problems.append(f"{origin}{_line_of(text, loc)}: key '{'.'.join(loc)}': "
                            f"{err['msg']}")
        raise SpecError("; ".join(problems)) from None


def _line_of(text: str, loc: tuple[str, ...]) -> str:
    """':LINE' where the key of ``loc`` is set in the TOML text, or '' when not found."""
    if not text or not loc:
        return ""
    lines = text.splitlines()
    table = re.compile(rf"^\s*\[\s*{re.escape('.'.join(loc))}\s*\]")
    hit = next((i for i, ln in enumerate(lines) if table.match(ln)), None)
    if hit is not None:  # the key is a table of its own
        return f":{hit + 1}"
    section, start = "", 0
    for depth in range(len(loc) - 1, 0, -1):  # the deepest [table] that exists
        header = re.compile(rf"^\s*\[\s*{re.escape('.'.join(loc[:depth]))}\s*\]")
        hit = next((i for i, ln in enumerate(lines) if header.match(ln)), None)
        if hit is not None:
            section, start = ".".join(loc[:depth]), hit + 1
            break
    key = loc[len(section.split(".")) if section else 0]
    pat = re.compile(rf"^\s*[\"']?{re.escape(key)}[\"']?\s*=")
    for i in range(start, len(lines)):
        stripped = lines[i].lstrip()
        if stripped.startswith("[") and not re.match(rf"\[\s*{re.escape(section)}\s*\]",
                                                     stripped):
            break  # the next table: the key is not set in this one
        if pat.match(lines[i]):
            return f":{i + 1}"
    table = re.compile(rf"^\s*\[\s*{re.escape('.'.join(loc))}\s*\]")  # a whole table's
    return next((f":{i + 1}" for i, ln in enumerate(lines) if table.match(ln)), "")


def _set_dotted(data: dict[str, Any], dotted: str, value: Any, origin: str) -> None:
    keys = dotted.split(".")
    node = data
    for k in keys[:-1]:
        nxt = node.setdefault(k, {})
        if not isinstance(nxt, dict):
            raise SpecError(f"{origin}: sweep key {dotted!r}: {k!r} is not a table")
        node = nxt
    node[keys[-1]] = value


def _expand(data: dict[str, Any], sweep: dict[str, list[Any]],
            origin: str) -> list[dict[str, Any]]:
    import copy

    keys = list(sweep)
    variants = []
    for combo in itertools.product(*(sweep[k] for k in keys)):
        variant = copy.deepcopy(data)
        variant.pop("sweep", None)
        for k, v in zip(keys, combo, strict=True):
            if k in ("sweep", "name", "kind", "repetitions"):
                raise SpecError(f"{origin}: sweep key {k!r} cannot be swept")
            _set_dotted(variant, k, v, origin)
        variants.append(variant)
    return variants


def variants(spec: Common) -> list[tuple[dict[str, Any], Common]]:
    """Every point of the sweep: (the swept values, the concrete spec)."""
    base = spec.model_dump()
    out = []
    for data in _expand(base, spec.sweep, spec.name):
        point = {k: _get_dotted(data, k) for k in spec.sweep}
        out.append((point, type(spec).model_validate(data | {"sweep": {}})))
    return out


def _get_dotted(data: dict[str, Any], dotted: str) -> Any:
    node: Any = data
    for k in dotted.split("."):
        node = node[k]
    return node


def default_suite_dir() -> Path:
    return Path(__file__).resolve().parents[2] / "experiments" / "default"


def default_suite_files() -> list[Path]:
    """The spec files `testbed run` runs with no spec: experiments/default/*.toml."""
    files = sorted(default_suite_dir().glob("*.toml"))
    if not files:
        raise SpecError(f"no default suite in {default_suite_dir()}")
    return files


def default_suite() -> list[Common]:
    """The default suite's specs, validated."""
    return [load(p) for p in default_suite_files()]

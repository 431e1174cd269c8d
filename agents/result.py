"""The one JSON document a source prints: what went over the wire and how the switchover went."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any


@dataclass
class MigrationResult:
    completed: bool = False
    # completed | rolled-back | indeterminate-then-resolved | indeterminate (guest paused)
    outcome: str = ""
    decision: str | None = None  # the destination's: committed | aborted (None: unknown)
    migration: str = ""  # the migration id (what `python -m agents resolve` asks about)
    resolved_via: str | None = None  # where the answer came from after it was lost
    source_kind: str = ""  # workload | pid | image
    image_bytes: int = 0
    bytes_on_wire: int = 0
    preflight_bytes: int = 0
    rounds: int = 0
    pages_sent_per_round: list[int] = field(default_factory=list)
    zero_pages_per_round: list[int] = field(default_factory=list)
    dirty_pages_per_round: list[int] = field(default_factory=list)
    round_seconds: list[float] = field(default_factory=list)
    # the link rate each pre-copy round's switchover check used (Mbit/s)
    decision_rate_mbps: list[float] = field(default_factory=list)
    migration_time_s: float = 0.0
    downtime_ms: float | None = None  # agent side: pause -> resume acknowledged
    client_downtime_ms: float | None = None  # client side: longest gap between service replies
    goodput_mbps: float = 0.0  # bytes_on_wire over the migration time
    stream_rate_mbps: float = 0.0  # best round's rate (pipelined: delivered, TCP_INFO)
    integrity_ok: bool = False
    dirty_tracking: str = ""
    memory_reader: str | None = None  # shared-arena | process_vm_readv (a live process)
    switchover_reason: str = ""
    throttle_max: float = 0.0
    transport: str = "tcp"
    encrypted: bool = False
    cipher: str | None = None  # TLS cipher suite when encrypted
    rdma: dict[str, Any] | None = None  # pages by RDMA WRITE: device, GIDs, region, bytes
    streams: int = 1
    compression: str = "none"
    bandwidth_cap_mbps: float | None = None
    socket_buffer_bytes: int | None = None
    socket_buffers: str = "bdp"
    sysctls_raised: list[str] = field(default_factory=list)
    preflight: dict[str, Any] = field(default_factory=dict)
    resumed: bool = False
    destination_pid: int | None = None
    destination_service: list | None = None
    counter_at_switchover: int | None = None
    counter_first_at_destination: int | None = None
    counter_continuity_ok: bool | None = None
    verify_ms: float | None = None
    source_verified: bool | None = None  # the paused original == what was sent
    source_verify_ms: float | None = None
    stop_ms: float | None = None  # the pause and the last dirty collection, before its send
    paced: str | None = None  # "tcp": the data streams paced at TCP's own rate
    # CLOCK_MONOTONIC at round 0's start, the pause and the decision: one clock for every
    # process on the machine, so a burst's migrations line up by it
    monotonic_s: dict[str, float] = field(default_factory=dict)
    pipelined: bool = False  # pre-copy rounds not acknowledged one by one (one TCP stream)
    drain_ms: float | None = None  # waited before the pause for the queued bytes to leave
    # the data streams' retransmitted bytes, timeouts and time in them: "precopy" (round 0
    # to the pause) and "switchover" (the pause to PREPARED), where TCP_INFO has them
    tcp_losses: dict[str, dict[str, Any]] = field(default_factory=dict)
    disk_mode: str | None = None  # transfer | replicated (None: no disk)
    disk_bytes: int = 0
    disk_bytes_on_wire: int = 0  # part of bytes_on_wire
    disk_blocks_per_round: list[int] = field(default_factory=list)
    throttle_mechanism: str = ""  # cgroup2-cpu.max | cgroup1-cfs-quota | sigstop-duty-cycle
    cpu_copy_s: dict[str, float] | None = None  # user, system: round 0 to the final round sent
    resume_ms: float | None = None  # destination: "go" -> resumed guest serving (link up)
    prepare_ms: float | None = None  # destination: final round in -> PREPARED out (the
    #                                  COMMIT, its verification, the durable "prepared")
    commit_ms: float | None = None  # destination: GO in -> DECISION out (the durable
    #                                 "committed", the resume and its hook)
    hooks: dict[str, Any] = field(default_factory=dict)  # on_resume / on_end: rc, ms
    warnings: list[str] = field(default_factory=list)
    error: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=False)

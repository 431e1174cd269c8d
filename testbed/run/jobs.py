"""The one mapping from a spec's ``[migration]`` table to a migration job, for every kind.

A kind supplies only what its topology decides (which hosts, which addresses and ports, the
guest that moves, extra agent arguments); every ``[migration]`` key reaches the agents the
same way in every kind (tests/unit/testbed/run/test_jobs.py checks each key).
"""

from __future__ import annotations

from typing import Any

from ..measure.migration import MigrationJob
from .spec import MigrationParams

# MigrationParams keys that are not agent options, and who reads them instead
NOT_AGENT_OPTIONS = {
    "guest_network": "the kind, to build the guests' network",
    "hypervisor": "the kind, to choose who migrates",
    "agents": "MigrationParams.for_agents, the agents' own overrides (kinds pass its result)",
    "qemu": "testbed.run.qemu_jobs, QEMU's own settings",
}


def job_from(m: MigrationParams, src: str, dst: str, dst_addr: str, *, port: int,
             streams: int | None = None, **path: Any) -> MigrationJob:
    """The job for one migration of ``m`` from ``src`` to ``dst_addr`` (on ``dst``).

    ``streams`` overrides ``m.streams`` (a kind comparing transports); ``path`` holds the
    path-specific :class:`MigrationJob` fields (bind, connect_addr, connect_port, label, guest,
    extra_args, destination_args, keep_guest)."""
    return MigrationJob(src, dst, dst_addr, port=port, workload_mib=m.workload_mib,
                        dirty_rate_mbs=m.dirty_rate_mbs,
                        streams=m.streams if streams is None else streams,
                        compress=m.compress, downtime_ms=m.downtime_ms,
                        bandwidth_cap_mbps=m.bandwidth_cap_mbps, max_rounds=m.max_rounds,
                        timeout_s=m.timeout_s, client_probe_ms=m.client_probe_ms, **path)


def baseline_of(iperf3: dict[str, Any]) -> dict[str, Any]:
    """What a migration carries of its path's iperf3 baseline, for the report and the model
    (``testbed.results.model``): the run's rate from a cold start, its steady rate and its
    delivery curve (bytes received by each second from the cold start)."""
    return {"iperf3_mbps": iperf3["iperf3_mbps"],
            "iperf3_steady_mbps": iperf3.get("steady_mbps"),
            "iperf3_delivered": iperf3.get("delivered")}

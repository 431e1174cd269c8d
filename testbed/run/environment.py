"""The environment a run happened in, recorded in every results document."""

from __future__ import annotations

import os
import platform
import subprocess
import sys
from importlib import metadata

from ..host.doctor import IN_VM_ENV


def _version(dist: str) -> str | None:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def _tool_version(argv: list[str]) -> str | None:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (out.stdout or out.stderr).strip().splitlines()
    return text[0] if text else None


def _read(path: str) -> str | None:
    try:
        with open(path) as f:
            return f.read().strip()
    except OSError:
        return None


def describe() -> dict[str, object]:
    import mininet.net

    return {
        "kernel": platform.release(),
        "mode": "vm" if os.environ.get(IN_VM_ENV) == "1" else "host",
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        # the kernel's own default; the lab's hosts run the spec's tcp_congestion instead
        "tcp_congestion_default": _read("/proc/sys/net/ipv4/tcp_congestion_control"),
        "versions": {
            "testbed": _version("migration-testbed"),
            "mininet": getattr(mininet.net, "VERSION", None),
            "trio": _version("trio"),
            "pyroute2": _version("pyroute2"),
            "iperf3": _tool_version(["iperf3", "--version"]),
            "tc": _tool_version(["tc", "-V"]),
        },
    }

"""Pure builders: the QEMU command line of a guest, and the migration settings as QMP calls.

Nothing here runs anything; :mod:`agents.qemu.driver` executes what these return.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

Role = Literal["source", "destination"]
TLS_ID = "tb-tls0"
# what the guest's kernel and initramfs need beside the dirtier (measured: 128 MiB dirtied in
# 192 MiB of RAM panics, "System is deadlocked on memory"; in 224 MiB it runs)
KERNEL_MIB = 96
UNLIMITED_BPS = 10 * 2**30  # max-bandwidth when none is asked for (QEMU's default: 128 MiB/s)


@dataclass(frozen=True)
class Guest:
    """The guest: RAM and vCPUs of the machine, size/rate/hot set of its memory dirtier."""

    ram_mib: int = 256
    vcpus: int = 1
    dirty_mib: int = 64  # the dirtier's allocation, touched in full at start
    dirty_rate_mbs: float = 8.0  # MB/s of pages written into the hot set
    hot_mib: int = 16
    heartbeat_ms: int = 100
    markers: int = 0  # plaintext markers (agents/markers.py format) planted in cold pages

    def __post_init__(self) -> None:
        if self.dirty_mib + KERNEL_MIB > self.ram_mib:
            raise ValueError(f"dirty_mib {self.dirty_mib} leaves too little of ram_mib "
                             f"{self.ram_mib} for the kernel (keep {KERNEL_MIB} MiB)")
        if self.dirty_rate_mbs < 0 or self.hot_mib <= 0 or self.vcpus < 1 or self.markers < 0:
            raise ValueError("dirty rate and markers must be >= 0, hot set and vCPUs >= 1")

    def kernel_args(self) -> str:
        return (f"console=ttyS0 quiet panic=-1 tb.size={self.dirty_mib} "
                f"tb.rate={self.dirty_rate_mbs:g} tb.hot={self.hot_mib} "
                f"tb.period={self.heartbeat_ms}"
                + (f" tb.markers={self.markers}" if self.markers else ""))


@dataclass(frozen=True)
class Options:
    """Migration options, as users of QEMU know them."""

    multifd_channels: int = 0  # 0: no multifd
    compression: Literal["none", "zstd", "zlib"] = "none"  # multifd's compression
    downtime_limit_ms: int = 300
    max_bandwidth_mbps: float | None = None  # None: effectively unlimited
    auto_converge: bool = False
    postcopy: bool = False
    postcopy_preempt: bool = False
    tls: bool = False
    max_iterations: int | None = None  # force the stop-and-copy at this dirty-sync count

    def __post_init__(self) -> None:
        if self.max_iterations is not None and self.max_iterations < 1:
            raise ValueError("max_iterations must be >= 1")
        if self.compression != "none" and not self.multifd_channels:
            raise ValueError("compression needs multifd channels (QEMU compresses multifd)")
        if self.postcopy_preempt and not self.postcopy:
            raise ValueError("postcopy_preempt needs postcopy")


@dataclass(frozen=True)
class Paths:
    """Where one guest's sockets and logs live (one directory per migration run)."""

    run_dir: Path
    role: Role

    @property
    def qmp(self) -> Path:
        return self.run_dir / f"{self.role}.qmp"

    @property
    def serial(self) -> Path:
        return self.run_dir / f"{self.role}.serial"

    @property
    def stderr(self) -> Path:
        return self.run_dir / f"{self.role}.stderr"

    @property
    def tls_dir(self) -> Path:
        return self.run_dir / f"tls-{self.role}"


def qemu_argv(guest: Guest, kernel: Path, initrd: Path, paths: Paths, accel: str = "tcg",
              tls: bool = False, qemu: str = "qemu-system-x86_64") -> list[str]:
    """The full command line; the destination's is the source's plus ``-incoming defer``.

    No network device, no disk, no 9p: the guest lives in RAM and talks on its serial port
    (a file), so both sides have identical devices and nothing blocks migration."""
    argv = [qemu, "-accel", accel, "-machine", "q35", "-cpu", "max" if accel == "kvm" else
            "qemu64", "-m", str(guest.ram_mib), "-smp", str(guest.vcpus),
            "-nodefaults", "-no-user-config", "-display", "none", "-no-reboot",
            "-kernel", str(kernel), "-initrd", str(initrd), "-append", guest.kernel_args(),
            "-chardev", f"file,id=tbser,path={paths.serial}", "-serial", "chardev:tbser",
            "-qmp", f"unix:{paths.qmp},server=on,wait=off"]
    if tls:
        endpoint = "server" if paths.role == "destination" else "client"
        argv += ["-object", f"tls-creds-x509,id={TLS_ID},endpoint={endpoint},"
                 f"dir={paths.tls_dir},verify-peer=on"]
    if paths.role == "destination":
        argv += ["-incoming", "defer"]
    return argv


def capabilities(opts: Options) -> list[dict[str, Any]]:
    """``migrate-set-capabilities`` arguments (both sides need the same stream features)."""
    caps = {"events": True, "multifd": bool(opts.multifd_channels),
            "auto-converge": opts.auto_converge, "postcopy-ram": opts.postcopy}
    if opts.postcopy_preempt:
        caps["postcopy-preempt"] = True
    return [{"capability": k, "state": v} for k, v in caps.items()]


def parameters(opts: Options, role: Role, tls_hostname: str | None = None) -> dict[str, Any]:
    """``migrate-set-parameters`` arguments for ``role``."""
    params: dict[str, Any] = {}
    if opts.multifd_channels:
        params["multifd-channels"] = opts.multifd_channels
        params["multifd-compression"] = opts.compression
    if opts.tls:
        params["tls-creds"] = TLS_ID
        if role == "source" and tls_hostname:
            params["tls-hostname"] = tls_hostname
    if role == "source":
        params["downtime-limit"] = opts.downtime_limit_ms
        params["max-bandwidth"] = (int(opts.max_bandwidth_mbps * 1e6 / 8)
                                   if opts.max_bandwidth_mbps else UNLIMITED_BPS)
    return params


def uri(host: str, port: int) -> str:
    """A ``tcp:`` migration URI (IPv6 literals bracketed)."""
    return f"tcp:[{host}]:{port}" if ":" in host else f"tcp:{host}:{port}"

"""``python -m agents.qemu migrate --to ADDR ...``: one QEMU migration, one JSON result.

Both QEMUs run on this machine (each optionally in a named network namespace); the exit
status is 0 only if the migration completed and the guest ran on at the destination.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from .command import Guest, Options
from .driver import Plan, QemuError, local_launcher, migrate
from .image import ImageError, guest_image


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m agents.qemu")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("image", help="build (or find cached) the guest image; print its paths")
    m = sub.add_parser("migrate", help="migrate a fresh guest between two local QEMUs")
    m.add_argument("--to", required=True, metavar="ADDR",
                   help="the destination's (migration-stack) address QEMU listens on")
    m.add_argument("--port", type=int, default=4444)
    m.add_argument("--src-netns", metavar="PATH", help="e.g. /run/netns/NAME")
    m.add_argument("--dst-netns", metavar="PATH")
    m.add_argument("--run-dir", type=Path, help="sockets, consoles, TLS files (default: temp)")
    m.add_argument("--accel", choices=("tcg", "kvm"), default="tcg")
    m.add_argument("--ram", type=int, default=256, help="guest RAM, MiB")
    m.add_argument("--vcpus", type=int, default=1)
    m.add_argument("--dirty", type=int, default=64, help="dirtier allocation, MiB")
    m.add_argument("--dirty-rate", type=float, default=8.0, help="MB/s of pages written")
    m.add_argument("--hot", type=int, default=16, help="hot set, MiB")
    m.add_argument("--multifd", type=int, default=0, metavar="CHANNELS")
    m.add_argument("--compression", choices=("none", "zstd", "zlib"), default="none")
    m.add_argument("--downtime-limit", type=int, default=300, metavar="MS")
    m.add_argument("--max-bandwidth", type=float, metavar="MBIT/S")
    m.add_argument("--auto-converge", action="store_true")
    m.add_argument("--postcopy", action="store_true")
    m.add_argument("--postcopy-preempt", action="store_true")
    m.add_argument("--tls", action="store_true", help="tls-creds-x509, made per migration")
    m.add_argument("--warmup", type=float, default=1.0, metavar="S")
    m.add_argument("--timeout", type=float, default=300.0, metavar="S")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.cmd == "image":
            img = guest_image()
            print(json.dumps({"kernel": str(img.kernel), "initrd": str(img.initrd)}))
            return 0
        guest = Guest(args.ram, args.vcpus, args.dirty, args.dirty_rate, args.hot)
        opts = Options(args.multifd, args.compression, args.downtime_limit,
                       args.max_bandwidth, args.auto_converge, args.postcopy,
                       args.postcopy_preempt, args.tls)
    except (ValueError, ImageError) as exc:
        print(json.dumps({"hypervisor": "qemu", "completed": False, "error": str(exc)}))
        return 2
    with tempfile.TemporaryDirectory(prefix="tb-qemu-") as tmp:
        plan = Plan(args.to, args.run_dir or Path(tmp), args.port, guest, opts, args.accel,
                    warmup_s=args.warmup, timeout_s=args.timeout)
        try:
            res = migrate(plan, local_launcher({"source": args.src_netns,
                                                "destination": args.dst_netns}))
        except (QemuError, ImageError) as exc:
            res = {"hypervisor": "qemu", "completed": False, "error": str(exc)}
    print(json.dumps(res))
    return 0 if res.get("completed") and res.get("integrity_ok") else 1


if __name__ == "__main__":
    sys.exit(main())

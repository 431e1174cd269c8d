"""Entry points: ``python -m agents (workload | source | destination) ...``.

The source prints one JSON result and exits non-zero unless the migration completed; the
destination prints ``{"listening": [host, port]}`` first, then one JSON outcome per migration.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import subprocess
import sys
import time

from agents.addresses import hostport
from agents.guest import workload
from agents.guest.workload import parse_fraction, parse_mix, parse_size
from agents.runtime.forking import DEVNULL, PIPE, ChildProcess, fork_call
from agents.security.locator import (
    add_credentials_parser,
    add_destination_args,
    add_source_args,
    cmd_credentials,
    destination_transport,
    source_transport,
)


def cpu_seconds() -> float:
    """User + system CPU time of this agent process so far (not its guest's)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return round(ru.ru_utime + ru.ru_stime, 3)


def cpu_split() -> dict[str, float]:
    """This agent's user and system CPU seconds so far (Soft-RoCE's kernel work shows as
    system time only where it runs in this process's context: see benchmarks/rdma_bench)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"user": round(ru.ru_utime, 3), "system": round(ru.ru_stime, 3)}


def _since(cpu0: dict[str, float]) -> dict[str, float]:
    """User and system CPU seconds since ``cpu0`` (start-up and imports left out)."""
    now = cpu_split()
    return {k: round(now[k] - cpu0.get(k, 0.0), 3) for k in now}


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m agents")
    sub = ap.add_subparsers(dest="cmd", required=True)

    workload.add_arguments(sub.add_parser(
        "workload", help="start the built-in guest (or resume one from an image)"))

    s = sub.add_parser("source", help="migrate a process, an image or a new guest")
    what = s.add_mutually_exclusive_group(required=True)
    what.add_argument("--pid", type=int)
    what.add_argument("--image", metavar="PATH")
    what.add_argument("--workload", type=parse_size, metavar="SIZE")
    s.add_argument("--to", type=hostport, metavar="HOST:PORT", help="or from --locator")
    add_source_args(s)
    s.add_argument("--markers", type=int, default=0, help="--workload: plant N markers")
    s.add_argument("--bind", metavar="ADDR",
                   help="source address of the migration (selects its function stack)")
    s.add_argument("--socket-buffers", choices=["bdp", "default"], default="bdp",
                   help="bdp: sized from the measured bandwidth-delay product (sysctls raised "
                        "as needed); default: the OS's autotuning as configured")
    s.add_argument("--streams", type=int, default=1)
    s.add_argument("--compress", action="store_true", help="zstd per batch")
    s.add_argument("--bandwidth-cap", type=float, metavar="MBIT", help="Mbit/s for the migration")
    s.add_argument("--downtime-ms", type=float, default=300.0)
    s.add_argument("--max-rounds", type=int, default=30)
    s.add_argument("--max-bytes", type=parse_size, help="default: 3 x image size")
    s.add_argument("--no-auto-converge", action="store_true")
    s.add_argument("--preflight", choices=["off", "warn", "refuse"], default="warn")
    s.add_argument("--tracking", choices=["auto", "pagemap-scan", "soft-dirty", "page-hash"],
                   default="auto")
    s.add_argument("--throttle", choices=["auto", "cgroup", "duty-cycle"], default="auto",
                   help="convergence assist: cgroup CPU quota or SIGSTOP/SIGCONT duty cycles")
    s.add_argument("--disk", metavar="PATH", help="also migrate this disk image (block level)")
    s.add_argument("--disk-rate", type=float, default=0.0,
                   help="MB/s of disk blocks a new guest (--workload) writes")
    s.add_argument("--replicated", action="store_true",
                   help="the destination holds a synchronous replica of --disk: verify its "
                        "digest instead of sending blocks")
    s.add_argument("--batch-pages", type=int, default=256,
                   help="pages per batch (1 MiB: its copies stay in the CPU cache)")
    s.add_argument("--service", type=hostport,
                   help="guest UDP service for the client probe (--workload: where it binds)")
    s.add_argument("--probe-interval-ms", type=float, default=5.0,
                   help="this agent's own probe of the guest's service (client-side downtime "
                        "as seen from here); 0: none (e.g. a separate client probes it)")
    s.add_argument("--guest-netns", metavar="PATH",
                   help="--workload: the new guest runs in this network namespace (where "
                        "it is announced again if the migration rolls back)")
    s.add_argument("--guest-port", metavar="DEV",
                   help="the guest's vSwitch port here: disconnected once the original ended")
    s.add_argument("--on-end", metavar="CMD",
                   help="shell command once the original guest has ended (after the ACK)")
    s.add_argument("--dirty-rate", type=float, default=20.0,
                   help="MB/s: the new guest's (--workload) or the image model's (--image)")
    s.add_argument("--mix", type=parse_mix, default=(0.25, 0.25, 0.25, 0.25))
    s.add_argument("--hot-fraction", type=parse_fraction, default=0.1,
                   help="--workload: the share of its pages that take hot-share of its writes")
    s.add_argument("--hot-share", type=parse_fraction, default=0.9,
                   help="--workload: the share of its writes that go to the hot pages")
    s.add_argument("--wss", type=float, default=0.0, help="image model working set, MiB")
    s.add_argument("--trace", help="image: recorded dirty trace ('seconds page' lines)")
    s.add_argument("--warmup", type=float, default=0.5, help="seconds before migrating")
    s.add_argument("--timeout", type=float, default=300.0,
                   help="seconds for the migration up to its decision (a lost decision is "
                        "then resolved, never guessed)")
    s.add_argument("--commit-timeout", type=float, default=60.0,
                   help="seconds to wait for PREPARED and for the DECISION")
    s.add_argument("--resolve-timeout", type=float, default=30.0,
                   help="seconds to ask again after a lost DECISION before 'indeterminate'")
    s.add_argument("--resolve-via", type=hostport, action="append", default=[],
                   metavar="HOST:PORT", help="another path to the destination (e.g. its "
                   "management address) to ask on; repeatable")
    s.add_argument("--resolve-records", metavar="DIR",
                   help="the destination's decision records, if reachable from here")
    s.add_argument("--verify-source", choices=["auto", "always", "off"], default="auto",
                   help="compare the paused original with what was sent before the decision "
                        "(auto: unless page-hash tracking, whose last pass already did)")
    s.add_argument("--no-pacing", action="store_true",
                   help="data streams unpaced (a whole window leaves at once after a wait)")
    s.add_argument("--acked-rounds", action="store_true",
                   help="wait for the destination's acknowledgement of every pre-copy round "
                        "(one round trip each) even on one TCP data stream, where rounds "
                        "otherwise follow each other at once")
    s.add_argument("--wait-go", action="store_true",
                   help="once connected and measured, say {\"progress\": {\"phase\": "
                        "\"ready\"}} on stderr and start round 0 only when a line 'go' comes "
                        "on stdin (a burst's common start, whatever each agent's start-up took)")
    s.add_argument("--commit-table", action="store_true",
                   help="send every page's hash with COMMIT, so that a digest mismatch names "
                        "the pages (8 bytes a page more inside the downtime)")
    s.add_argument("--no-guard", action="store_true",
                   help="no guard process to put the guest back if this agent dies")
    s.add_argument("--idle-timeout", type=float, default=30.0)
    s.add_argument("--rdma", metavar="DEV", help="move memory pages by RDMA WRITE from this "
                   "RDMA device (e.g. a Soft-RoCE link); the destination needs --rdma too")
    s.add_argument("--json", action="store_true", help="print the result as JSON (default)")
    s.add_argument("--progress", action="store_true",
                   help='after every round, a JSON line {"progress": {...}} on stderr (round, '
                        "bytes sent, rate, what is left)")

    sub.add_parser("probe", add_help=False,
                   help="a client of a guest's service: outage, loss, where answers come from "
                        "(python -m agents probe --help)")

    d = sub.add_parser("destination", help="receive migrations")
    d.add_argument("--listen", type=hostport, required=True, metavar="HOST:PORT")
    d.add_argument("--no-resume", action="store_true", help="verify only, never start a guest")
    d.add_argument("--resume-host")
    d.add_argument("--resume-port", type=int, default=0)
    d.add_argument("--save-image", metavar="PATH")
    d.add_argument("--disk-dest", metavar="PATH",
                   help="where a migrated disk is written (or the replica, --replicated)")
    d.add_argument("--idle-timeout", type=float, default=30.0)
    d.add_argument("--rdma", metavar="DEV", help="accept RDMA WRITE of the image on this "
                   "RDMA device (the image is registered for the source)")
    d.add_argument("--rdma-max-region", type=parse_size, metavar="SIZE",
                   help="register at most SIZE of the image (a cap on pinned memory)")
    d.add_argument("--guest-netns", metavar="PATH",
                   help="resume the guest in this network namespace (its identity: its "
                        "--guest-port stays down until it resumes, then comes up and the guest "
                        "is announced); its service binds --resume-host:--resume-port there")
    d.add_argument("--guest-dev", default="eth0", help="the guest's interface in --guest-netns")
    d.add_argument("--guest-port", metavar="DEV",
                   help="the guest's vSwitch port here: connected (up) when the guest resumes")
    d.add_argument("--announce", metavar="SPEC", default="rounds=5,initial=50,max=550,step=100",
                   help="announcement rounds and spacing in ms after resume, or 'none'")
    d.add_argument("--on-resume", metavar="CMD",
                   help="shell command once the guest has resumed, before the ACK (e.g. move "
                        "its host route)")
    d.add_argument("--keep-serving", action="store_true")
    d.add_argument("--also-listen", type=hostport, action="append", default=[],
                   metavar="HOST:PORT", help="another address to serve on (e.g. the "
                   "management stack's: a path for RESOLVE when the migration path is down)")
    d.add_argument("--decision-dir", help="where decisions are recorded (they outlive this "
                   "agent; default $AGENTS_DECISION_DIR or /tmp/agents-decisions)")
    d.add_argument("--decision-linger", type=float, default=30.0,
                   help="seconds to keep answering RESOLVE for an unconfirmed decision")
    d.add_argument("--max-unauthenticated", type=parse_size, default="2G",
                   help="largest image an unauthenticated (plain) HELLO may ask for")
    d.add_argument("--json", action="store_true")
    add_destination_args(d)
    add_credentials_parser(sub)

    r = sub.add_parser("resolve", help="settle an indeterminate migration: ask the destination "
                       "what it decided, end or continue the paused original")
    r.add_argument("--migration", required=True, help="the migration id (the result's "
                   "'migration')")
    r.add_argument("--pid", type=int, help="the paused original (omit: only ask)")
    r.add_argument("--to", type=hostport, action="append", default=[], metavar="HOST:PORT",
                   help="a path to the destination agent; repeatable")
    r.add_argument("--records", metavar="DIR", help="the destination's decision records")
    r.add_argument("--bind", metavar="ADDR")
    r.add_argument("--timeout", type=float, default=10.0)
    return ap


def _progress_line(event: dict) -> None:
    print(json.dumps({"progress": event}), file=sys.stderr, flush=True)


async def _stdin_gate() -> None:
    """--wait-go: say ready, then wait for 'go' on stdin (anything else fails the migration
    before round 0, the guest running on)."""
    import trio

    _progress_line({"phase": "ready"})
    line = await trio.to_thread.run_sync(sys.stdin.readline, abandon_on_cancel=True)
    if line.strip() != "go":
        raise RuntimeError(f"--wait-go: stdin said {line.strip()!r} before round 0, not 'go'")


def spawn_workload(args: argparse.Namespace) -> tuple[ChildProcess, dict]:
    """Start the new guest in its own session (it outlives this agent if the migration fails),
    forked from this interpreter: no second start-up and import bill."""
    mix = ",".join(f"{k}={v}" for k, v in zip(("zero", "text", "comp", "random"), args.mix,
                                               strict=True))
    argv = ["workload", "--size", str(args.workload), "--dirty-rate", str(args.dirty_rate),
            "--mix", mix, "--hot-fraction", str(args.hot_fraction),
            "--hot-share", str(args.hot_share),
            *(["--host", args.service[0], "--port", str(args.service[1])]
              if args.service else []),
            *(["--netns", args.guest_netns] if args.guest_netns else []),
            *(["--disk", args.disk, "--disk-rate", str(args.disk_rate)] if args.disk else []),
            *(["--markers", str(args.markers)] if args.markers else [])]
    # not the agent's stderr: a guest that outlives a failed migration must not hold it open
    proc = fork_call(lambda: workload.cli(argv[1:]), stdout=PIPE, stderr=DEVNULL, new_session=True,
                     args=argv, name="guest")
    assert proc.stdout is not None
    line = proc.stdout.readline()
    proc.stdout.close()
    if not line:
        raise SystemExit(f"workload failed to start (status {proc.wait()})")
    return proc, json.loads(line)


def cmd_source(args: argparse.Namespace) -> int:
    import trio

    if args.replicated and not args.disk:
        raise SystemExit("--replicated needs --disk")
    pattern = None  # the built-in guest's write pattern, for the model

    from agents.memory.disk import DiskSource
    from agents.memory.image import DirtyModel, ImageMemory, load_trace
    from agents.memory.process import ProcessMemory
    from agents.precopy import PrecopyPolicy
    from agents.source import SourceConfig, migrate

    transport = source_transport(args)  # resolves --locator into args.to
    policy = PrecopyPolicy(downtime_limit_s=args.downtime_ms / 1e3, max_rounds=args.max_rounds,
                           max_bytes=args.max_bytes, auto_converge=not args.no_auto_converge)
    cfg = SourceConfig(args.to[0], args.to[1], streams=args.streams, compress=args.compress,
                       bandwidth_cap_bps=args.bandwidth_cap * 1e6 if args.bandwidth_cap else None,
                       policy=policy, preflight=args.preflight, idle_timeout=args.idle_timeout,
                       service=args.service, throttle=args.throttle, bind=args.bind,
                       socket_buffers=args.socket_buffers, on_end=args.on_end,
                       guest_port=args.guest_port, guest_netns=args.guest_netns,
                       probe_interval_s=args.probe_interval_ms / 1e3,
                       on_progress=_progress_line if args.progress else None,
                       batch_pages=args.batch_pages, timeout_s=args.timeout,
                       commit_timeout=args.commit_timeout, resolve_s=args.resolve_timeout,
                       resolve_via=list(args.resolve_via),
                       resolve_records=args.resolve_records,
                       verify_source=args.verify_source, guard=not args.no_guard,
                       rdma=args.rdma, commit_table=args.commit_table,
                       pace=not args.no_pacing, pipeline=not args.acked_rounds,
                       start_gate=_stdin_gate if args.wait_go else None)
    if args.rdma and getattr(args, "encryption", None) == "required":
        raise SystemExit("--rdma with --encryption required: RDMA WRITE carries the pages "
                         "unencrypted")
    disk = DiskSource(args.disk, "replicated" if args.replicated else "transfer") \
        if args.disk else None
    source_pid = None
    guest: ChildProcess | None = None
    if args.image:
        trace = load_trace(args.trace) if args.trace else None
        src = ImageMemory(args.image, DirtyModel(args.dirty_rate, args.wss), trace)
        kind = "image"
    else:
        if args.workload:
            guest, info = spawn_workload(args)
            source_pid = info["pid"]
            pattern = info.get("write_pattern")
            cfg.service = cfg.service or tuple(info["service"])
            time.sleep(args.warmup)
            kind = "workload"
        else:
            source_pid = args.pid
            kind = "pid"
        src = ProcessMemory(source_pid, args.tracking)
        if src.info and not cfg.service:
            cfg.service = tuple(src.info["service"])

    if args.rdma:  # start-up, like the other imports: not the migration's CPU
        from agents.rdma.verbs import preload

        preload()
    cpu0 = cpu_split()
    try:
        res = trio.run(lambda: migrate(src, cfg, transport, kind=kind, disk=disk))
    finally:
        src.close()
        if disk is not None:
            disk.close()
    if guest is not None and res.resumed:
        with contextlib.suppress(subprocess.TimeoutExpired):
            guest.wait(timeout=5)  # ended after the ACK: reap it, leave no zombie behind
    out = json.loads(res.to_json())
    out["cpu_s"] = cpu_seconds()
    out["cpu_split_s"] = cpu_split()
    out["cpu_migration_s"] = _since(cpu0)
    out["source_pid"] = source_pid
    if pattern is not None:
        out["write_pattern"] = pattern
    print(json.dumps(out), flush=True)
    return 0 if res.completed else 2 if res.outcome == "indeterminate" else 1


def cmd_resolve(args: argparse.Namespace) -> int:
    """Settle an indeterminate migration by hand: ask the destination (every --to, then its
    --records), act on the answer for the paused original --pid."""
    from agents.resolve import apply, settle

    answer = settle(args.to, args.migration, args.timeout, args.records, args.bind)
    out: dict = {"migration": args.migration, "pid": args.pid}
    if answer is None:
        out |= {"outcome": "indeterminate", "action": "left paused: no path answered"}
        print(json.dumps(out), flush=True)
        return 2
    out |= {"decision": answer["decision"], "via": answer.get("via"),
            "destination_pid": answer.get("pid"), "outcome": "indeterminate-then-resolved"}
    if args.pid is not None:
        out["action"] = apply(answer, args.pid)
    print(json.dumps(out), flush=True)
    return 0


def cmd_destination(args: argparse.Namespace) -> int:
    import trio

    from agents.decisions import default_dir
    from agents.destination import Destination, DestinationConfig

    cfg = DestinationConfig(args.listen[0], args.listen[1], resume=not args.no_resume,
                            resume_host=args.resume_host, resume_port=args.resume_port,
                            save_image=args.save_image, idle_timeout=args.idle_timeout,
                            disk_dest=args.disk_dest, guest_netns=args.guest_netns,
                            guest_dev=args.guest_dev, guest_port=args.guest_port,
                            on_resume=args.on_resume,
                            decision_dir=args.decision_dir or default_dir(),
                            decision_linger=args.decision_linger,
                            also_listen=list(args.also_listen),
                            max_unauthenticated_bytes=args.max_unauthenticated,
                            rdma=args.rdma, rdma_max_region=args.rdma_max_region,
                            announce=None if args.announce == "none" else args.announce)
    dest = Destination(cfg, destination_transport(args))
    dest.on_reject = lambda msg: print(json.dumps({"rejected": msg}), flush=True)

    cpu0: dict[str, float] = {}

    async def run() -> list[dict]:
        async with trio.open_nursery() as nursery:
            port = await nursery.start(dest.serve, not args.keep_serving)
            cpu0.update(cpu_split())
            print(json.dumps({"listening": [cfg.host, port],
                              "also_listening": [list(a) for a in dest.also]}), flush=True)
        return dest.outcomes

    if args.rdma:  # start-up, like the other imports: not a migration's CPU
        from agents.rdma.verbs import preload

        preload()
    outcomes = trio.run(run)
    for o in outcomes:
        print(json.dumps(o | {"cpu_s": cpu_seconds(), "cpu_split_s": cpu_split(),
                              "cpu_migration_s": _since(cpu0)}), flush=True)
    return 0 if outcomes and all(o.get("ok") for o in outcomes) else 1


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["probe"]:  # the client's view of a guest (agents/clientprobe.py)
        from agents.client.probe import main as probe_main

        return probe_main(argv[1:])
    args = build_parser().parse_args(argv)
    if args.cmd == "workload":
        return workload.from_args(args)
    if args.cmd == "credentials":
        return cmd_credentials(args)
    if args.cmd == "source":
        return cmd_source(args)
    if args.cmd == "resolve":
        return cmd_resolve(args)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(1))
    return cmd_destination(args)


if __name__ == "__main__":
    sys.exit(main())

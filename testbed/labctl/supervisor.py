"""The process that owns a lab that stays up: ``python -m testbed.labctl.supervisor``.

Started detached (its own session) by ``testbed lab up``; builds the lab from its source,
records it (``testbed.labctl.records``; the lab's own run-registry record has this process as
owner, so ``testbed clean`` removes a killed one), then answers requests on the lab's unix
socket until ``down`` or SIGTERM/SIGINT/SIGHUP, and tears the lab (and the impairment
appliance, if it booted one) down. Requests: ``inspect``, ``migrate``, ``down``, ``status``.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socketserver
import sys
import threading
import time
import traceback
import uuid
from typing import Any

from ..host import appliance
from ..lab import zygote
from ..lab.lab import Lab
from . import control, inspect, records, source


class InputProblem(ValueError):
    """A request names something the lab does not have (exit status 2 at the CLI)."""


class Supervisor:
    def __init__(self, record: records.LabRecord) -> None:
        self.record = record
        self.lab: Lab | None = None
        self.stop = threading.Event()

    def handle(self, req: dict[str, Any]) -> dict[str, Any]:
        op = req.get("op")
        assert self.lab is not None
        if op == "status":
            return {"ok": True, "status": self.record.status}
        if op == "inspect":
            return {"ok": True, "inspect": inspect.snapshot(self.lab, bool(req.get("measure")))}
        if op == "migrate":
            return {"ok": True, "result": migrate(self.lab, req)}
        if op == "down":
            self.stop.set()
            return {"ok": True}
        raise InputProblem(f"unknown request {op!r}")

    def serve(self) -> socketserver.ThreadingUnixStreamServer:
        sup = self

        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                try:
                    answer = sup.handle(control.read_request(self.rfile))
                except InputProblem as exc:
                    answer = {"ok": False, "input": True, "error": str(exc)}
                except Exception as exc:  # the lab stays up; the caller hears why
                    answer = {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
                control.write_answer(self.wfile, answer)

        self.record.socket.unlink(missing_ok=True)
        server = socketserver.ThreadingUnixStreamServer(str(self.record.socket), Handler)
        server.daemon_threads = True
        os.chmod(self.record.socket, 0o600)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return server


def migrate(lab: Lab, req: dict[str, Any]) -> dict[str, Any]:
    """One migration between two hosts of the lab, over their migration stacks when they
    have them (the source bound to its address), else their first addresses."""
    from ..measure.migration import MigrationJob
    from ..measure.migration import migrate as run_migration

    net = lab.network
    src, dst = req.get("src"), req.get("dst")
    for node in (src, dst):
        if node not in net.nodes or net.nodes[node].role != "host":
            hosts = [n for n, v in net.nodes.items() if v.role == "host"]
            raise InputProblem(f"no host {node!r} in lab {lab.network.name!r} "
                               f"(hosts: {', '.join(hosts)})")
    if src == dst:
        raise InputProblem("source and destination are the same host")
    src_stack = net.stacks_of(src).get("migration")
    dst_stack = net.stacks_of(dst).get("migration")
    try:
        dst_ip = dst_stack.ip if dst_stack else net.address(dst)
    except KeyError:
        raise InputProblem(f"host {dst!r} has no address to migrate to") from None
    job = MigrationJob(src, dst, dst_ip, bind=src_stack.ip if src_stack else None,
                       **req.get("job", {}))
    run = run_migration(lab, job)
    return run.result | {"source": src, "destination": dst, "destination_address": dst_ip,
                         "source_address": job.bind, "source_exit_code": run.exit_code}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m testbed.labctl.supervisor")
    ap.add_argument("--name", required=True)
    ap.add_argument("--source", required=True, help="JSON (testbed.labctl.source)")
    ap.add_argument("--placement", default="{}", help="JSON (testbed.host.placement)")
    args = ap.parse_args(argv)
    rec = records.LabRecord(name=args.name, pid=os.getpid(),
                            run_id=f"lab-{args.name}-{uuid.uuid4().hex[:6]}",
                            source=json.loads(args.source), started=time.time(),
                            placement=json.loads(args.placement))
    rec.save()
    sup = Supervisor(rec)

    def on_signal(signum: int, _frame: object) -> None:
        if rec.status != "up":  # still building: unwind through the Lab's context manager
            raise KeyboardInterrupt(f"signal {signum}")
        sup.stop.set()

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    server = None
    try:
        net = source.network(rec.source)
        zygote.shared()  # the agents' fork server warms up while the lab comes up
        with Lab(net, run_id=rec.run_id) as lab:
            sup.lab = lab
            server = sup.serve()
            rec.status = "up"
            rec.save()
            print(f"lab {rec.name} up: {len(net.nodes)} nodes, run {rec.run_id}", flush=True)
            while not sup.stop.wait(1.0):
                pass
            print(f"lab {rec.name}: tearing down", flush=True)
            server.shutdown()
            server = None
    except BaseException as exc:  # noqa: BLE001 - every failure is recorded for `lab up`
        traceback.print_exc()
        rec.status = "failed"
        rec.error = f"{type(exc).__name__}: {exc}"
        rec.save()
        return 1
    finally:
        if server is not None:
            server.shutdown()
        appliance.shutdown()
        rec.socket.unlink(missing_ok=True)
    rec.remove()
    print(f"lab {rec.name} down", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

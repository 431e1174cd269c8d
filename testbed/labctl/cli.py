"""``testbed lab ...``: bring a lab up and leave it up, use it, take it down.

Like containerlab's deploy / exec / inspect / destroy and Mininet's ``mn``: ``up`` builds
the lab in a detached supervisor (``testbed.labctl.supervisor``) and returns once it is up;
``exec`` runs a command in a node's network namespace; ``inspect`` shows the live lab;
``migrate`` moves a guest between two of its hosts; ``down`` tears it down (a lab whose
supervisor was killed is cleaned up from its records); ``list`` shows every lab.

Exit status: 0 ok; 1 the work failed; 2 bad usage or input (an unknown lab, node,
topology or parameter; the message names it). ``exec`` exits with the command's status.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import click

from ..params import parse_params
from . import control, records, source

UP_TIMEOUT_S = 600.0  # an impairment appliance boots under TCG first (45-240 s)
DOWN_TIMEOUT_S = 120.0


class InputError(click.ClickException):
    """Bad input (an unknown lab, node, topology or parameter): exit status 2."""

    exit_code = 2


def _need_root() -> None:
    if os.geteuid() != 0:
        raise click.ClickException("run as root: a lab creates network namespaces, links "
                                   "and qdiscs")


def _find(name: str | None, up: bool = True) -> records.LabRecord:
    try:
        rec = records.find(name)
    except records.LabNotFound as exc:
        raise InputError(str(exc)) from None
    if up and not rec.alive():
        raise click.ClickException(f"lab {rec.name!r}: its supervisor (pid {rec.pid}) is "
                                   f"gone; `testbed lab down --name {rec.name}` removes "
                                   "what it left")
    if up and rec.status != "up":
        raise click.ClickException(f"lab {rec.name!r} is {rec.status}"
                                   + (f": {rec.error}" if rec.error else ""))
    return rec


def _ask(rec: records.LabRecord, req: dict[str, Any], timeout_s: float = 120.0) -> Any:
    try:
        answer = control.request(rec.socket, req, timeout_s)
    except control.ControlError as exc:
        raise click.ClickException(str(exc)) from None
    if not answer.get("ok"):
        cls = InputError if answer.get("input") else click.ClickException
        raise cls(f"lab {rec.name!r}: {answer.get('error')}")
    return answer


name_option = click.option("--name", "-n", default=None,
                           help="The lab (default: the only one up).")


@click.group("lab")
def lab() -> None:
    """Labs that stay up: up, exec, inspect, migrate, down, list."""


def _placement(ctx: click.Context, net: Any) -> dict[str, Any]:
    """Where the lab runs, decided as for `testbed run` (the whole-VM mode aside)."""
    from ..host import doctor
    from ..host.placement import PlacementError, decide

    report = doctor.diagnose(check_kvm=False)
    try:
        placed = decide(source.needs(net), report.features, mode=ctx.obj["vm"],
                        vm_available=report.vm is not None,
                        kernel=f"kernel {report.kernel}", vm_reason="; ".join(report.reasons))
    except PlacementError as exc:
        raise click.ClickException(str(exc)) from None
    if placed.where == "vm":
        raise click.ClickException(f"{placed.why}; a lab that stays up runs on this kernel "
                                   "(natively, or with its netem links through the "
                                   "impairment appliance), not in the whole VM")
    return placed.describe()


@lab.command("up")
@click.argument("what")
@click.argument("params", nargs=-1)
@name_option
@click.option("--timeout", "timeout_s", type=float, default=UP_TIMEOUT_S, show_default=True,
              help="Seconds to wait for the lab to come up.")
@click.pass_context
def up(ctx: click.Context, what: str, params: tuple[str, ...], name: str | None,
       timeout_s: float) -> None:
    """Bring up WHAT and leave it up: a topology name with PARAMS (key=value), a topology
    file (TOML) or an experiment spec (its network)."""
    try:
        src, default = source.resolve(what, parse_params(params))
        name = records.check_name(name or default)
    except (source.SourceError, ValueError) as exc:
        raise InputError(str(exc)) from None
    _need_root()
    old = records.load(name)
    if old is not None:
        hint = ("take it down first or choose another --name" if old.alive() else
                f"its supervisor is gone: `testbed lab down --name {name}` removes it")
        raise InputError(f"lab {name!r} exists ({old.status}); {hint}")
    net = source.network(src)
    placement = _placement(ctx, net)
    rec = records.LabRecord(name=name, pid=0, run_id="", source=src)
    records.labs_dir().mkdir(parents=True, exist_ok=True)
    code_root = str(Path(__file__).resolve().parents[2])  # this checkout's testbed, agents
    env = os.environ | {"PYTHONPATH": os.pathsep.join(
        [code_root, *filter(None, [os.environ.get("PYTHONPATH")])])}
    with open(rec.log, "wb") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "testbed.labctl.supervisor", "--name", name,
             "--source", json.dumps(src), "--placement", json.dumps(placement)],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
            start_new_session=True, env=env)
    click.echo(f"lab {name}: {net.name}, {len(net.nodes)} nodes, {placement['where']} "
               f"({placement['why']}); supervisor pid {proc.pid}", err=True)
    try:
        got = _wait_up(name, proc, timeout_s)
    except KeyboardInterrupt:
        proc.terminate()
        proc.wait(DOWN_TIMEOUT_S)
        raise SystemExit(130) from None
    if got is None or got.status != "up":
        if got is not None and got.status == "failed":  # it tears down what it built
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(DOWN_TIMEOUT_S)
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(DOWN_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                proc.kill()
        tail = rec.log.read_text(errors="replace").strip().splitlines()[-8:]
        why = got.error if got is not None and got.error else \
            f"not up within {timeout_s:.0f} s" if proc.poll() is None else "supervisor exited"
        final = records.load(name)
        if final is not None and not final.alive():
            from .reap import reap

            reap(final)
        raise click.ClickException(f"lab {name} did not come up: {why}\n  "
                                   + "\n  ".join(tail))
    click.echo(f"lab {name} is up (run {got.run_id}). Next: testbed lab exec -n {name} "
               f"NODE -- CMD; testbed lab inspect -n {name}; testbed lab down -n {name}")


def _wait_up(name: str, proc: subprocess.Popen[bytes],
             timeout_s: float) -> records.LabRecord | None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        rec = records.load(name)
        if rec is not None and rec.status in ("up", "failed"):
            return rec
        if proc.poll() is not None:
            return records.load(name)
        time.sleep(0.2)
    return records.load(name)


@lab.command("list")
@click.option("--json", "as_json", is_flag=True, help="One JSON array on stdout.")
def list_cmd(as_json: bool) -> None:
    """Every lab: name, state, topology, supervisor, since when."""
    from .reap import dead_runs

    rows = []
    for rec in records.load_all():
        if not rec.alive() and not dead_runs(rec):  # `testbed clean` removed the rest
            rec.remove()
            rec.log.unlink(missing_ok=True)
            continue
        st = rec.run_state()
        status = rec.status if rec.alive() else "dead (`testbed lab down` removes it)"
        what = rec.source.get("topology") or rec.source.get("file") or rec.source.get("spec")
        rows.append({"name": rec.name, "status": status, "source": what,
                     "params": rec.source.get("params", {}), "pid": rec.pid,
                     "run_id": rec.run_id, "nodes": sorted(st.node_pids) if st else [],
                     "started": time.strftime("%Y-%m-%d %H:%M:%S",
                                              time.localtime(rec.started))})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    if not rows:
        click.echo("no labs")
    for r in rows:
        params = " ".join(f"{k}={v}" for k, v in r["params"].items())
        click.echo(f"{r['name']:16} {r['status']:8} {r['source']} {params}".rstrip()
                   + f"  ({len(r['nodes'])} nodes, pid {r['pid']}, since {r['started']})")


@lab.command("exec", context_settings={"ignore_unknown_options": True,
                                       "allow_interspersed_args": False})
@name_option
@click.argument("node")
@click.argument("command", nargs=-1, type=click.UNPROCESSED)
def exec_cmd(name: str | None, node: str, command: tuple[str, ...]) -> None:
    """Run COMMAND (default: a shell) in NODE's network namespace: NODE -- CMD ARGS...

    Exits with the command's status. Processes left running in the node are killed at
    `lab down`.
    """
    _need_root()
    rec = _find(name)
    st = rec.run_state()
    if st is None:
        raise click.ClickException(f"lab {rec.name!r}: its run record {rec.run_id} is gone")
    if node in st.named_netns:
        target = f"/run/netns/{node}"
    elif node in st.node_pids:
        pid = st.node_pids[node]
        if st.netns_inodes.get(node) != _netns_inode(pid):  # the node's shell, not a stranger
            raise click.ClickException(f"lab {rec.name!r}: node {node}'s process {pid} is "
                                       "gone or in another namespace")
        target = f"/proc/{pid}/ns/net"
    else:
        net = source.network(rec.source)
        known = ", ".join(sorted(st.node_pids) + st.named_netns)
        extra = f"; {node} is a switch in the root namespace" \
            if node in net.nodes and net.nodes[node].role == "switch" else ""
        raise InputError(f"lab {rec.name!r} has no node {node!r} (nodes: {known}){extra}")
    argv = list(command[1:] if command[:1] == ("--",) else command)
    argv = argv or [os.environ.get("SHELL", "/bin/bash")]
    sys.stdout.flush()
    os.execvp("nsenter", ["nsenter", f"--net={target}", "--", *argv])


def _netns_inode(pid: int) -> int | None:
    try:
        return os.stat(f"/proc/{pid}/ns/net").st_ino
    except OSError:
        return None


@lab.command("inspect")
@name_option
@click.option("--measure", is_flag=True, help="Also ping across each link (10 pings).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def inspect_cmd(name: str | None, measure: bool, as_json: bool) -> None:
    """The live lab: nodes and the addresses their kernels hold, links as asked, as applied
    (the qdiscs held) and with --measure as measured."""
    from .inspect import render

    _need_root()
    rec = _find(name)
    snap = _ask(rec, {"op": "inspect", "measure": measure})["inspect"]
    if as_json:
        click.echo(json.dumps({"lab": rec.name, "placement": rec.placement, **snap},
                              indent=2))
    else:
        click.echo(render(snap, {"name": rec.name, "pid": rec.pid,
                                 "placement": rec.placement}))


@lab.command("migrate")
@name_option
@click.argument("src")
@click.argument("dst")
@click.option("--workload-mib", type=click.IntRange(1, 65536), default=32, show_default=True)
@click.option("--dirty-rate-mbs", type=click.FloatRange(0, 10_000), default=4.0,
              show_default=True)
@click.option("--streams", type=click.IntRange(1, 64), default=1, show_default=True)
@click.option("--downtime-ms", type=click.FloatRange(0, 60_000, min_open=True), default=300.0,
              show_default=True)
@click.option("--max-rounds", type=click.IntRange(1, 1000), default=30, show_default=True)
@click.option("--bandwidth-cap-mbps", type=click.FloatRange(0, min_open=True), default=None)
@click.option("--compress", is_flag=True)
@click.option("--port", type=click.IntRange(1, 65535), default=7800, show_default=True)
@click.option("--timeout-s", type=click.FloatRange(0, 86_400, min_open=True), default=600.0,
              show_default=True)
@click.option("--json", "as_json", is_flag=True, help="The source's result document.")
def migrate_cmd(name: str | None, src: str, dst: str, as_json: bool, timeout_s: float,
                **job: Any) -> None:
    """Live-migrate a fresh guest from host SRC to host DST (over their migration stacks
    when they have them); exit 1 unless it completed with integrity."""
    _need_root()
    rec = _find(name)
    job["timeout_s"] = timeout_s
    res = _ask(rec, {"op": "migrate", "src": src, "dst": dst, "job": job},
               timeout_s=timeout_s + 180)["result"]
    if as_json:
        click.echo(json.dumps(res, indent=2))
    else:
        click.echo(f"{src} -> {dst} ({res.get('destination_address')}): "
                   f"{'completed' if res.get('completed') else 'FAILED'}, integrity "
                   f"{res.get('integrity_ok')}, {res.get('rounds')} rounds, "
                   f"{res.get('migration_time_s')} s, downtime {res.get('downtime_ms')} ms, "
                   f"goodput {res.get('goodput_mbps')} Mbit/s, {res.get('bytes_on_wire')} "
                   f"bytes on the wire" + (f"; error: {res['error']}" if res.get("error")
                                           else ""))
    if not (res.get("completed") and res.get("integrity_ok")):
        raise click.ClickException(f"migration {src} -> {dst} failed or was not verified")


@lab.command("down")
@name_option
@click.option("--all", "everything", is_flag=True, help="Every lab.")
def down(name: str | None, everything: bool) -> None:
    """Tear a lab down (and its impairment appliance); a lab whose supervisor died is
    removed from its records (its namespaces, links and processes only)."""
    _need_root()
    if everything:
        recs = records.load_all()
    else:
        try:
            recs = [records.find(name)]
        except records.LabNotFound as exc:
            raise InputError(str(exc)) from None
    for rec in recs:
        _down(rec)


def _down(rec: records.LabRecord) -> None:
    from .reap import reap

    if rec.alive():
        try:
            control.request(rec.socket, {"op": "down"}, timeout_s=10)
        except control.ControlError:
            os.kill(rec.pid, signal.SIGTERM)  # still building, or not answering
        deadline = time.monotonic() + DOWN_TIMEOUT_S
        while rec.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if rec.alive():
            os.kill(rec.pid, signal.SIGKILL)
            time.sleep(0.5)
            click.echo(f"lab {rec.name}: supervisor did not stop in {DOWN_TIMEOUT_S:.0f} s; "
                       "killed", err=True)
    report = reap(rec)  # nothing when the supervisor tore down; else what it left
    click.echo(f"lab {rec.name} down" + ("" if report.registry == [] else
                                         "; removed what its dead supervisor left: "
                                         + "; ".join(report.lines())))

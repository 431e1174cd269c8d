"""The `testbed` command line: doctor, run, clean, vm-exec."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click
from rich.console import Console
from rich.table import Table

from .host import doctor as doctor_mod
from .params import parse_params
from .run.spec import SpecError

if TYPE_CHECKING:
    from .host.placement import Placement

console = Console(stderr=True)


class InputError(click.ClickException):
    """Bad input (a spec, a parameter): exit status 2, like a usage error."""

    exit_code = 2


_MAIN_PID = os.getpid()


def _terminate_gracefully(signum: int, _frame: object) -> None:
    """SIGTERM/SIGHUP act like Ctrl-C, so labs are torn down by their context managers.

    Forked helpers (pyroute2 forks one per namespace socket) just exit.
    """
    if os.getpid() != _MAIN_PID:
        os._exit(128 + signum)
    raise KeyboardInterrupt(f"signal {signum}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="migration-testbed", prog_name="testbed")
@click.option("--vm", "vm_mode", type=click.Choice(["auto", "always", "never"]),
              default="auto", envvar="TESTBED_VM", show_default=True,
              help="auto: natively, with netem links through the impairment appliance "
                   "when this kernel lacks netem, and the whole run in the full-kernel VM "
                   "only for what the appliance cannot give; always: the whole run in the "
                   "VM; never: no VM of any kind.")
@click.pass_context
def main(ctx: click.Context, vm_mode: str) -> None:
    """Network-emulation testbed for live-migration traffic.

    Exit status: 0 every experiment ran and every migration was verified; 1 something failed
    (the message says what); 2 bad usage or input; 130 interrupted (the lab is torn down and
    partial results are kept).
    """
    ctx.obj = {"vm": vm_mode}
    signal.signal(signal.SIGTERM, _terminate_gracefully)
    signal.signal(signal.SIGHUP, _terminate_gracefully)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def doctor(as_json: bool) -> None:
    """What this kernel and machine can do, and the verdict (native, appliance, vm, cannot-run)."""
    _need_root()
    report = doctor_mod.diagnose()
    if as_json:
        click.echo(report.to_json())
        return
    table = Table(title=f"testbed doctor: kernel {report.kernel}"
                        f"{' (inside the testbed VM)' if report.in_vm else ''}")
    table.add_column("check")
    table.add_column("status")
    table.add_column("fix / detail")
    for name, ok in report.features.items():
        table.add_row(name, "[green]yes[/]" if ok else "[red]no[/]",
                      "" if ok else doctor_mod.FIXES.get(name, "missing in this kernel"))
    for name, where in report.tools.items():
        table.add_row(name, "[green]yes[/]" if where else "[red]no[/]",
                      where or doctor_mod.FIXES.get(name, "not installed"))
    Console().print(table)
    click.echo(f"function stacks isolated by: {report.routing_isolation}")
    click.echo(f"dirty-page tracking available: {', '.join(report.dirty_tracking)}")
    verdict = {"native": "native: everything runs on this kernel",
               "appliance": "appliance: runs natively; netem links pass through the "
                            "impairment appliance (a full-kernel VM)",
               "vm": "vm: network work runs in a full-kernel VM (virtme-ng)",
               "cannot-run": "cannot-run"}[report.verdict]
    click.echo(f"verdict: {verdict}")
    if report.placement:
        click.echo(f"  why: {report.placement['why']}")
    if report.vm:
        click.echo(f"  kernel {report.vm['kernel']}, accelerator {report.vm['accelerator']} "
                   f"({report.vm['accelerator_reason']})")
    for reason in report.reasons:
        click.echo(f"  - {reason}")


def _need_root() -> None:
    if os.geteuid() != 0:
        raise click.ClickException("run as root: the testbed creates network namespaces, "
                                   "links and qdiscs")


def _placements(ctx: click.Context, specs: list[tuple[Path, Any]]) -> dict[Path, Placement]:
    """Where each spec runs (``testbed.host.placement``), decided from one doctor probe."""
    from .host.placement import PlacementError, decide

    in_vm = os.environ.get(doctor_mod.IN_VM_ENV) == "1"
    report = doctor_mod.diagnose(check_kvm=ctx.obj["vm"] != "never" and not in_vm)
    try:
        return {path: decide(spec.needs, report.features, mode=ctx.obj["vm"],
                             vm_available=report.vm is not None, in_vm=in_vm,
                             kernel=f"kernel {report.kernel}",
                             vm_reason="; ".join(report.reasons)) for path, spec in specs}
    except PlacementError as exc:
        raise click.ClickException(str(exc)) from None


def _run_in_vm(paths: list[Path], out: Path, quiet: bool, verbose: int) -> int:
    """Run the specs at ``paths`` inside the full-kernel VM (one boot); its exit status."""
    from .host.vm import VMError, run_in_vm

    report = doctor_mod.diagnose()
    assert report.vm is not None  # placement chose the VM only where one can run
    argv = [sys.executable, "-m", "testbed", "--vm", "never", "run", *map(str, paths),
            "--out", str(out), "--no-report", *(["-q"] if quiet else []),
            *(["-v"] * verbose)]
    try:
        return run_in_vm(argv, str(report.vm["kernel"]), str(report.vm["accelerator"]),
                         rwdirs=[out])
    except VMError as exc:
        raise click.ClickException(str(exc)) from None


@main.command()
@click.argument("specs", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Results directory (default: results/<timestamp>).")
@click.option("--no-report", is_flag=True, hidden=True,
              help="Leave report.md and the plots to the caller (the VM half of a run).")
@click.option("-q", "--quiet", is_flag=True, help="Only failures and the summary.")
@click.option("-v", "--verbose", count=True, help="Every migration's every round too.")
@click.pass_context
def run(ctx: click.Context, specs: tuple[Path, ...], out_dir: Path | None,
        no_report: bool, quiet: bool, verbose: int) -> None:
    """Run experiment SPECs (TOML); with none, the default suite.

    Each spec runs natively, natively with its netem links through the impairment appliance,
    or inside the full-kernel VM, as this kernel requires (`testbed doctor`; --vm).
    """
    from .run import spec as spec_mod

    try:
        paths = [p.resolve() for p in specs] or spec_mod.default_suite_files()
        loaded = [(p, spec_mod.load(p)) for p in paths]
    except SpecError as exc:
        raise InputError(str(exc)) from None
    _need_root()
    out = (out_dir or Path("results") / time.strftime("%Y%m%d-%H%M%S")).resolve()
    placed = _placements(ctx, loaded)
    from .run.progress import LiveRun

    with LiveRun(console, out, -1 if quiet else verbose) as live:
        for path, spec in loaded:
            live.message(f"{spec.name}: {placed[path].where} ({placed[path].why})")
        failed: list[str] = []
        inside = os.environ.get(doctor_mod.IN_VM_ENV) == "1"  # the VM half of a run
        here = [(p, s) for p, s in loaded if inside or placed[p].where != "vm"]
        to_vm = [p for p, _ in loaded if not inside and placed[p].where == "vm"]
        try:
            if here:
                failed += _run_here(here, placed, out, live)
            if to_vm and _run_in_vm(to_vm, out, quiet, verbose) != 0:
                failed.append("(in the VM)")
        finally:
            from .host import appliance

            appliance.shutdown()
        from .results.report import failures, finish

        if not no_report:
            finish(out, console)
        bad = failures(out)
        for line in [*(f"experiment failed: {f}" for f in failed),
                     *(f"migration failed or not verified: {b}" for b in bad)]:
            live.log.error(line)
    click.echo(f"results: {out}")
    if failed:
        raise click.ClickException(f"experiment(s) failed: {', '.join(failed)} "
                                   f"(tracebacks in {live.log_path})")
    if bad:
        raise click.ClickException(f"{len(bad)} migration(s) failed or were not verified: "
                                   + "; ".join(bad))


def _run_here(specs: list[tuple[Path, Any]], placed: dict[Path, Placement], out: Path,
              live: Any) -> list[str]:
    """Run ``specs`` in this kernel (netem links through the appliance where placed so);
    the names of those that failed."""
    from .lab import zygote
    from .run.runner import run_spec

    zygote.shared()  # the agents' fork server imports them while the first lab comes up
    failed = []
    for path, spec in specs:
        try:
            doc = run_spec(spec, out, progress=live.message,
                           placement=placed[path].describe())
            live.message(f"{spec.name}: {doc['status']} ({doc['duration_s']:.0f} s)", "green")
        except KeyboardInterrupt:
            live.failure(f"interrupted: lab torn down, partial results kept in {out}")
            raise SystemExit(130) from None
        except Exception as exc:  # one failed experiment does not stop the suite
            failed.append(spec.name)
            live.failure(f"{spec.name} failed: {type(exc).__name__}: {exc}", exc)
    return failed


@main.command("report")
@click.argument("results_dir", type=click.Path(file_okay=False, path_type=Path))
def report_cmd(results_dir: Path) -> None:
    """Re-make report.md and the plots of RESULTS_DIR from its saved results documents (no
    lab, no root: change a plot without rerunning the experiments)."""
    from .results.documents import DocumentError, load
    from .results.report import finish

    try:
        if not load(results_dir):
            raise InputError(f"{results_dir}: no results documents (*.json with a spec and "
                             "variants) in it")
        finish(results_dir, console)
    except DocumentError as exc:
        raise InputError(str(exc)) from None


@main.command()
def clean() -> None:
    """Remove every namespace, link, qdisc, OVS bridge and process a dead run left."""
    from .host.clean import clean as do_clean

    _need_root()
    for line in do_clean().lines():
        click.echo(line)


@main.command("vm-exec", context_settings={"ignore_unknown_options": True})
@click.option("--rwdir", "rwdirs", multiple=True, type=click.Path(path_type=Path),
              help="Host directory the guest may write (repeatable).")
@click.option("--timeout", type=float, default=None, help="Seconds before the VM is stopped.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
def vm_exec(rwdirs: tuple[Path, ...], timeout: float | None, command: tuple[str, ...]) -> None:
    """Run COMMAND inside the full-kernel VM (exit status propagated)."""
    from .host.vm import VMError, run_in_vm

    _need_root()
    report = doctor_mod.diagnose()
    tools = report.tools
    if not (tools["full_kernel"] and tools["vng"] and tools["qemu"]):
        raise click.ClickException("no VM available: " + "; ".join(report.reasons))
    accel = report.vm["accelerator"] if report.vm else "tcg"
    try:
        rc = run_in_vm(list(command), str(tools["full_kernel"]), str(accel),
                       rwdirs=list(rwdirs), timeout_s=timeout)
    except VMError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(rc)


@main.group()
def topo() -> None:
    """List topologies, or show one's nodes, links, addresses, gateways and link settings."""


@topo.command("list")
def topo_list() -> None:
    """Every topology name with its parameters and defaults."""
    import topologies

    for name in sorted(topologies.REGISTRY):
        params = ", ".join(f"{k}={v!r}" for k, v in topologies.parameters(name).items())
        click.echo(f"{name}: {params}")


@topo.command("show")
@click.argument("name", metavar="NAME|FILE")
@click.argument("params", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="The plan as JSON.")
def topo_show(name: str, params: tuple[str, ...], as_json: bool) -> None:
    """Show topology NAME (or a topology FILE, TOML) built with PARAMS (key=value, e.g.
    spines=4 rtt_ms=150)."""
    import topologies
    from topologies import file as topofile
    from topologies.show import render

    try:
        net = topofile.load(Path(name), parse_params(params)) if name.endswith(".toml") \
            else topologies.build(name, **parse_params(params))
    except topologies.TopologyError as exc:
        raise InputError(str(exc)) from None
    click.echo(json.dumps(net.describe(), indent=2) if as_json else render(net))


from .labctl.cli import lab as _lab  # noqa: E402 - `testbed lab ...` (testbed/labctl/)

main.add_command(_lab)

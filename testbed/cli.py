"""The `testbed` command line: doctor, run, clean, vm-exec."""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from pathlib import Path

import click
from rich.console import Console
from rich.table import Table

from . import doctor as doctor_mod
from .spec import SpecError

console = Console(stderr=True)


_MAIN_PID = os.getpid()


def _terminate_gracefully(signum: int, _frame: object) -> None:
    """SIGTERM/SIGHUP act like Ctrl-C, so labs are torn down by their context managers.

    Forked helpers (pyroute2 forks one per namespace socket) just exit.
    """
    if os.getpid() != _MAIN_PID:
        os._exit(128 + signum)
    raise KeyboardInterrupt(f"signal {signum}")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--vm", "vm_mode", type=click.Choice(["auto", "always", "never"]),
              default=lambda: os.environ.get("TESTBED_VM", "auto"), show_default="auto",
              help="Run network work inside a full-kernel VM: when this kernel lacks "
                   "features (auto), always, or never.")
@click.pass_context
def main(ctx: click.Context, vm_mode: str) -> None:
    """Network-emulation testbed for live-migration traffic."""
    ctx.obj = {"vm": vm_mode}
    signal.signal(signal.SIGTERM, _terminate_gracefully)
    signal.signal(signal.SIGHUP, _terminate_gracefully)


@main.command()
@click.option("--json", "as_json", is_flag=True, help="One JSON object on stdout.")
def doctor(as_json: bool) -> None:
    """What this kernel and machine can do, and the verdict (native, vm, cannot-run)."""
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
               "vm": "vm: network work runs in a full-kernel VM (virtme-ng)",
               "cannot-run": "cannot-run"}[report.verdict]
    click.echo(f"verdict: {verdict}")
    if report.vm:
        click.echo(f"  kernel {report.vm['kernel']}, accelerator {report.vm['accelerator']} "
                   f"({report.vm['accelerator_reason']})")
    for reason in report.reasons:
        click.echo(f"  - {reason}")


def _need_root() -> None:
    if os.geteuid() != 0:
        raise click.ClickException("run as root: the testbed creates network namespaces, "
                                   "links and qdiscs")


def _maybe_reexec_in_vm(ctx: click.Context, needs: tuple[str, ...], rwdirs: list[Path]) -> None:
    """Re-run this very command inside the VM when the kernel here lacks ``needs``.

    Returns only when the command should run here; otherwise exits with the guest's status.
    """
    mode = ctx.obj["vm"]
    if os.environ.get(doctor_mod.IN_VM_ENV) == "1":
        mode = "never"
    report = doctor_mod.diagnose(check_kvm=mode != "never")
    gaps = doctor_mod.missing(report.features, needs)
    if mode == "never" or (mode == "auto" and not gaps):
        if gaps:
            raise click.ClickException(
                f"this kernel ({report.kernel}) lacks {', '.join(gaps)}, needed here; "
                + "; ".join(report.reasons)
                + ". Use --vm auto to run inside a full-kernel VM, or `testbed doctor`.")
        return
    if report.vm is None:
        detail = "; ".join(report.reasons) or "no VM available"
        raise click.ClickException(f"cannot run in a VM here: {detail}")
    from .vm import VMError, run_in_vm

    argv = [sys.executable, "-m", "testbed", "--vm", "never",
            *_strip_vm_option(sys.argv[1:])]
    try:
        rc = run_in_vm(argv, str(report.vm["kernel"]), str(report.vm["accelerator"]),
                       rwdirs=rwdirs)
    except VMError as exc:
        raise click.ClickException(str(exc)) from None
    sys.exit(rc)


def _strip_vm_option(argv: list[str]) -> list[str]:
    """Drop the user's own --vm option (the guest always gets --vm never)."""
    out: list[str] = []
    skip = False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--vm":
            skip = True
        elif not arg.startswith("--vm="):
            out.append(arg)
    return out


@main.command()
@click.argument("specs", nargs=-1, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              default=None, help="Results directory (default: results/<timestamp>).")
@click.pass_context
def run(ctx: click.Context, specs: tuple[Path, ...], out_dir: Path | None) -> None:
    """Run experiment SPECs (TOML); with none, the default suite."""
    from . import spec as spec_mod

    _need_root()
    try:
        loaded = [spec_mod.load(p) for p in specs] or spec_mod.default_suite()
    except SpecError as exc:
        raise click.ClickException(str(exc)) from None
    out = (out_dir or Path("results") / time.strftime("%Y%m%d-%H%M%S")).resolve()
    needs = tuple(sorted({f for s in loaded for f in s.needs}))
    if not out_dir:
        sys.argv += ["--out", str(out)]
    sys.argv = [a if not (a.endswith(".toml") and os.path.exists(a)) else os.path.abspath(a)
                for a in sys.argv]
    _maybe_reexec_in_vm(ctx, needs, [out])
    from . import zygote
    from .runner import run_spec

    zygote.shared()  # the agents' fork server imports them while the first lab comes up

    failed = []
    for spec in loaded:
        try:
            doc = run_spec(spec, out, progress=lambda m: console.print(f"[cyan]{m}[/]"))
            console.print(f"[green]{spec.name}: {doc['status']}[/] "
                          f"({doc['duration_s']:.0f} s)")
        except KeyboardInterrupt:
            console.print("[yellow]interrupted: lab torn down, partial results kept in "
                          f"{out}[/]")
            raise SystemExit(130) from None
        except Exception as exc:  # one failed experiment does not stop the suite
            failed.append(spec.name)
            console.print(f"[red]{spec.name} failed: {type(exc).__name__}: {exc}[/]")
    from .report import finish

    finish(out, console)
    click.echo(f"results: {out}")
    if failed:
        raise click.ClickException(f"experiment(s) failed: {', '.join(failed)}")


@main.command()
def clean() -> None:
    """Remove every namespace, link, qdisc, OVS bridge and process a dead run left."""
    from .clean import clean as do_clean

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
    from .vm import VMError, run_in_vm

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


def parse_params(pairs: tuple[str, ...]) -> dict[str, object]:
    """``key=value`` words into typed parameters (TOML literals; bare words are strings)."""
    import tomllib

    params: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: expected key=value", param_hint="PARAMS")
        try:
            params[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            params[key.strip()] = value
    return params


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
@click.argument("name")
@click.argument("params", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="The plan as JSON.")
def topo_show(name: str, params: tuple[str, ...], as_json: bool) -> None:
    """Show topology NAME built with PARAMS (key=value, e.g. spines=4 rtt_ms=150)."""
    import topologies
    from topologies.show import render

    try:
        net = topologies.build(name, **parse_params(params))
    except topologies.TopologyError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(json.dumps(net.describe(), indent=2) if as_json else render(net))

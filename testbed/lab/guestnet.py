"""Migrations of guests with a network identity (``topologies.guests``): the agents' extra
arguments that carry the identity across, the network's hooks, and the client's probe.

The source's guest runs in its slot on the source host; the destination resumes it in its
slot on the destination host, connects that slot's vSwitch port and announces it; the source
disconnects its own port once the original has ended. Whatever else the network must change
(the /32 of ``hostroute``) runs as the destination's on-resume hook, i.e. inside the
downtime. A probe in the ``client`` slot asks the guest for its counter at a fixed interval
and reports what a client saw: the outage, whether the counter carried on, and whether
anything answered from the old location after the switch.
"""

from __future__ import annotations

import contextlib
import json
import shlex
import signal
import subprocess
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from ..host.procio import read_line

if TYPE_CHECKING:
    from .lab import Lab

START_TIMEOUT_S = 60.0  # the probe's start-up (forked: milliseconds; slower under TCG)
PROBE_TAIL_S = 0.5  # the probe keeps listening this long after the migration ended


def slot_path(lab: Lab, guest: str, host: str) -> str:
    return str(lab.netns(lab.slot_netns(guest, host)))


def hook(lab: Lab, per_node: dict[str, list[list[str]]]) -> str | None:
    """One shell command running ``ip`` commands in each node's namespace (one ``ip -batch``
    per node)."""
    parts = []
    for node, cmds in per_node.items():
        script = "\\n".join(shlex.join(c[1:]) for c in cmds if c[0] == "ip")
        parts.append(f"printf '{script}\\n' | nsenter --net=/proc/{lab.pid(node)}/ns/net "
                     f"ip -batch -")
    return " && ".join(parts) or None


@contextlib.contextmanager
def moving(lab: Lab, guest: str, src: str, dst: str,
           route_move: str = "netlink") -> Iterator[tuple[list[str], list[str], Any]]:
    """The source's and the destination's extra arguments for moving ``guest``, valid for
    the block, and the route mover (or None): ``route_move="netlink"`` prepares the L3 move
    in each router's namespace beforehand (``testbed.lab.routemove``); ``"shell"`` leaves
    it to a shell hook."""
    src_args, dst_args = agent_args(lab, guest, src, dst, with_resume_hook=route_move != "netlink")
    routes = lab.network.guests.resume_routes(lab.network, guest, dst)
    if route_move != "netlink" or not routes:
        yield src_args, dst_args, None
        return
    from ..host.state import STATE_DIR
    from .routemove import RouteMover

    mover = RouteMover(routes, {n: f"/proc/{lab.pid(n)}/ns/net" for n in routes},
                       STATE_DIR / "sockets")
    with mover as hook:
        yield src_args, [*dst_args, "--on-resume", hook], mover


def agent_args(lab: Lab, guest: str, src: str, dst: str,
               with_resume_hook: bool = True) -> tuple[list[str], list[str]]:
    """Extra arguments of the source and of the destination agent for moving ``guest``
    (``with_resume_hook``: the L3 move as a shell hook at resume)."""
    plan = lab.network.guests
    s, d = plan.slot(guest, src), plan.slot(guest, dst)
    on_resume, on_end = plan.move_commands(lab.network, guest, src, dst)
    service = f"{s.ip}:{plan.service_port}"
    src_args = ["--guest-netns", slot_path(lab, guest, src), "--service", service,
                "--guest-port", s.vswitch_port, "--probe-interval-ms", "0"]  # the client's
    dst_args = ["--guest-netns", slot_path(lab, guest, dst), "--resume-host", d.ip,
                "--resume-port", str(plan.service_port), "--guest-port", d.vswitch_port,
                "--guest-dev", "eth0"]
    if (cmd := hook(lab, on_end)) is not None:
        src_args += ["--on-end", cmd]
    if with_resume_hook and (cmd := hook(lab, on_resume)) is not None:
        dst_args += ["--on-resume", cmd]
    return src_args, dst_args


def start_client_probe(lab: Lab, guest: str, interval_ms: float) -> Any:
    """The client's probe of ``guest``'s service, from the ``client`` slot; returns once it
    is sending."""
    plan = lab.network.guests
    target = f"{plan.home(guest).ip}:{plan.service_port}"
    client = plan.home("client")
    proc = lab.spawn_agent(lab.slot_netns("client", client.host),
                           ["probe", "--target", target, "--interval-ms", str(interval_ms),
                            "--timeout-ms", "1000"],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    line = read_line(proc.stdout, START_TIMEOUT_S)
    if not line or "probing" not in line:
        proc.kill()
        said = f"nothing within {START_TIMEOUT_S:.0f} s" if line is None else repr(line)
        raise RuntimeError(f"client probe of {guest} did not start: it said {said} "
                           f"{proc.stderr.read()[-300:]}")
    return proc


def stop_client_probe(proc: Any) -> dict[str, Any]:
    """Stop the probe; its summary (see agents.client.probe)."""
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    for line in reversed((out or "").splitlines()):
        if line.startswith("{") and "requests" in line:
            return json.loads(line)
    return {"error": f"no summary from the client probe: {(err or '')[-300:]}"}

"""Bring-up and teardown time of spine-leaf fabrics of growing size (host kernel, no netem).

Prints, per size: nodes, links, seconds to bring the lab up (namespaces, veths, addresses,
sysctls, routes incl. ECMP, function stacks) and to tear it down, and what was left over
afterwards: node processes still alive, the nodes' network namespaces still held by any
process, and root-namespace interfaces that were not there before. Run as root::

    python -m benchmarks.topo_bringup            # default sizes, up to 4x8x4 and beyond
    python -m benchmarks.topo_bringup 2x2x2 4x8x4
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import time

from testbed.lab import Lab
from topologies import build

SIZES = ["2x2x2", "2x4x4", "4x8x4", "4x16x4"]


def root_links() -> set[str]:
    return set(os.listdir("/sys/class/net"))


def netns_inodes() -> set[int]:
    found = set()
    for pid in os.listdir("/proc"):
        if pid.isdigit():
            with contextlib.suppress(OSError):
                found.add(os.stat(f"/proc/{pid}/ns/net").st_ino)
    return found


def measure(size: str, stacks: bool) -> dict[str, object]:
    spines, leaves, hosts = (int(x) for x in size.split("x"))
    net = build("spine_leaf", spines=spines, leaves=leaves, hosts_per_leaf=hosts,
                stacks=stacks, stack_mode="policy")
    links0 = root_links()
    t0 = time.monotonic()
    lab = Lab(net)
    lab.__enter__()
    t_up = time.monotonic() - t0
    pids = list(lab.state.node_pids.values())
    ours = set(lab.state.netns_inodes.values())
    t1 = time.monotonic()
    lab.__exit__(None, None, None)
    t_down = time.monotonic() - t1
    time.sleep(0.5)
    alive = [p for p in pids if os.path.exists(f"/proc/{p}")]
    return {"size": size, "stacks": stacks, "nodes": len(net.nodes), "links": len(net.links),
            "routes": len(net.routes), "up_s": round(t_up, 2), "down_s": round(t_down, 2),
            "left_processes": len(alive), "left_netns": len(netns_inodes() & ours),
            "left_root_links": sorted(root_links() - links0)}


def main(argv: list[str]) -> None:
    print(f"{'size':8} {'stacks':6} {'nodes':>5} {'links':>5} {'routes':>6} {'up s':>6} "
          f"{'down s':>6}  leftovers")
    rows = []
    for size in argv or SIZES:
        for stacks in (False, True):
            r = measure(size, stacks)
            rows.append(r)
            left = (f"{r['left_processes']} proc, {r['left_netns']} netns, "
                    f"{len(r['left_root_links'])} links")  # type: ignore[arg-type]
            print(f"{size:8} {str(stacks):6} {r['nodes']:>5} {r['links']:>5} {r['routes']:>6} "
                  f"{r['up_s']:>6} {r['down_s']:>6}  {left}", flush=True)
    print(json.dumps(rows))


if __name__ == "__main__":
    main(sys.argv[1:])

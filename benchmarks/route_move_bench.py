"""The L3 move's share of the downtime (guest network ``hostroute``: its /32 on every router
of a 2x4 spine-leaf fabric), as a shell hook (``nsenter ... ip -batch`` per router) and
through netlink sockets prepared in each router's namespace before the migration
(``testbed.lab.routemove``). Alternated, ``--reps`` each; prints per migration the hook's time,
the downtime and the client's outage, then the medians. Run as root::

    python benchmarks/route_move_bench.py --reps 5
"""

from __future__ import annotations

import argparse
import json
import statistics

from testbed.lab import Lab, zygote
from testbed.measure.migration import MigrationJob, migrate
from topologies.guests import add_guests
from topologies.spine_leaf import spine_leaf


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--mib", type=int, default=32)
    a = ap.parse_args()
    zygote.shared()
    net = spine_leaf(spines=2, leaves=4, hosts_per_leaf=2, stacks=["management", "migration"])
    add_guests(net, "hostroute", {"g1": "h1-1"}, ["h1-1", "h4-1"], client_on="h2-1")
    rows: dict[str, list[dict]] = {"shell": [], "netlink": []}
    with Lab(net) as lab:
        here, there = "h1-1", "h4-1"
        for _ in range(a.reps):
            for mode in ("shell", "netlink"):
                src, dst = (net.stacks_of(h)["migration"] for h in (here, there))
                run = migrate(lab, MigrationJob(here, there, dst.ip, bind=src.ip,
                                                workload_mib=a.mib, dirty_rate_mbs=2,
                                                guest="g1", client_probe_ms=1.0,
                                                route_move=mode, keep_guest=False))
                res = run.result
                hook = (res.get("hooks") or {}).get("on_resume") or {}
                row = {"mode": mode, "completed": res.get("completed"),
                       "hook_ms": hook.get("ms"), "hook_rc": hook.get("rc"),
                       "netlink_ms": (res.get("route_move") or {}).get("applied_ms"),
                       "downtime_ms": res.get("downtime_ms"),
                       "client_outage_ms": res.get("client_outage_ms")}
                rows[mode].append(row)
                print(json.dumps(row), flush=True)
                if res.get("completed"):
                    here, there = there, here
    print("\nmode     hook ms (median)  downtime ms (median)  client outage ms (median)  ok")
    for mode, rs in rows.items():
        ok = [r for r in rs if r["completed"] and r["hook_rc"] == 0]

        def med(key: str, ok: list[dict] = ok) -> str:
            vals = [r[key] for r in ok if r[key] is not None]
            return f"{statistics.median(vals):.1f}" if vals else "-"

        print(f"{mode:8} {med('hook_ms'):>16}  {med('downtime_ms'):>20}  "
              f"{med('client_outage_ms'):>25}  {len(ok)}/{len(rs)}")
    return 0 if all(r["completed"] for rs in rows.values() for r in rs) else 1


if __name__ == "__main__":
    raise SystemExit(main())

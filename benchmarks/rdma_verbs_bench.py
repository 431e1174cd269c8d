"""What a batch of RDMA WRITEs costs the source's CPU over Soft-RoCE, the way the agents post and
wait for them now against the way they did before: one chained ``post_send`` of reused work
requests (``Link.post_writes``) vs a new SendWR + SGE and one ``post_send`` per WRITE; asleep on
the completion channel (``agents.rdma.copy.wait_written``) vs polling the completion queue
with 0.2-2 ms sleeps.

    python benchmarks/rdma_verbs_bench.py [--writes 1,48] [--batches 30] [--rate 100]
                                          [--delay 0] [--loss 0] [--region 32M]

Needs rdma_rxe (the full-kernel VM here: ``testbed vm-exec -- .venv/bin/python
benchmarks/rdma_verbs_bench.py``; under TCG every CPU figure is the emulator's). A ``pair``
lab (tbf at ``--rate`` Mbit/s, ``--delay`` ms each way, a 1000-packet queue) with a Soft-RoCE
path over its link; each batch is 1 MiB in ``n`` WRITEs (a migration batch of 256 pages with
zero pages between its runs: ~48), posted, then waited for before the next. Printed per
combination: the process's user and system CPU per batch over post + wait, the posting
thread's CPU inside ``post_send`` alone, and the wall time per batch. First, what an agent's
RDMA set-up costs in a fresh interpreter: importing pyverbs, opening the device, registering
a ``--region`` of memory (the destination registers its whole image).
"""

from __future__ import annotations

import argparse
import json
import mmap
import resource
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import trio  # noqa: E402

from agents.__main__ import parse_size  # noqa: E402
from agents.rdma.copy import wait_written  # noqa: E402
from agents.rdma.verbs import Device, Link, RdmaError, address_of  # noqa: E402
from agents.wire.transport import PeerStalled  # noqa: E402
from testbed.lab.lab import Lab  # noqa: E402
from testbed.lab.roce import roce_path  # noqa: E402
from topologies.pair import pair  # noqa: E402

BATCH = 1 << 20


def post_each(link: Link, writes: list[tuple[int, int, int]], lkey: int, rkey: int,
              wr_id: int) -> None:
    """How ``Link.post_writes`` posted before: a new SGE and SendWR per WRITE, one
    ``post_send`` each, the last signalled."""
    import pyverbs.enums as e
    from pyverbs.wr import SGE, SendWR

    last = len(writes) - 1
    for i, (laddr, raddr, n) in enumerate(writes):
        wr = SendWR(wr_id=wr_id, opcode=e.IBV_WR_RDMA_WRITE, num_sge=1,
                    sg=[SGE(laddr, n, lkey)],
                    send_flags=e.IBV_SEND_SIGNALED if i == last else 0)
        wr.set_wr_rdma(rkey, raddr)
        link.qp.post_send(wr, None)


async def poll_wait(link: Link, seq: int, idle_timeout: float) -> None:
    """How the source waited before: poll, sleeping 0.2 ms doubling to 2 ms between empty
    polls."""
    done = link.done
    pause, deadline = 0.0002, trio.current_time() + idle_timeout
    while seq not in done:
        got = link.poll()
        if got:
            done.update(got)
            pause = 0.0002
            continue
        if trio.current_time() > deadline:
            raise PeerStalled(f"RDMA WRITE not completed after {idle_timeout} s")
        await trio.sleep(pause)
        pause = min(pause * 2, 0.002)
    done.discard(seq)


def runs(n: int, src: int, dst: int) -> list[tuple[int, int, int]]:
    """``n`` WRITEs covering one batch (page-aligned runs, the last taking the rest)."""
    pages = BATCH // 4096
    size = max(1, pages // n) * 4096
    out = [(src + i * size, dst + i * size, size) for i in range(n - 1)]
    off = (n - 1) * size
    return [*out, (src + off, dst + off, BATCH - off)]


SETUP = """
import json, mmap, time
t0 = time.process_time()
import pyverbs.addr, pyverbs.cq, pyverbs.device, pyverbs.enums, pyverbs.mr, pyverbs.pd
import pyverbs.qp, pyverbs.wr
t1 = time.process_time()
from agents.rdma.verbs import Device, Link
dev = Device(DEV)
t2 = time.process_time()
buf = mmap.mmap(-1, SIZE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | mmap.MAP_POPULATE)
t3 = time.process_time()
mr = dev.register(buf, SIZE, remote_write=True)
t4 = time.process_time()
link = Link(dev, 1032, remote_write=False, events=True)
t5 = time.process_time()
mr.close()
dev.close()
t6 = time.process_time()
print(json.dumps({"import pyverbs": t1 - t0, "open the device": t2 - t1,
                  "register the region": t4 - t3, "a queue pair with its channel": t5 - t4,
                  "deregister and close": t6 - t5}))
"""


def setup_costs(device: str, size: int) -> dict[str, float]:
    """CPU seconds (user + system) of each RDMA set-up step in a fresh interpreter."""
    code = SETUP.replace("DEV", repr(device)).replace("SIZE", str(size))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=ROOT, timeout=300)
    if out.returncode != 0:
        raise RdmaError(f"set-up probe failed: {out.stderr.strip()[-500:]}")
    return json.loads(out.stdout)


def measure(link: Link, writes: list[tuple[int, int, int]], lkey: int, rkey: int,
            post: Callable[..., None], wait: Callable[[Link, int, float], Awaitable[None]],
            batches: int) -> dict[str, float]:
    """Post and wait for ``batches`` batches one after another; CPU and wall per batch."""
    post_cpu = [0.0]

    async def run() -> None:
        for seq in range(1, batches + 1):
            t0 = time.thread_time()
            post(link, writes, lkey, rkey, seq)
            post_cpu[0] += time.thread_time() - t0
            await wait(link, seq, 60.0)

    r0, w0 = resource.getrusage(resource.RUSAGE_SELF), time.monotonic()
    trio.run(run)
    r1, wall = resource.getrusage(resource.RUSAGE_SELF), time.monotonic() - w0
    return {"user_ms": (r1.ru_utime - r0.ru_utime) / batches * 1e3,
            "system_ms": (r1.ru_stime - r0.ru_stime) / batches * 1e3,
            "post_ms": post_cpu[0] / batches * 1e3, "wall_ms": wall / batches * 1e3}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--writes", default="1,48", help="WRITEs per 1 MiB batch, comma-separated")
    ap.add_argument("--batches", type=int, default=30, help="batches per combination")
    ap.add_argument("--rate", type=float, default=100.0, help="the link's tbf rate, Mbit/s")
    ap.add_argument("--delay", type=float, default=0.0, help="one-way delay, ms")
    ap.add_argument("--loss", type=float, default=0.0, help="random loss %% each way")
    ap.add_argument("--region", default="32M", help="memory registered in the set-up probe")
    args = ap.parse_args()
    counts = [int(x) for x in args.writes.split(",")]
    net = pair(delay_ms=args.delay, bw_mbps=args.rate, loss_pct=args.loss, queue_pkts=1000)
    with Lab(net) as lab:
        path = roce_path(lab, "h1", "h2")
        print(f"# RDMA set-up, CPU s in a fresh interpreter ({args.region} region): " + ", ".join(
            f"{k} {v:.3f}" for k, v in setup_costs(path.destination.rxe,
                                                   parse_size(args.region)).items()))
        a, b = Device(path.source.rxe), Device(path.destination.rxe)
        src, dst = mmap.mmap(-1, BATCH), mmap.mmap(-1, BATCH)
        src[:] = bytes(range(256)) * (BATCH // 256)
        mra = a.register(src, BATCH, remote_write=False)
        mrb = b.register(dst, BATCH, remote_write=True)
        la = Link(a, 2 * max(counts) + 16, remote_write=False, events=True)
        lb = Link(b, 16, remote_write=True)
        la.connect(b.gid, lb.info)
        lb.connect(a.gid, la.info)
        print(f"# Soft-RoCE {path.source.rxe} -> {path.destination.rxe}, tbf {args.rate:g} "
              f"Mbit/s, {2 * args.delay:g} ms RTT, {args.loss:g} % loss each way; "
              f"{args.batches} batches of 1 MiB each; "
              f"pyverbs reuses its work requests: {la._chain.reuse}\n")
        print("| WRITEs/batch | post | wait | user ms/batch | system ms/batch | "
              "in post_send ms/batch | wall ms/batch |")
        print("|---|---|---|---|---|---|---|")
        combos: list[tuple[str, Callable[..., None], str, Any]] = [
            ("per WRITE", post_each, "poll", poll_wait),
            ("per WRITE", post_each, "event", wait_written),
            ("chained", Link.post_writes, "poll", poll_wait),
            ("chained", Link.post_writes, "event", wait_written)]
        try:
            for n in counts:
                writes = runs(n, address_of(src), address_of(dst))
                for pname, post, wname, wait in combos:
                    dst[:] = bytes(BATCH)
                    r = measure(la, writes, mra.lkey, mrb.rkey, post, wait, args.batches)
                    if dst[:] != src[:]:
                        raise RdmaError(f"{pname}/{wname}: the region does not hold the batch")
                    print(f"| {n} | {pname} | {wname} | {r['user_ms']:.2f} | "
                          f"{r['system_ms']:.2f} | {r['post_ms']:.2f} | {r['wall_ms']:.1f} |",
                          flush=True)
        finally:
            for obj in (la.qp, lb.qp, mra, mrb):
                obj.close()
            a.close()
            b.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())

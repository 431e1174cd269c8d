"""A thin layer over pyverbs: a device with its RoCE v2 GID, memory regions over memory the
agents already have, and RC queue pairs that WRITE into a peer's region.

Every failure becomes an ``RdmaError`` that names the device and the step.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import random
import time
from dataclasses import dataclass
from typing import Any

PORT = 1


class RdmaError(ConnectionError):
    """An RDMA resource could not be made, or a WRITE did not complete."""


def _verbs() -> Any:
    try:
        import pyverbs.enums as e
    except ImportError as exc:
        raise RdmaError(f"pyverbs does not import ({exc}): apt-get install python3-pyverbs "
                        "rdma-core ibverbs-providers") from None
    return e


def preload() -> None:
    """Import pyverbs's modules now, at an agent's start-up (with its other imports), not
    inside its first migration, whose CPU figures leave start-up out; nothing if pyverbs is
    missing (the migration then says so)."""
    with contextlib.suppress(ImportError):
        import pyverbs.addr  # noqa: F401
        import pyverbs.cq  # noqa: F401
        import pyverbs.device  # noqa: F401
        import pyverbs.enums  # noqa: F401
        import pyverbs.mr  # noqa: F401
        import pyverbs.pd  # noqa: F401
        import pyverbs.qp  # noqa: F401
        import pyverbs.wr  # noqa: F401


def address_of(buf: Any) -> int:
    """The address of a writable buffer (mmap, bytearray, memoryview slice of one)."""
    c = ctypes.c_char.from_buffer(buf)
    try:
        return ctypes.addressof(c)
    finally:
        del c


# ibv_wc_status names (verbs.h), for error messages
WC_STATUS = ["success", "local length error", "local QP operation error",
             "local EE context operation error", "local protection error", "WR flushed",
             "memory window bind error", "bad response", "local access error",
             "remote invalid request", "remote access error", "remote operation error",
             "transport retry counter exceeded", "RNR retry counter exceeded",
             "local RDD violation", "remote invalid RD request", "remote aborted",
             "invalid EE context number", "invalid EE context state", "fatal error",
             "response timeout", "general error", "TM error", "TM rendezvous incomplete"]


def wc_status(code: int) -> str:
    return WC_STATUS[code] if 0 <= code < len(WC_STATUS) else f"status {code}"


@dataclass(frozen=True)
class QPInfo:
    qpn: int
    psn: int


class Device:
    """An opened RDMA device with its protection domain and IPv4 RoCE v2 GID."""

    def __init__(self, name: str) -> None:
        e = _verbs()
        from pyverbs.device import Context, get_device_list
        from pyverbs.pd import PD

        try:
            names = [d.name.decode() for d in get_device_list()]
        except Exception:  # no RDMA subsystem at all (no /sys/class/infiniband)
            names = []
        if name not in names:
            raise RdmaError(f"no RDMA device {name!r} here (devices: "
                            f"{', '.join(names) or 'none'}): is rdma_rxe loaded and the link "
                            "added (`rdma link show`)?")
        try:
            self.ctx = Context(name=name)
            self.pd = PD(self.ctx)
            port = self.ctx.query_port(PORT)
        except Exception as exc:
            raise RdmaError(f"RDMA device {name}: cannot open it: {exc}") from None
        if port.state != e.IBV_PORT_ACTIVE:
            raise RdmaError(f"RDMA device {name}: port {PORT} is not active "
                            f"(state {port.state}): is its netdev up?")
        self.name = name
        self.mtu = port.active_mtu
        self.max_qp_wr = self.ctx.query_device().max_qp_wr
        self.gid_index, self.gid = self._ipv4_gid(port.gid_tbl_len)

    def _ipv4_gid(self, n: int) -> tuple[int, str]:
        for i in range(min(n, 64)):
            try:
                gid = str(self.ctx.query_gid(PORT, i))
            except Exception:
                continue
            if gid.startswith("0000:0000:0000:0000:0000:ffff:"):
                return i, gid
        raise RdmaError(f"RDMA device {self.name}: no IPv4 RoCE v2 GID (its netdev has no "
                        "IPv4 address?)")

    def register(self, buf: Any, nbytes: int, remote_write: bool) -> Any:
        """A memory region over ``nbytes`` of ``buf`` (memory the caller keeps alive)."""
        e = _verbs()
        from pyverbs.mr import MR

        access = e.IBV_ACCESS_LOCAL_WRITE | (e.IBV_ACCESS_REMOTE_WRITE if remote_write else 0)
        try:
            return MR(self.pd, nbytes, access, address=address_of(buf))
        except Exception as exc:
            raise RdmaError(f"RDMA device {self.name}: registering {nbytes} bytes failed: "
                            f"{exc} (locked-memory limit? `ulimit -l`)") from None

    def close(self) -> None:
        with contextlib.suppress(Exception):  # best effort: the process may be exiting
            self.ctx.close()


class Link:
    """One RC queue pair (and its completion queue) to a peer's queue pair.

    With ``events`` the completion queue reports to a completion channel whose descriptor
    (``fd``, non-blocking) becomes readable when a completion arrives after ``arm``: the
    source waits for its WRITEs there instead of polling."""

    def __init__(self, dev: Device, depth: int, remote_write: bool,
                 events: bool = False) -> None:
        e = _verbs()
        from pyverbs.cq import CQ
        from pyverbs.qp import QP, QPAttr, QPCap, QPInitAttr

        self.dev = dev
        self.depth = max(16, min(depth, dev.max_qp_wr))
        self.channel: Any = None
        self.fd = -1
        try:
            if events:
                self.channel, self.fd = _comp_channel(dev)
            self.cq = CQ(dev.ctx, self.depth, None, self.channel, 0)
            init = QPInitAttr(qp_type=e.IBV_QPT_RC, scq=self.cq, rcq=self.cq, sq_sig_all=0,
                              cap=QPCap(max_send_wr=self.depth, max_recv_wr=1,
                                        max_send_sge=1, max_recv_sge=1))
            attr = QPAttr(port_num=PORT)
            attr.qp_access_flags = e.IBV_ACCESS_LOCAL_WRITE | \
                (e.IBV_ACCESS_REMOTE_WRITE if remote_write else 0)
            self.qp = QP(dev.pd, init, attr)
        except RdmaError:
            raise
        except Exception as exc:
            raise RdmaError(f"RDMA device {dev.name}: cannot create a queue pair: {exc}") \
                from None
        self.info = QPInfo(self.qp.qp_num, random.getrandbits(24))
        self.done: set[int] = set()  # completed wr_ids not yet claimed
        self._chain = _WriteChain()

    def connect(self, gid: str, peer: QPInfo, timeout_exp: int = 19, retries: int = 7) -> None:
        """INIT -> RTR -> RTS towards ``peer`` at ``gid``. ``timeout_exp``: the ACK timeout
        is 4.096 us * 2^exp (19: 2.1 s). Under emulation Soft-RoCE runs at tens of Mbit/s,
        so megabytes in flight take seconds to be acknowledged. With 268 ms and 8 batches in
        flight one VM run ended in "remote invalid request"; with 2.1 s and 4 batches the
        same test passed. That retransmissions caused it is a hypothesis: a separate run
        with raw WRITEs did not reproduce it."""
        e = _verbs()
        from pyverbs.addr import GID, AHAttr, GlobalRoute
        from pyverbs.qp import QPAttr

        attr = QPAttr(port_num=PORT)
        attr.path_mtu = self.dev.mtu
        attr.max_dest_rd_atomic = 1
        attr.max_rd_atomic = 1
        attr.min_rnr_timer = 12
        attr.timeout = timeout_exp
        attr.retry_cnt = retries
        attr.rnr_retry = 7
        attr.qp_access_flags = e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE
        try:
            gr = GlobalRoute(dgid=GID(gid), sgid_index=self.dev.gid_index, hop_limit=64)
            attr.ah_attr = AHAttr(port_num=PORT, is_global=1, gr=gr)
            attr.dest_qp_num = peer.qpn
            attr.rq_psn = peer.psn
            attr.sq_psn = self.info.psn
            self.qp.to_rts(attr)
        except Exception as exc:
            raise RdmaError(f"RDMA device {self.dev.name}: connecting to GID {gid} "
                            f"QP {peer.qpn} failed: {exc}") from None

    def post_writes(self, writes: list[tuple[int, int, int]], lkey: int, rkey: int,
                    wr_id: int) -> None:
        """Post RDMA WRITEs ``(local address, remote address, length)`` in one ``post_send``
        of a chained list; only the last is signalled (an RC queue completes in order, so
        its completion covers them all)."""
        try:
            self.qp.post_send(self._chain.fill(writes, lkey, rkey, wr_id), None)
        except Exception as exc:
            raise RdmaError(f"RDMA device {self.dev.name}: posting a WRITE failed: {exc}") \
                from None
        finally:
            self._chain.restore()

    def poll(self) -> list[int]:
        """The wr_ids of the completions available now; RdmaError on a failed one."""
        n, wcs = self.cq.poll(16)
        done = []
        for wc in wcs[:n]:
            if wc.status != 0:
                raise RdmaError(f"RDMA WRITE failed on {self.dev.name}: {wc_status(wc.status)}"
                                f" (vendor error {wc.vendor_err}): the peer or the path is gone")
            done.append(wc.wr_id)
        return done

    def arm(self) -> None:
        """Ask for an event on ``fd`` at the next completion (poll once more afterwards: one
        that arrived before arming raises none)."""
        try:
            self.cq.req_notify()
        except Exception as exc:
            raise RdmaError(f"RDMA device {self.dev.name}: arming the completion queue "
                            f"failed: {exc}") from None

    def close(self) -> None:
        """Destroy the queue pair, its completion queue and channel (best effort)."""
        for obj in (self.qp, self.cq, self.channel):
            if obj is not None:
                with contextlib.suppress(Exception):
                    obj.close()

    def take_event(self) -> bool:
        """Consume and acknowledge one completion event if ``fd`` holds one (False: none)."""
        try:
            self.channel.get_cq_event(self.cq)
        except Exception as exc:
            if getattr(exc, "error_code", None) in (errno.EAGAIN, errno.EWOULDBLOCK):
                return False
            raise RdmaError(f"RDMA device {self.dev.name}: reading a completion event "
                            f"failed: {exc}") from None
        self.cq.ack_events(1)
        return True


class _WriteChain:
    """The work requests of one ``post_send``, made once and reused: a list of chain links
    (each permanently pointing to the next) and one unchained, signalled tail. A batch of n
    WRITEs uses links 0..n-2, the second-last pointing to the tail until ``restore``.

    Each request's scatter entry is an ``SGE`` object the request points to
    (``SendWR.sg_list = sge``), updated in place. pyverbs 44 frees neither on its own (their
    destructors are misnamed ``__dealloc``), so the shared entry is never freed twice; a
    pyverbs whose ``SendWR.sg_list`` can be read (later versions, which also free it) gets
    new requests per batch instead."""

    def __init__(self) -> None:
        from pyverbs.wr import SGE, SendWR

        self._sge, self._wr = SGE, SendWR
        self.reuse = False  # the probe's request keeps its own scatter entry
        self.reuse = not _sg_list_readable(self._new(signalled=False)[0])
        self.links: list[tuple[Any, Any]] = []
        self.tail = self._new(signalled=True) if self.reuse else None
        self._spliced: int | None = None
        self._keep: list[Any] = []  # fresh requests, alive until their post returns

    def _new(self, signalled: bool) -> tuple[Any, Any]:
        e = _verbs()
        sge = self._sge(0, 0, 0)
        wr = self._wr(opcode=e.IBV_WR_RDMA_WRITE, num_sge=1, sg=[sge],
                      send_flags=e.IBV_SEND_SIGNALED if signalled else 0)
        if self.reuse:
            wr.sg_list = sge
        return wr, sge

    def fill(self, writes: list[tuple[int, int, int]], lkey: int, rkey: int,
             wr_id: int) -> Any:
        """The head of a chain holding ``writes`` (all with ``wr_id``, the last signalled)."""
        if not self.reuse:
            return self._fresh(writes, lkey, rkey, wr_id)
        n = len(writes)
        while len(self.links) < n - 1:
            wr = self._new(signalled=False)
            if self.links:
                self.links[-1][0].next_wr = wr[0]
            self.links.append(wr)
        used = [*self.links[: n - 1], self.tail]
        for (wr, sge), (laddr, raddr, length) in zip(used, writes, strict=True):
            sge.addr, sge.length, sge.lkey = laddr, length, lkey
            wr.set_wr_rdma(rkey, raddr)
            wr.wr_id = wr_id
        if n > 1:
            self._spliced = n - 2
            self.links[n - 2][0].next_wr = self.tail[0]
        return used[0][0]

    def restore(self) -> None:
        """After a post: re-link the link spliced to the tail by the last ``fill`` to its
        successor (or drop the fresh requests)."""
        self._keep.clear()
        i, self._spliced = self._spliced, None
        if i is not None and i + 1 < len(self.links):
            self.links[i][0].next_wr = self.links[i + 1][0]

    def _fresh(self, writes: list[tuple[int, int, int]], lkey: int, rkey: int,
               wr_id: int) -> Any:
        e = _verbs()
        head = None
        for i, (laddr, raddr, length) in enumerate(reversed(writes)):
            wr = self._wr(wr_id=wr_id, opcode=e.IBV_WR_RDMA_WRITE, num_sge=1,
                          sg=[self._sge(laddr, length, lkey)],
                          send_flags=e.IBV_SEND_SIGNALED if i == 0 else 0, next_wr=head)
            wr.set_wr_rdma(rkey, raddr)
            self._keep.append(wr)  # the chain points into it until the post returns
            head = wr
        return head


def _sg_list_readable(wr: Any) -> bool:
    """Whether this pyverbs lets ``SendWR.sg_list`` be read (later versions; 44's is
    set-only)."""
    try:
        wr.sg_list  # noqa: B018 (a probe)
    except AttributeError:
        return False
    return True


def _comp_channel(dev: Device) -> tuple[Any, int]:
    """A completion channel and its descriptor, made non-blocking. pyverbs does not expose
    the descriptor: it is the one "[infinibandevent]" file the channel's creation opened
    (the context's own event file was opened with the context)."""
    from pyverbs.cq import CompChannel

    before = set(_event_fds())
    try:
        channel = CompChannel(dev.ctx)
    except Exception as exc:
        raise RdmaError(f"RDMA device {dev.name}: cannot create a completion channel: "
                        f"{exc}") from None
    new = sorted(set(_event_fds()) - before)
    if len(new) != 1:
        channel.close()
        raise RdmaError(f"RDMA device {dev.name}: cannot tell its completion channel's "
                        f"descriptor ({len(new)} new event files)")
    os.set_blocking(new[0], False)
    return channel, new[0]


def _event_fds() -> list[int]:
    """This process's open RDMA event files (completion channels, devices' async events)."""
    out = []
    for name in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            if os.readlink(f"/proc/self/fd/{name}") == "anon_inode:[infinibandevent]":
                out.append(int(name))
    return out


def now() -> float:
    return time.monotonic()

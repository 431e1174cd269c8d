"""A thin layer over pyverbs: a device with its RoCE v2 GID, memory regions over memory the
agents already have, and RC queue pairs that WRITE into a peer's region.

Every failure becomes an ``RdmaError`` that names the device and the step.
"""

from __future__ import annotations

import contextlib
import ctypes
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
    """One RC queue pair (and its completion queue) to a peer's queue pair."""

    def __init__(self, dev: Device, depth: int, remote_write: bool) -> None:
        e = _verbs()
        from pyverbs.cq import CQ
        from pyverbs.qp import QP, QPAttr, QPCap, QPInitAttr

        self.dev = dev
        self.depth = max(16, min(depth, dev.max_qp_wr))
        try:
            self.cq = CQ(dev.ctx, self.depth, None, None, 0)
            init = QPInitAttr(qp_type=e.IBV_QPT_RC, scq=self.cq, rcq=self.cq, sq_sig_all=0,
                              cap=QPCap(max_send_wr=self.depth, max_recv_wr=1,
                                        max_send_sge=1, max_recv_sge=1))
            attr = QPAttr(port_num=PORT)
            attr.qp_access_flags = e.IBV_ACCESS_LOCAL_WRITE | \
                (e.IBV_ACCESS_REMOTE_WRITE if remote_write else 0)
            self.qp = QP(dev.pd, init, attr)
        except Exception as exc:
            raise RdmaError(f"RDMA device {dev.name}: cannot create a queue pair: {exc}") \
                from None
        self.info = QPInfo(self.qp.qp_num, random.getrandbits(24))
        self.done: set[int] = set()  # completed wr_ids not yet claimed

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
        """Post RDMA WRITEs ``(local address, remote address, length)``; only the last is
        signalled (an RC queue completes in order, so its completion covers them all)."""
        e = _verbs()
        from pyverbs.wr import SGE, SendWR

        last = len(writes) - 1
        try:
            for i, (laddr, raddr, n) in enumerate(writes):
                wr = SendWR(wr_id=wr_id, opcode=e.IBV_WR_RDMA_WRITE, num_sge=1,
                            sg=[SGE(laddr, n, lkey)],
                            send_flags=e.IBV_SEND_SIGNALED if i == last else 0)
                wr.set_wr_rdma(rkey, raddr)
                self.qp.post_send(wr, None)
        except Exception as exc:
            raise RdmaError(f"RDMA device {self.dev.name}: posting a WRITE failed: {exc}") \
                from None

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


def now() -> float:
    return time.monotonic()

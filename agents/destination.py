"""The destination agent: receives one migration, checks every batch and the whole image,
and is the one place where the switchover is decided.

After the final round it verifies the image and answers PREPARED (its standby guest waits,
it does not run). On the source's GO it records ``committed`` durably, then starts the guest
and answers DECISION. Before a GO, anything else (the source's ABORT, its connection lost,
its silence past the idle timeout, a RESOLVE) records ``aborted`` and discards the standby.
A decision, once recorded, is the answer to every later RESOLVE (``agents/decisions.py``),
so the source can ask again after a lost answer and act on exactly one outcome.
"""

from __future__ import annotations

import collections
import contextlib
import mmap
import os
import socket
import time
from array import array
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import trio

from agents.decisions import DecisionStore, default_dir
from agents.guest.identity import run_hook
from agents.guest.standby import StandbyError, StandbyGuest
from agents.memory.layout import Layout
from agents.rdma.copy import DestRdma, receive_placed
from agents.rdma.verbs import Device, RdmaError
from agents.runtime import faults
from agents.runtime.cputime import ThreadCpu, cpu_between, process_cpu
from agents.runtime.gcpause import gc_paused
from agents.wire import protocol as P
from agents.wire.digest import image_digest
from agents.wire.imagestore import ImageStore, open_disk_store
from agents.wire.receiver import receive_batch
from agents.wire.transport import FramedStream, PeerStalled, TcpTransport, Transport


@dataclass
class DestinationConfig:
    host: str = "127.0.0.1"
    port: int = 0
    resume: bool = True
    resume_host: str | None = None
    resume_port: int = 0
    save_image: str | None = None
    disk_dest: str | None = None  # where a migrated disk goes / the synchronous replica is
    idle_timeout: float = 30.0
    max_image_bytes: int = 8 << 30
    max_unauthenticated_bytes: int = 2 << 30  # an image a plain (unauthenticated) HELLO asks
    decision_dir: str = field(default_factory=default_dir)
    decision_linger: float = 30.0  # answer RESOLVE this long after an unconfirmed decision
    also_listen: list[tuple[str, int]] = field(default_factory=list)  # e.g. management
    guest_netns: str | None = None  # the guest's own namespace (its network identity)
    guest_dev: str = "eth0"
    guest_port: str | None = None  # its vSwitch port in this namespace, up at resume
    announce: str | None = None  # after resume (agents.guest.announce schedule), None: silent
    on_resume: str | None = None  # hook once the guest runs here, before the ACK
    rdma: str | None = None  # RDMA device: the image is registered for the source's WRITEs
    rdma_max_region: int | None = None  # register at most this much (pinned memory cap)


@dataclass
class Session:
    mid: str
    layout: Layout
    streams: int
    stores: dict[int, ImageStore]
    limits: dict[int, P.BatchLimits]
    disk_mode: str | None = None
    batches: dict[int, int] = field(default_factory=dict)
    attached: int = 0
    failed: str | None = None
    resumed: bool = False
    scope: trio.CancelScope | None = None
    standby: StandbyGuest | None = None
    changed: trio.Event = field(default_factory=trio.Event)
    prepared: bool = False
    decision: str | None = None  # committed | aborted, once decided
    wait_scope: trio.CancelScope | None = None  # waiting for GO: cancelled by an abort
    confirmed: trio.Event = field(default_factory=trio.Event)
    rdma: DestRdma | None = None  # the image region and queue pairs (agents.rdma)
    verify: ThreadCpu = field(default_factory=ThreadCpu)  # hashing + checksums, per batch
    # this process's CPU (user, system) at the HELLO, once HELLO_OK is sent (the image and
    # any RDMA region set up), at the first batch's frame, once the final round's batches
    # are in, and at the decision
    cpu_hello: dict[str, float] | None = None
    cpu_ready: dict[str, float] | None = None
    cpu_first: dict[str, float] | None = None
    cpu_copied: dict[str, float] | None = None
    cpu_decided: dict[str, float] | None = None
    t_first: float | None = None
    t_copied: float | None = None

    def notify(self) -> None:
        self.changed.set()
        self.changed = trio.Event()

    def cpu_figures(self) -> dict:
        """Where this process's CPU went, by phase (user, system): ``cpu_setup_s`` from the
        HELLO to HELLO_OK sent (the image, the standby guest, the RDMA region),
        ``cpu_copy_s`` from the first batch's frame to the final round's last batch (the
        preflight probe, if any, lies between the two), ``cpu_commit_s`` from there to the
        decision (the digest, the standby's resume); and within the copy phase
        ``cpu_verify_s`` (this thread's user + system) hashing the units where they landed
        and checking the batch checksums."""
        wall = self.t_copied - self.t_first if self.t_first is not None and \
            self.t_copied is not None else None
        return {"cpu_setup_s": cpu_between(self.cpu_hello, self.cpu_ready),
                "cpu_copy_s": cpu_between(self.cpu_first, self.cpu_copied),
                "cpu_commit_s": cpu_between(self.cpu_copied, self.cpu_decided),
                "cpu_verify_s": round(self.verify.seconds, 4),
                "verified_batches": self.verify.blocks,
                "copy_wall_s": round(wall, 4) if wall is not None else None}


# the image's page faults are paid at HELLO, not while pages stream in
_POPULATE = getattr(mmap, "MAP_POPULATE", 0)
_PRIVATE_POPULATE = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | _POPULATE


class DestinationBusy(P.ProtocolError):
    """A HELLO while another migration is in progress: refused, the other one goes on."""


class StrayStream(P.ProtocolError):
    """A data stream that belongs to no migration here (or one too many): refused alone."""


class Destination:
    """Serves migrations on a listener; ``once`` stops after the first one (the default)."""

    def __init__(self, cfg: DestinationConfig, transport: Transport | None = None) -> None:
        self.cfg = cfg
        self.transport = transport or TcpTransport()
        self.session: Session | None = None
        self.outcomes: list[dict] = []
        self.rejected: list[str] = []
        self.on_reject: Callable[[str], None] | None = None  # e.g. print it as it happens
        self.port: int | None = None
        self.also: list[tuple[str, int]] = []  # the other listening addresses (all services)
        self.store = DecisionStore(cfg.decision_dir)
        self.pending: dict[str, Session] = {}  # decided, answer not yet confirmed
        self.answered: collections.deque[str] = collections.deque(maxlen=4096)  # ids told
        # "aborted" without a record (unknown here): never to be prepared afterwards
        self._done = trio.Event()
        self.rdma_dev: Device | None = None  # opened once, for every migration

    async def serve(self, once: bool = True,
                    task_status=trio.TASK_STATUS_IGNORED) -> list[dict]:
        if self.cfg.rdma:  # as a server opens its port: once, not in every migration
            with contextlib.suppress(RdmaError):  # a HELLO tries again and says why
                self.rdma_device()
        try:
            return await self._serve(once, task_status)
        finally:
            if self.rdma_dev is not None:
                self.rdma_dev.close()
                self.rdma_dev = None

    def rdma_device(self) -> Device:
        """The RDMA device (``--rdma``), opened at the start and kept; opened here if that
        failed (RdmaError saying why if it still does)."""
        if self.rdma_dev is None:
            assert self.cfg.rdma
            self.rdma_dev = Device(self.cfg.rdma)
        return self.rdma_dev

    async def _serve(self, once: bool, task_status) -> list[dict]:
        listeners = await self.transport.listen(self.cfg.host, self.cfg.port)
        self.port = listeners[0].socket.getsockname()[1]
        for host, port in self.cfg.also_listen:  # another path to the same destination
            more = await self.transport.listen(host, port)
            self.also.append((host, more[0].socket.getsockname()[1]))
            listeners += more
        async with trio.open_nursery() as nursery:
            for lst in listeners:
                nursery.start_soon(self._accept_loop, lst, nursery)
            task_status.started(self.port)
            if once:
                await self._done.wait()
                nursery.cancel_scope.cancel()
        return self.outcomes

    async def _accept_loop(self, lst: trio.SocketListener, nursery: trio.Nursery) -> None:
        async with lst:
            while True:
                stream = await lst.accept()
                nursery.start_soon(self._handle, stream)

    async def _handle(self, raw: trio.SocketStream) -> None:
        try:  # TLS: handshake and authentication; a refused peer never reaches a session
            wrapped = await self.transport.wrap_accepted(raw)
        except (P.ProtocolError, ConnectionError, OSError) as exc:
            self._reject(f"{type(exc).__name__}: {exc}")
            await raw.aclose()
            return
        stream = FramedStream(wrapped, self.cfg.idle_timeout)
        kind = None
        try:
            ftype, payload = await stream.receive("HELLO")
            kind = ftype
            if ftype == P.FrameType.HELLO:
                await self._control(stream, P.decode_json(ftype, payload),
                                    authenticated=isinstance(wrapped, trio.SSLStream))
            elif ftype == P.FrameType.DATA_HELLO:
                await self._data(stream, P.decode_json(ftype, payload))
            elif ftype == P.FrameType.RESOLVE:
                await self._answer_resolve(stream, P.decode_json(ftype, payload))
            else:
                raise P.ProtocolError(f"first frame must be HELLO or DATA_HELLO, not {ftype.name}")
        except (P.ProtocolError, ConnectionError, OSError, KeyError, TypeError,
                ValueError) as exc:  # the last three: malformed fields in a peer's JSON
            msg = f"{type(exc).__name__}: {exc}"
            s = self.session
            stray = isinstance(exc, StrayStream)
            if kind == P.FrameType.DATA_HELLO and s is not None and not s.failed and not stray:
                s.failed = msg
                if s.scope is not None:
                    s.scope.cancel()
            busy = isinstance(exc, DestinationBusy)
            if kind is None or busy or stray or kind == P.FrameType.RESOLVE:
                self._reject(msg)  # a stray peer does not end a waiting destination
            with contextlib.suppress(Exception), trio.move_on_after(1):
                await stream.send(P.encode_json(P.FrameType.ERROR, {"error": msg}))
            if kind == P.FrameType.HELLO and not busy:
                self._finish({"ok": False, "error": msg})
        finally:
            await stream.aclose()

    def _reject(self, msg: str) -> None:
        self.rejected.append(msg)
        if self.on_reject is not None:
            self.on_reject(msg)

    def _finish(self, outcome: dict) -> None:
        self.outcomes.append(outcome)
        self.session = None
        self._done.set()

    # --- data streams ----------------------------------------------------------------------
    async def _data(self, stream: FramedStream, hello: dict) -> None:
        s = self.session
        if s is None or hello.get("migration") != s.mid:
            raise StrayStream("data stream for no migration in progress")
        if s.attached >= s.streams or s.prepared:
            raise StrayStream(f"data stream beyond the {s.streams} of the migration")
        s.attached += 1
        while True:
            try:
                ftype, length = await stream.receive_header("pages")
            except ConnectionError:
                if self.session is not s:
                    return  # migration over: the source closed its streams
                raise
            if s.cpu_first is None:
                s.cpu_first, s.t_first = process_cpu(), time.monotonic()
            if ftype == P.FrameType.RDMA_PAGES and s.rdma is not None:
                batch = await receive_placed(stream, length, s.limits, s.stores, s.verify)
            elif ftype != P.FrameType.PAGES:
                raise P.ProtocolError(f"unexpected {ftype.name} on a data stream")
            else:
                batch = await receive_batch(stream, length, s.limits, s.stores, s.verify)
            s.batches[batch.round] = s.batches.get(batch.round, 0) + 1
            s.notify()

    async def _wait_batches(self, s: Session, round_no: int, want: int) -> None:
        deadline = trio.current_time() + self.cfg.idle_timeout
        seen = -1
        while s.batches.get(round_no, 0) < want:
            if s.failed:
                raise P.ProtocolError(f"data stream failed: {s.failed}")
            got = s.batches.get(round_no, 0)
            if got != seen:
                seen, deadline = got, trio.current_time() + self.cfg.idle_timeout
            with trio.move_on_at(deadline) as scope:
                await s.changed.wait()
            if scope.cancelled_caught:
                raise PeerStalled(f"round {round_no}: {got} of {want} batches after "
                                  f"{self.cfg.idle_timeout} s without progress")
        if s.batches.get(round_no, 0) > want:
            raise P.ProtocolError(f"round {round_no}: more batches than announced")

    # --- control stream --------------------------------------------------------------------
    async def _control(self, ctl: FramedStream, hello: dict, authenticated: bool) -> None:
        if self.session is not None:
            raise DestinationBusy("destination busy with another migration")
        cpu_hello = process_cpu()
        mid, layout, streams, batch_pages = self._check_hello(hello, authenticated)
        await faults.ahit("destination", "hello")
        limits = {P.SPACE_MEMORY: P.BatchLimits(layout.page_size, layout.npages, batch_pages)}
        stores: dict[int, ImageStore] = {}
        disk_mode = self._open_disk(hello.get("disk"), batch_pages, limits, stores)
        can_resume = bool(hello.get("can_resume")) and self.cfg.resume
        image, standby, service, service_sock = self._image_for(layout, can_resume,
                                                                disk_mode is not None)
        stores[P.SPACE_MEMORY] = ImageStore(image, layout.page_size)
        s = Session(mid, layout, streams, stores, limits, disk_mode, standby=standby,
                    cpu_hello=cpu_hello)
        self.session = s
        ctl.reserve(8 * layout.npages + P.MAX_JSON)  # the COMMIT arrives in the downtime
        try:
            if standby is not None:
                try:
                    await standby.ready()
                except StandbyError as exc:
                    raise P.ProtocolError(str(exc)) from None
            if hello.get("rdma") is not None:
                s.rdma = self._rdma(hello["rdma"], image, layout.nbytes)
            await ctl.send(P.encode_json(P.FrameType.HELLO_OK, {
                "resume_service": list(service) if service else None,
                "rdma": s.rdma.reply() if s.rdma else None}))
            s.cpu_ready = process_cpu()
            with trio.CancelScope() as scope, gc_paused():
                s.scope = scope
                outcome = await self._control_loop(ctl, s, service)
                s.cpu_decided = process_cpu()
            if scope.cancelled_caught:
                raise P.ProtocolError(f"data stream failed: {s.failed}")
        finally:
            if s.rdma is not None:  # deregistered: the source's rkey no longer works
                s.rdma.close()
            if s.decision is None and s.prepared:  # an error before the decision: abort
                self._abort(s, "failed before the decision")
            if service_sock:
                service_sock.close()
            if s.standby and not s.resumed:
                s.standby.kill(self.cfg.guest_port)
            disk = s.stores.get(P.SPACE_DISK)
            if disk is not None:
                disk.close()
        self.session = None
        await self._linger(s)
        self._finish(outcome | s.cpu_figures())

    def _check_hello(self, hello: dict, authenticated: bool) -> tuple[str, Layout, int, int]:
        """The HELLO's migration id, layout, streams and batch size, within this
        destination's limits."""
        if hello.get("version") != P.VERSION:
            raise P.ProtocolError(f"unsupported protocol version {hello.get('version')}")
        mid = hello.get("migration")
        if not isinstance(mid, str) or not 1 <= len(mid) <= 128 or \
                mid in self.pending or mid in self.answered or \
                self.store.get(mid) is not None:
            raise P.ProtocolError("HELLO needs a new migration id (a string of 1-128 chars)")
        try:
            layout = Layout.from_json(hello["layout"])
            streams = int(hello["streams"])
            batch_pages = int(hello.get("batch_pages", 256))
        except (KeyError, TypeError, ValueError) as exc:
            raise P.ProtocolError(f"bad HELLO: {exc}") from None
        if layout.nbytes > self.cfg.max_image_bytes or not 1 <= streams <= 64 or \
                not 1 <= batch_pages <= 4096 or \
                batch_pages * (layout.page_size + 5) + 64 > P.MAX_FRAME:
            raise P.ProtocolError("HELLO asks for more than this destination accepts")
        if not authenticated and layout.nbytes > self.cfg.max_unauthenticated_bytes:
            raise P.ProtocolError(f"an unauthenticated HELLO may ask for at most "
                                  f"{self.cfg.max_unauthenticated_bytes >> 20} MiB")
        return mid, layout, streams, batch_pages

    def _image_for(self, layout: Layout, can_resume: bool, with_disk: bool
                   ) -> tuple[mmap.mmap, StandbyGuest | None, tuple | None,
                              socket.socket | None]:
        """Where the image is received: a standby guest's memfd (the guest resumes here;
        its service in its own namespace, or on a socket bound now and handed over), or a
        private mapping (verify only)."""
        disk = self.cfg.disk_dest if with_disk else None
        if can_resume and self.cfg.guest_netns:  # the guest binds its service in its netns
            service = (self.cfg.resume_host or self.cfg.host, self.cfg.resume_port)
            guest_args = ["--netns", self.cfg.guest_netns, "--host", service[0],
                          "--port", str(service[1]), "--announce-on", self.cfg.guest_dev,
                          "--announce", self.cfg.announce or "none"]
            standby = StandbyGuest.start(layout.nbytes, guest_args, [], disk)
            return standby.image, standby, service, None
        if can_resume:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            sock.bind((self.cfg.resume_host or self.cfg.host, self.cfg.resume_port))
            standby = StandbyGuest.start(layout.nbytes, ["--service-fd", str(sock.fileno())],
                                         [sock.fileno()], disk)
            return standby.image, standby, sock.getsockname(), sock
        image = mmap.mmap(-1, max(layout.nbytes, 1), flags=_PRIVATE_POPULATE)
        return image, None, None, None

    async def _linger(self, s: Session) -> None:
        """A decision whose answer the source has not confirmed stays answerable (RESOLVE)
        for ``decision_linger`` seconds before a one-shot destination exits."""
        if s.decision is None or s.confirmed.is_set():
            return
        self.pending[s.mid] = s
        with trio.move_on_after(self.cfg.decision_linger):
            await s.confirmed.wait()
        self.pending.pop(s.mid, None)

    # --- the decision ----------------------------------------------------------------------
    def _abort(self, s: Session, why: str) -> str:
        """Decide ``aborted`` (unless already decided): the standby is killed first, then the
        decision recorded. Synchronous: nothing else runs in between."""
        if s.decision is not None:
            return s.decision
        s.decision = "aborted"
        if s.standby is not None:
            s.standby.kill()
        self.store.put(s.mid, "aborted", reason=why)
        if s.wait_scope is not None:
            s.wait_scope.cancel()
        return "aborted"

    def _resolve(self, mid: str) -> str:
        """The decision for ``mid``, deciding ``aborted`` now if none was made yet."""
        s = self.session if self.session is not None and self.session.mid == mid \
            else self.pending.get(mid)
        if s is not None:
            return self._abort(s, "resolved before any decision")
        rec = self.store.get(mid)
        if rec is None:  # never prepared here: nothing can run (commits are recorded)
            self.answered.append(mid)
            return "aborted"
        if rec["state"] == "prepared":  # prepared by an agent that is gone with its standby
            self.store.put(mid, "aborted", reason="resolved after its agent was gone")
            return "aborted"
        return rec["state"]

    async def _answer_resolve(self, stream: FramedStream, msg: dict) -> None:
        mid = msg.get("migration")
        if not isinstance(mid, str) or not 1 <= len(mid) <= 128:
            raise P.ProtocolError("RESOLVE needs a migration id")
        decision = self._resolve(mid)
        rec = self.store.get(mid) or {}
        await stream.send(P.encode_json(P.FrameType.DECISION, {
            "migration": mid, "decision": decision, "pid": rec.get("guest_pid"),
            "service": rec.get("service")}))
        if msg.get("confirm"):
            s = self.pending.get(mid) or (self.session if self.session is not None and
                                          self.session.mid == mid else None)
            if s is not None and s.decision is not None:
                s.confirmed.set()

    def _rdma(self, offer: object, image: mmap.mmap, nbytes: int) -> DestRdma:
        """Register the image for the source's RDMA WRITEs (``agents.rdma``)."""
        if not self.cfg.rdma:
            raise P.ProtocolError("the source asks for RDMA; this destination has no RDMA "
                                  "device (started without --rdma DEV)")
        return DestRdma(self.rdma_device(), image, nbytes, offer, self.cfg.rdma_max_region)

    def _open_disk(self, disk: object, batch_pages: int, limits: dict[int, P.BatchLimits],
                   stores: dict[int, ImageStore]) -> str | None:
        """Check the HELLO's disk description; open the target (or the replica)."""
        if disk is None:
            return None
        if not isinstance(disk, dict) or disk.get("mode") not in ("transfer", "replicated"):
            raise P.ProtocolError(f"bad disk description {disk!r}")
        if not self.cfg.disk_dest:
            raise P.ProtocolError("the source migrates a disk; this destination has no "
                                  "--disk-dest")
        nbytes, unit = int(disk["bytes"]), int(disk["block_size"])
        if unit != 4096 or nbytes <= 0 or nbytes % unit or nbytes > self.cfg.max_image_bytes:
            raise P.ProtocolError(f"disk of {nbytes} bytes in {unit}-byte blocks refused")
        replicated = disk["mode"] == "replicated"
        try:
            store = open_disk_store(self.cfg.disk_dest, nbytes, unit, replicated)
        except (OSError, ValueError) as exc:
            raise P.ProtocolError(f"disk target: {exc}") from None
        stores[P.SPACE_DISK] = store
        if not replicated:  # a replica is never written by the migration
            limits[P.SPACE_DISK] = P.BatchLimits(unit, nbytes // unit, batch_pages)
        return disk["mode"]

    async def _control_loop(self, ctl: FramedStream, s: Session,
                            service: tuple[str, int] | None) -> dict:
        final_round = None
        while True:
            ftype, payload = await ctl.receive("control frame")
            if ftype == P.FrameType.FILLER:
                continue
            if ftype == P.FrameType.PING:
                await ctl.send(P.encode_json(P.FrameType.PONG, P.decode_json(ftype, payload)))
            elif ftype == P.FrameType.ROUND_END:
                msg = P.decode_json(ftype, payload)
                rnd, want = int(msg["round"]), int(msg["batches"])
                await self._wait_batches(s, rnd, want)
                if msg.get("final"):
                    final_round = rnd
                    s.cpu_copied, s.t_copied = process_cpu(), time.monotonic()
                else:
                    if rnd == 0:
                        await faults.ahit("destination", "precopy")
                    await ctl.send(P.encode_json(P.FrameType.ROUND_ACK, {"round": rnd}))
            elif ftype == P.FrameType.COMMIT:
                if final_round is None:
                    raise P.ProtocolError("COMMIT before the final round")
                info, hashes = P.decode_commit(payload, s.layout.npages)
                verdict = await self._verify(s, info, hashes)
                if not verdict["ok"]:
                    await ctl.send(P.encode_json(P.FrameType.PREPARED, verdict))
                    return verdict
                out = verdict | await self._prepare_and_decide(ctl, s, verdict, service)
                return out | {"ok": out["decision"] == "committed", "migration": s.mid}
            else:
                raise P.ProtocolError(f"unexpected {ftype.name} on the control stream")

    async def _prepare_and_decide(self, ctl: FramedStream, s: Session, verdict: dict,
                                  service: tuple[str, int] | None) -> dict:
        """PREPARED, then wait for the source's GO (commit) or anything else (abort)."""
        self.store.put(s.mid, "prepared", agent_pid=os.getpid(),
                       guest_pid=s.standby.pid if s.standby else None,
                       service=list(service) if service else None)
        s.prepared, s.scope = True, None  # data streams no longer matter
        await faults.ahit("destination", "prepared")
        if s.t_copied is not None:
            verdict = verdict | {"prepare_ms": round((time.monotonic() - s.t_copied) * 1e3, 2)}
        if not faults.drops("destination", "prepared"):
            await ctl.send(P.encode_json(P.FrameType.PREPARED, verdict))
        ftype = None
        with trio.CancelScope() as s.wait_scope:
            try:
                ftype, _ = await ctl.receive("GO")
            except (P.ProtocolError, ConnectionError, OSError) as exc:
                self._abort(s, f"source gone before the decision: {exc}")
        s.wait_scope = None
        if ftype == P.FrameType.GO and s.decision is None:
            t_go = time.monotonic()
            await faults.ahit("destination", "go")
            out = await self._commit(s, service)
            out["commit_ms"] = round((time.monotonic() - t_go) * 1e3, 2)
        else:
            self._abort(s, f"source sent {ftype.name} before GO" if ftype else
                        "decided without GO")
            if ftype == P.FrameType.ABORT:
                s.confirmed.set()  # the source rolled back itself: it knows
            out = {"decision": s.decision}
        await faults.ahit("destination", "decided")
        if not faults.drops("destination", "decided"):
            with contextlib.suppress(P.ProtocolError, ConnectionError, OSError):
                await ctl.send(P.encode_json(P.FrameType.DECISION, out))
                with trio.move_on_after(min(5.0, self.cfg.idle_timeout)):
                    ftype, _ = await ctl.receive("CONFIRM")
                    if ftype == P.FrameType.CONFIRM:
                        s.confirmed.set()
        return out

    async def _commit(self, s: Session, service: tuple[str, int] | None) -> dict:
        """The decision: ``committed`` recorded before the guest is told to go. A guest that
        then fails to start is killed and the decision revised to ``aborted`` (nobody has
        been told ``committed`` yet, and no copy runs here)."""
        s.decision = "committed"
        self.store.put(s.mid, "committed")
        out: dict = {"decision": "committed", "resumed": False}
        if service is None:
            return out
        try:
            out.update(await self._resume(s, service))
        except (P.ProtocolError, StandbyError) as exc:
            if s.standby is not None:
                s.standby.kill()
            s.decision = "aborted"
            self.store.put(s.mid, "aborted", revise=True, reason=str(exc))
            return {"decision": "aborted", "error": str(exc)}
        self.store.put(s.mid, "committed", guest_pid=out.get("pid"))
        return out

    async def _verify(self, s: Session, info: dict, hashes: memoryview | None) -> dict:
        """Compare this side's digests (kept current as batches arrived) with the source's;
        the source's page hashes, when it sent them, only name the pages that differ."""
        t0 = time.monotonic()
        mem = s.stores[P.SPACE_MEMORY]
        digest = mem.digest()
        errors = []
        if hashes is not None and image_digest(hashes) != info.get("digest"):
            errors.append("the source's page table does not match its own digest")
        elif digest != info.get("digest"):
            if hashes is None:
                errors.append("image digest mismatch (the source sent no page table: "
                              "--commit-table names the pages that differ)")
            else:
                theirs = array("Q", bytes(hashes))
                bad = [i for i, (a, b) in enumerate(zip(mem.hashes, theirs, strict=True))
                       if a != b]
                errors.append(f"image digest mismatch: {len(bad)} pages differ"
                              + (f", first {bad[0]}" if bad else ""))
        disk = s.stores.get(P.SPACE_DISK)
        if disk is not None:
            mine = disk.rehash() if s.disk_mode == "replicated" else disk.digest()
            if mine != info.get("disk_digest"):
                errors.append(f"disk digest mismatch ({s.disk_mode})")
        verify_ms = round((time.monotonic() - t0) * 1e3, 2)
        if errors:
            return {"ok": False, "verify_ms": verify_ms, "error": "; ".join(errors)}
        if self.cfg.save_image:
            Path(self.cfg.save_image).write_bytes(mem.buf)
        return {"ok": True, "verify_ms": verify_ms, "digest": digest}

    async def _resume(self, s: Session, service: tuple[str, int]) -> dict:
        """Tell the standby guest to go; run the on-resume hook (its time is part of the
        downtime, like a route's convergence)."""
        assert s.standby is not None
        out = {"resumed": True, "service": list(service)} | await s.standby.go(
            self.cfg.guest_port)
        if self.cfg.on_resume:
            hook = out["on_resume"] = await trio.to_thread.run_sync(run_hook, self.cfg.on_resume)
            if hook["rc"] != 0:  # unreachable here: no ACK, the source keeps its guest
                raise P.ProtocolError(f"on-resume hook failed ({hook['rc']}): "
                                      f"{hook['stderr'][-200:]}")
        s.resumed = True
        return out


async def run_destination(cfg: DestinationConfig, once: bool = True) -> list[dict]:
    return await Destination(cfg).serve(once=once)

"""TLS 1.3 with mutual authentication and a one-time token: the encrypted migration transport.

Modes, as vSphere's encrypted vMotion:

- ``disabled``: plain TCP; a destination refuses TLS clients (they are not migration peers).
- ``opportunistic``: encrypt when both ends can (both have credentials and the destination
  speaks TLS), else plain TCP. A destination in this mode accepts either on the same port (it
  peeks at the first byte: 0x16 starts a TLS handshake, ``LM`` a plain migration frame). A
  source falls back to plain TCP only when the destination does not speak TLS at all; a
  destination that speaks TLS but fails authentication is refused, never downgraded.
- ``required``: encrypted and authenticated, or refused (by either end).

Authentication: both certificates must chain to this migration's ephemeral CA (see
``agents.security.credentials``), the destination's must name the expected identity (the name
from the service locator, not the address connected to: through a NAT gateway they differ). Then the
destination sends a fresh nonce and the source answers with an HMAC of it under the one-time
token, bound to this TLS channel (RFC 9266 tls-exporter). The first (control) stream burns
the token and gets a session id; the data streams present the session id. A second session
with the same token, a replay, is refused. Opportunistic mode falls back to plain TCP only
when the destination answers the ClientHello with a plain migration frame; a reset, a
timeout or junk during the handshake fails the migration instead.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import re
import secrets
import socket
import ssl
from collections.abc import Callable

import trio

from agents.security.credentials import CredentialError, Material, context
from agents.security.exporter import ExporterUnavailable, tls_exporter
from agents.security.modes import MODES
from agents.wire import protocol as P
from agents.wire.transport import FramedStream, TcpTransport

TLS_NAME = "tls1.3"


class AuthenticationFailed(P.ProtocolError):
    """The peer did not prove it belongs to this migration (or we were refused)."""


class NotTls(ConnectionError):
    """The peer answered a TLS handshake with a plain migration frame: it does not speak TLS
    (the one case in which opportunistic encryption falls back to plain TCP)."""


class _FirstBytes(trio.abc.Stream):
    """A stream passed through, keeping the first bytes the peer sent (to tell a plain
    migration peer's answer from a reset, a timeout or junk)."""

    def __init__(self, inner: trio.abc.Stream) -> None:
        self.inner, self.first = inner, b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self.inner.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self.inner.wait_send_all_might_not_block()

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        data = await self.inner.receive_some(max_bytes)
        if len(self.first) < P.HEADER.size:
            self.first += bytes(data[: P.HEADER.size - len(self.first)])
        return data

    async def aclose(self) -> None:
        await self.inner.aclose()


def _binding(obj: trio.SSLStream) -> bytes:
    """Channel binding: RFC 9266 tls-exporter (TLS 1.3 has no tls-unique); a connection
    whose binding cannot be computed fails authentication, it is never bound to nothing."""
    try:
        return tls_exporter(obj._ssl_object)
    except ExporterUnavailable as exc:
        raise AuthenticationFailed(f"no channel binding: {exc}") from None


def auth_mac(token: bytes, role: str, nonce: bytes, session: str, binding: bytes) -> str:
    msg = b"|".join([b"agents-auth-v1", role.encode(), nonce, session.encode(), binding])
    return hmac.new(token, msg, hashlib.sha256).hexdigest()


def _reason(exc: BaseException) -> str:
    if isinstance(exc, ssl.SSLCertVerificationError):
        return exc.verify_message or str(exc)
    if isinstance(exc, ssl.SSLError):
        return exc.reason or str(exc)
    return str(exc) or type(exc).__name__


def _cause(exc: BaseException) -> BaseException:
    """trio wraps transport failures in BrokenResourceError; the ssl error is the cause."""
    while isinstance(exc, trio.BrokenResourceError) and exc.__cause__ is not None:
        exc = exc.__cause__
    return exc


class TlsTransport(TcpTransport):
    """The source side. ``mode`` decides per migration at the first (control) connection;
    every later connection of this transport (the data streams) uses the same decision."""

    def __init__(self, mode: str = "opportunistic", material: Material | None = None,
                 identity: str | None = None, handshake_timeout: float = 10.0,
                 **tcp: object) -> None:
        if mode not in MODES:
            raise ValueError(f"encryption mode must be one of {MODES}, not {mode!r}")
        if mode == "required" and material is None:
            raise CredentialError("--encryption required needs credentials "
                                  "(--credentials DIR or --locator FILE)")
        if material is not None and mode != "disabled" and not identity:
            raise CredentialError("the destination's expected identity is unknown "
                                  "(locator 'identity' or meta.json in the credentials)")
        super().__init__(**tcp)  # type: ignore[arg-type]
        self.mode, self.material, self.identity = mode, material, identity
        self.handshake_timeout = handshake_timeout
        self.ctx = context(material, server=False) if material and mode != "disabled" else None
        self.decided: str | None = None if self.ctx else "tcp"
        self.session = ""
        self.cipher: str | None = None

    @property
    def name(self) -> str:  # type: ignore[override]
        return TLS_NAME if self.decided == "tls" else "tcp"

    @property
    def encrypted(self) -> bool:  # type: ignore[override]
        return self.decided == "tls"

    async def connect(self, host: str, port: int) -> trio.abc.Stream:
        if self.decided == "tcp":
            return await super().connect(host, port)
        raw = await super().connect(host, port)
        try:
            stream = await self._secure(raw)
        except NotTls as exc:
            await raw.aclose()
            if self.mode == "opportunistic" and self.decided is None:
                self.decided = "tcp"  # the destination does not speak TLS: plain, as asked
                return await super().connect(host, port)
            raise AuthenticationFailed(f"encryption required, but {host}:{port} does not "
                                       f"speak TLS ({exc})") from None
        except BaseException:
            await raw.aclose()
            raise
        self.decided = "tls"
        return stream

    async def _secure(self, raw: trio.SocketStream) -> trio.SSLStream:
        assert self.ctx is not None and self.material is not None
        seen = _FirstBytes(raw)
        tls = trio.SSLStream(seen, self.ctx, server_hostname=self.identity)
        role = "data" if self.session else "control"
        try:
            with trio.fail_after(self.handshake_timeout):
                await tls.do_handshake()
        except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
            cause = _cause(exc)
            if isinstance(cause, ssl.SSLCertVerificationError):
                raise AuthenticationFailed(f"destination failed authentication as "
                                           f"{self.identity!r}: {_reason(cause)}") from None
            if seen.first.startswith(P.MAGIC):  # a plain migration frame came back
                raise NotTls(_reason(cause)) from None
            # a reset, an early close, junk: not a definite "no TLS here", never a downgrade
            raise ConnectionError(f"TLS handshake with {self.identity} failed: "
                                  f"{_reason(cause)}") from None
        except trio.TooSlowError:
            raise ConnectionError(f"TLS handshake with {self.identity} timed out") from None
        try:
            with trio.fail_after(self.handshake_timeout):
                fs = FramedStream(tls, self.handshake_timeout)
                ftype, payload = await fs.receive("the destination's challenge")
                if ftype == P.FrameType.ERROR:
                    raise AuthenticationFailed("destination refused: "
                                               f"{P.decode_json(ftype, payload).get('error')}")
                if ftype != P.FrameType.PING:
                    raise P.ProtocolError(f"expected the auth challenge, got {ftype.name}")
                nonce = bytes.fromhex(str(P.decode_json(ftype, payload)["challenge"]))
                mac = auth_mac(self.material.token, role, nonce, self.session,
                               _binding(tls))
                await fs.send(P.encode_json(P.FrameType.PONG, {
                    "role": role, "mac": mac, "session": self.session}))
                ftype, payload = await fs.receive("the destination's verdict")
                reply = P.decode_json(ftype, payload)
                if ftype == P.FrameType.ERROR:
                    raise AuthenticationFailed(f"destination refused: {reply.get('error')}")
                if ftype != P.FrameType.PONG or fs._buf:
                    raise P.ProtocolError("unexpected reply to authentication")
        except trio.TooSlowError:
            raise ConnectionError(f"authentication with {self.identity} timed out") from None
        except (trio.BrokenResourceError, ssl.SSLError, ConnectionError) as exc:
            cause = _cause(exc)
            alert = re.search(r"ALERT_[A-Z_]+", str(cause)) or re.search(
                r"ALERT_[A-Z_]+", getattr(cause, "reason", None) or "")
            if alert:  # the destination's verdict on our certificate, as a TLS alert
                raise AuthenticationFailed(f"destination refused this source's credentials: "
                                           f"{alert.group(0)}") from None
            raise ConnectionError(f"TLS with {self.identity}: {_reason(cause)}") from None
        if role == "control":
            self.session = str(reply.get("session", ""))
            self.cipher = tls.cipher()[0] if tls.cipher() else None
        return tls


class TlsServerTransport(TcpTransport):
    """The destination side: accepts TLS and/or plain TCP by ``mode``, authenticates TLS
    sources, keeps the one-time token's state."""

    def __init__(self, mode: str = "opportunistic", material: Material | None = None,
                 handshake_timeout: float = 10.0) -> None:
        if mode not in MODES:
            raise ValueError(f"encryption mode must be one of {MODES}, not {mode!r}")
        if mode == "required" and material is None:
            raise CredentialError("--encryption required needs --credentials DIR")
        super().__init__()
        self.mode, self.material = mode, material
        self.handshake_timeout = handshake_timeout
        self.ctx = context(material, server=True) if material and mode != "disabled" else None
        self.token_used = False
        self.session: str | None = None
        self.on_event: Callable[[dict], None] | None = None

    @property
    def name(self) -> str:  # type: ignore[override]
        return TLS_NAME if self.ctx else "tcp"

    @property
    def encrypted(self) -> bool:  # type: ignore[override]
        return self.ctx is not None

    async def wrap_accepted(self, stream: trio.SocketStream) -> trio.abc.Stream:
        peer = _peer(stream)
        try:
            with trio.fail_after(self.handshake_timeout):
                first = await stream.socket.recv(1, socket.MSG_PEEK)
        except trio.TooSlowError:
            raise ConnectionError(f"{peer} sent nothing for {self.handshake_timeout} s") \
                from None
        if not first:
            raise ConnectionError(f"{peer} closed the connection before its first frame")
        if first != b"\x16":  # not a TLS handshake: a plain migration peer (or junk)
            if self.mode == "required" and await _is_resolve(stream):
                return stream  # a RESOLVE: it names a migration, it cannot make one commit
            if self.mode == "required":
                msg = (f"refused unencrypted source {peer}: this destination requires an "
                       f"encrypted, authenticated migration")
                with contextlib.suppress(Exception), trio.move_on_after(1):
                    await stream.send_all(P.encode_json(P.FrameType.ERROR, {"error": msg}))
                raise AuthenticationFailed(msg)
            return stream
        if self.ctx is None:  # answer as a plain destination would: not TLS, an ERROR frame
            msg = (f"refused TLS from {peer}: encryption is disabled here (or this "
                   f"destination has no credentials)")
            with contextlib.suppress(Exception), trio.move_on_after(0.2):
                await stream.receive_some(1 << 16)  # drain the ClientHello: no RST on close
            with contextlib.suppress(Exception), trio.move_on_after(1):
                await stream.send_all(P.encode_json(P.FrameType.ERROR, {"error": msg}))
            raise P.ProtocolError(msg)
        return await self._secure(stream, peer)

    async def _secure(self, raw: trio.SocketStream, peer: str) -> trio.SSLStream:
        assert self.ctx is not None and self.material is not None
        tls = trio.SSLStream(raw, self.ctx, server_side=True)
        try:
            with trio.fail_after(self.handshake_timeout):
                await tls.do_handshake()
        except trio.TooSlowError:
            raise ConnectionError(f"TLS handshake with {peer} timed out") from None
        except (trio.BrokenResourceError, ssl.SSLError, OSError) as exc:
            # trio drops the alert OpenSSL queued: send it, so the source learns why
            with contextlib.suppress(Exception), trio.move_on_after(1):
                alert = tls._outgoing.read()
                if alert:
                    await raw.send_all(alert)
            await raw.aclose()
            cause = _cause(exc)
            why = _reason(cause)
            if isinstance(cause, ssl.SSLEOFError | ConnectionError) or "EOF" in why:
                why = "the source ended the handshake (it did not accept this destination's " \
                      "certificate or identity)"
            raise AuthenticationFailed(f"refused source {peer}: TLS authentication failed: "
                                       f"{why}") from None
        fs = FramedStream(tls, self.handshake_timeout)
        nonce = secrets.token_bytes(32)
        try:
            with trio.fail_after(self.handshake_timeout):
                await fs.send(P.encode_json(P.FrameType.PING, {"challenge": nonce.hex()}))
                ftype, payload = await fs.receive("the source's authentication")
                if ftype != P.FrameType.PONG or fs._buf:
                    raise P.ProtocolError(f"expected authentication, got {ftype.name}")
                answer = P.decode_json(ftype, payload)
                reply = self._check(answer, nonce, _binding(tls), peer)
                await fs.send(P.encode_json(P.FrameType.PONG, reply))
        except AuthenticationFailed as exc:
            with contextlib.suppress(Exception), trio.move_on_after(1):
                await fs.send(P.encode_json(P.FrameType.ERROR, {"error": str(exc)}))
            await fs.aclose()
            raise
        except trio.TooSlowError:
            raise ConnectionError(f"{peer} did not authenticate within "
                                  f"{self.handshake_timeout} s") from None
        except trio.BrokenResourceError as exc:
            raise ConnectionError(f"{peer}: {_reason(_cause(exc))}") from None
        return tls

    def _check(self, answer: dict, nonce: bytes, binding: bytes, peer: str) -> dict:
        """Check the token MAC; the control stream burns the token, data streams need the
        session it opened."""
        assert self.material is not None
        role, session = answer.get("role"), str(answer.get("session", ""))
        if role not in ("control", "data"):
            raise AuthenticationFailed(f"refused source {peer}: bad authentication role")
        want = auth_mac(self.material.token, role, nonce, session, binding)
        if not hmac.compare_digest(want, str(answer.get("mac", ""))):
            raise AuthenticationFailed(f"refused source {peer}: wrong migration token")
        if role == "control":
            if self.token_used:
                raise AuthenticationFailed(f"refused source {peer}: this migration's one-time "
                                           f"token was already used (replayed session)")
            self.token_used = True
            self.session = secrets.token_hex(16)
            return {"session": self.session}
        if self.session is None or not hmac.compare_digest(session, self.session):
            raise AuthenticationFailed(f"refused data stream from {peer}: no such session")
        return {"session": self.session}


async def _is_resolve(stream: trio.SocketStream) -> bool:
    """The plain frame waiting is a RESOLVE (peeked, not consumed)."""
    with trio.move_on_after(1):
        while True:
            head = await stream.socket.recv(P.HEADER.size, socket.MSG_PEEK)
            if len(head) >= 4 or not head:
                break
            await trio.sleep(0.01)
        return head[:2] == P.MAGIC and len(head) >= 4 and head[3] == P.FrameType.RESOLVE
    return False


def _peer(stream: trio.SocketStream) -> str:
    with contextlib.suppress(OSError):
        host, port = stream.socket.getpeername()[:2]
        return f"{host}:{port}"
    return "peer"

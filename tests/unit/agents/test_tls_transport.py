"""Credentials, locator and the TLS transport (in-process, over loopback)."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import stat

import pytest
import trio
from cryptography import x509

from agents.guest.markers import find, marker, plant
from agents.security.credentials import CredentialError, Material, load, make_credentials
from agents.security.locator import LocatorError, load_locator
from agents.security.tls import AuthenticationFailed, TlsServerTransport, TlsTransport
from agents.wire import protocol as P
from agents.wire.transport import FramedStream

ID = "dst.test"


@pytest.fixture
def creds(tmp_path):
    return make_credentials(tmp_path / "a", ID, ["127.0.0.1"], valid_s=300)


@pytest.fixture
def other(tmp_path):
    return make_credentials(tmp_path / "b", ID, ["127.0.0.1"], valid_s=300)


def test_credentials_files_modes_and_certificates(creds):
    assert stat.S_IMODE(creds.stat().st_mode) == 0o700
    for name in ("destination.key", "source.key", "token"):
        assert stat.S_IMODE((creds / name).stat().st_mode) == 0o600, name
    assert not list(creds.glob("ca.key"))  # the CA can sign nothing more
    dcert = x509.load_pem_x509_certificate((creds / "destination.pem").read_bytes())
    san = dcert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == [ID]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["127.0.0.1"]
    life = dcert.not_valid_after - dcert.not_valid_before
    assert life <= dt.timedelta(minutes=6)
    assert len(load(creds, "source").token) == 32
    assert json.loads((creds / "meta.json").read_text())["identity"] == ID


def test_locator_toml_json_inline_and_errors(creds, tmp_path):
    t = tmp_path / "loc.toml"
    t.write_text(f'service = "10.0.0.1:7000"\nidentity = "{ID}"\ncredentials = "a"\n'
                 'encryption = "required"\n')
    loc = load_locator(t)
    assert (loc.host, loc.port, loc.identity, loc.encryption) == ("10.0.0.1", 7000, ID,
                                                                  "required")
    assert loc.material == load(creds, "source")
    m = load(creds, "source")
    j = tmp_path / "loc.json"
    j.write_text(json.dumps({"service": "[::1]:7001", "pem": {
        "ca": m.ca_pem, "cert": m.cert_pem, "key": m.key_pem, "token": m.token.hex()}}))
    loc = load_locator(j)
    assert (loc.host, loc.port, loc.material, loc.identity) == ("::1", 7001, m, None)
    j.write_text(json.dumps({"service": "nohost"}))
    with pytest.raises(LocatorError, match="not host:port"):
        load_locator(j)
    j.write_text(json.dumps({"service": "h:1", "encryption": "maybe"}))
    with pytest.raises(LocatorError, match="encryption must be"):
        load_locator(j)
    j.write_text(json.dumps({"service": "h:1", "credentials": "missing"}))
    with pytest.raises(CredentialError, match="credentials for the source"):
        load_locator(j)


def test_markers_round_trip():
    arena = bytearray(64 * 4096)
    pages = plant(arena, 10, 4096)
    assert len(set(pages)) == 10 and 0 not in pages
    assert find(arena) == set(range(10))
    assert find(bytes(arena).replace(marker(3), bytes(48))) == set(range(10)) - {3}


async def _pair(server: TlsServerTransport, clients: list[TlsTransport],
                payload: bytes = b"") -> tuple[list, list]:
    """Each client connects once (in order); returns (client outcomes, server outcomes)."""
    lst = (await server.listen("127.0.0.1", 0))[0]
    port = lst.socket.getsockname()[1]
    cres: list = []
    sres: list = []
    async with trio.open_nursery() as n:
        async def serve():
            while True:
                raw = await lst.accept()
                try:
                    fs = FramedStream(await server.wrap_accepted(raw), 5)
                    ftype, data = await fs.receive()
                    sres.append(bytes(data))
                    await fs.send(P.encode_json(P.FrameType.PONG, {"ok": True}))
                except Exception as exc:  # noqa: BLE001 - recorded for the assertions
                    sres.append(exc)

        n.start_soon(serve)
        for cli in clients:
            try:
                fs = FramedStream(await cli.connect("127.0.0.1", port), 5)
                await fs.send(P.encode_header(P.FrameType.FILLER, len(payload)) + payload)
                ftype, _ = await fs.receive()
                cres.append((ftype, cli.name, cli.cipher))
            except Exception as exc:  # noqa: BLE001
                cres.append(exc)
            await trio.sleep(0.05)
        n.cancel_scope.cancel()
    return cres, sres


def run(server, clients, payload=b""):
    return trio.run(_pair, server, clients, payload)


def test_mutual_tls_carries_frames_and_names_its_cipher(creds):
    cli = TlsTransport("required", load(creds, "source"), ID)
    c, s = run(TlsServerTransport("required", load(creds, "destination")), [cli], b"x" * 70000)
    assert c == [(P.FrameType.PONG, "tls1.3", c[0][2])] and c[0][2].startswith("TLS_AES_")
    assert s == [b"x" * 70000]
    assert cli.encrypted and cli.session


def test_source_of_another_migration_is_refused_on_both_sides(creds, other):
    # trusts this destination, but presents a certificate from another migration's CA
    mine, theirs = load(creds, "source"), load(other, "source")
    mixed = Material(mine.ca_pem, theirs.cert_pem, theirs.key_pem, mine.token)
    c, s = run(TlsServerTransport("required", load(creds, "destination")),
               [TlsTransport("required", mixed, ID)])
    assert isinstance(c[0], AuthenticationFailed)
    assert "refused this source's credentials" in str(c[0])
    assert isinstance(s[0], AuthenticationFailed) and "TLS authentication failed" in str(s[0])


def test_destination_of_another_migration_or_name_is_refused(creds, other):
    c, s = run(TlsServerTransport("required", load(other, "destination")),
               [TlsTransport("required", load(creds, "source"), ID),
                TlsTransport("required", load(other, "source"), "impostor.test")])
    assert "destination failed authentication as 'dst.test'" in str(c[0])
    assert "Hostname mismatch" in str(c[1])
    assert all("did not accept this destination's certificate" in str(e) for e in s)


def test_wrong_token_and_replayed_session_are_refused(creds):
    good = load(creds, "source")
    forged = Material(good.ca_pem, good.cert_pem, good.key_pem, bytes(32))
    server = TlsServerTransport("required", load(creds, "destination"))
    first = TlsTransport("required", good, ID)
    replay = TlsTransport("required", good, ID)
    c, s = run(server, [TlsTransport("required", forged, ID), first, replay])
    assert "wrong migration token" in str(c[0]) and "wrong migration token" in str(s[0])
    assert c[1][0] == P.FrameType.PONG
    assert isinstance(c[2], AuthenticationFailed)
    assert "already used (replayed session)" in str(c[2])


def test_data_streams_need_the_session(creds):
    server = TlsServerTransport("required", load(creds, "destination"))
    cli = TlsTransport("required", load(creds, "source"), ID)
    thief = TlsTransport("required", load(creds, "source"), ID)
    thief.session = "0" * 32  # claims to be a data stream of some session
    c, s = run(server, [cli, cli, thief])
    assert c[0][0] == c[1][0] == P.FrameType.PONG
    assert "no such session" in str(c[2])


def test_expired_credentials_are_refused(tmp_path):
    old = make_credentials(tmp_path / "old", ID, valid_s=-10)
    c, s = run(TlsServerTransport("required", load(old, "destination")),
               [TlsTransport("required", load(old, "source"), ID)])
    assert "certificate has expired" in str(c[0])


def test_modes(creds):
    dmat, smat = load(creds, "destination"), load(creds, "source")
    # opportunistic source, destination without encryption: falls back to plain TCP
    opp = TlsTransport("opportunistic", smat, ID)
    c, s = run(TlsServerTransport("disabled"), [opp])
    assert c[1:] == [] and c[0][1] == "tcp" and not opp.encrypted
    assert "encryption is disabled" in str(s[0])  # the TLS attempt, then plain works
    # required source, same destination: refused, never downgraded
    c, _ = run(TlsServerTransport("disabled"), [TlsTransport("required", smat, ID)])
    assert "does not speak TLS" in str(c[0])
    # required destination, plaintext source: refused with the reason on both sides
    c, s = run(TlsServerTransport("required", dmat), [TlsTransport("disabled", smat, ID)])
    assert c[0][0] == P.FrameType.ERROR
    assert "requires an encrypted, authenticated migration" in str(s[0])
    # opportunistic on both ends with credentials: encrypted; without: plain
    c, _ = run(TlsServerTransport("opportunistic", dmat),
               [TlsTransport("opportunistic", smat, ID), TlsTransport("opportunistic")])
    assert c[0][1] == "tls1.3" and c[1][1] == "tcp"
    with pytest.raises(CredentialError, match="needs credentials"):
        TlsTransport("required")


def _handshake(cctx, sctx):
    """An in-memory TLS 1.3 handshake: (client, server) SSLObjects."""
    import ssl

    cin, cout, sin, sout = (ssl.MemoryBIO() for _ in range(4))
    cli = cctx.wrap_bio(cin, cout, server_hostname=ID)
    srv = sctx.wrap_bio(sin, sout, server_side=True)
    for _ in range(10):
        for obj in (cli, srv):
            with contextlib.suppress(ssl.SSLWantReadError):
                obj.do_handshake()
        sin.write(cout.read())
        cin.write(sout.read())
    return cli, srv


def test_channel_binding_is_rfc9266_tls_exporter(creds):
    from agents.security.credentials import context
    from agents.security.exporter import tls_exporter

    cctx = context(load(creds, "source"), server=False)
    sctx = context(load(creds, "destination"), server=True)
    cli, srv = _handshake(cctx, sctx)
    assert cli.version() == "TLSv1.3"
    a, b = tls_exporter(cli), tls_exporter(srv)
    assert a == b and len(a) == 32  # the same on both ends of one connection
    cli2, srv2 = _handshake(cctx, sctx)
    assert tls_exporter(cli2) == tls_exporter(srv2) != a  # and another on the next


def test_opportunistic_does_not_fall_back_after_a_reset(creds):
    async def main():
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]

        async def reset_all():
            while True:
                raw = await listeners[0].accept()
                await raw.receive_some(1)  # the ClientHello's first bytes, then a close
                await raw.aclose()

        opp = TlsTransport("opportunistic", load(creds, "source"), ID)
        async with trio.open_nursery() as n:
            n.start_soon(reset_all)
            with pytest.raises(ConnectionError, match="handshake") as info:
                await opp.connect("127.0.0.1", port)
            n.cancel_scope.cancel()
        assert not isinstance(info.value, AuthenticationFailed) and opp.decided is None
    trio.run(main)


class _Recording(trio.abc.Stream):
    """A stream that only records what it was given to send (as a TLS stream is: no socket)."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []

    async def send_all(self, data) -> None:
        self.writes.append(bytes(data))

    async def wait_send_all_might_not_block(self) -> None:
        pass

    async def receive_some(self, max_bytes=None) -> bytes:
        return b""

    async def aclose(self) -> None:
        pass


def test_small_parts_go_over_tls_in_few_writes():
    # a dirty set's batch: 850 runs of one page; each write to TLS is its own records and
    # send (137-178 ms for these 3.5 MB over loopback, 19-26 ms joined)
    from agents.wire.transport import COALESCE

    page = bytes(range(256)) * 16
    parts = [b"head", *[memoryview(page)] * 850]
    big = bytes(COALESCE)
    rec = _Recording()
    fs = FramedStream(rec, 5)
    trio.run(fs.send_parts, [*parts, big, b"tail"])
    assert b"".join(rec.writes) == b"".join([*parts, big, b"tail"])
    assert len(rec.writes) <= 3 + len(parts) * len(page) // COALESCE, len(rec.writes)
    assert big in rec.writes  # a large part goes as it is, not copied into another
    assert fs.bytes_sent == sum(map(len, parts)) + len(big) + 4

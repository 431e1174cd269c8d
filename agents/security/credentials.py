"""Per-migration credentials: an ephemeral CA, a destination and a source certificate, a token.

The management plane (here: whoever runs ``python -m agents credentials``) makes one set per
migration and hands it to both agents, as vCenter hands a migration spec to both hosts. The
CA's private key is never written: once the two leaf certificates are signed it is dropped,
so nothing can issue a third. Keys are ECDSA P-256 (small handshakes), certificates are valid
for minutes, private keys and the token are written with mode 0600.

Files in the directory: ``ca.pem``, ``destination.pem``/``destination.key`` (server, with the
service's DNS name and IP addresses as SANs), ``source.pem``/``source.key`` (client),
``token`` (256-bit one-time secret, hex) and ``meta.json`` (identity, expiry).
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import os
import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

FILES = ("ca.pem", "destination.pem", "destination.key", "source.pem", "source.key", "token")


class CredentialError(ValueError):
    """Credentials missing, unreadable or inconsistent; the message names the file."""


@dataclass(frozen=True)
class Material:
    """PEM text an agent needs: the CA to trust, its own certificate and key, the token."""

    ca_pem: str
    cert_pem: str
    key_pem: str
    token: bytes

    def fingerprint(self) -> str:
        cert = x509.load_pem_x509_certificate(self.cert_pem.encode())
        return cert.fingerprint(hashes.SHA256()).hex()


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "migration-testbed"),
                      x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _leaf(ca_key, ca_name: x509.Name, cn: str, sans: list[x509.GeneralName], server: bool,
          not_before: dt.datetime, not_after: dt.datetime
          ) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = _key()
    usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    b = (x509.CertificateBuilder().subject_name(_name(cn)).issuer_name(ca_name)
         .public_key(key.public_key()).serial_number(x509.random_serial_number())
         .not_valid_before(not_before).not_valid_after(not_after)
         .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
         .add_extension(x509.KeyUsage(True, False, False, False, False, False, False, False,
                                      False), critical=True)
         .add_extension(x509.ExtendedKeyUsage([usage]), critical=False))
    if sans:
        b = b.add_extension(x509.SubjectAlternativeName(sans), critical=False)
    return b.sign(ca_key, hashes.SHA256()), key


def make_credentials(out: str | Path, identity: str, ips: list[str] | None = None,
                     valid_s: float = 3600.0, source_name: str = "migration-source") -> Path:
    """Write a fresh credential set for one migration to ``out`` (created 0700)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(out, 0o700)
    now = dt.datetime.now(dt.UTC)
    nb, na = now - dt.timedelta(minutes=1), now + dt.timedelta(seconds=valid_s)
    ca_key = _key()
    ca_name = _name(f"migration CA {secrets.token_hex(4)}")
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name)
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(nb).not_valid_after(na)
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
          .add_extension(x509.KeyUsage(False, False, False, False, False, True, True, False,
                                       False), critical=True)
          .sign(ca_key, hashes.SHA256()))
    sans: list[x509.GeneralName] = [x509.DNSName(identity)]
    sans += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in ips or ()]
    dcert, dkey = _leaf(ca_key, ca_name, identity, sans, True, nb, na)
    scert, skey = _leaf(ca_key, ca_name, source_name, [], False, nb, na)
    pem = serialization.Encoding.PEM
    _write(out / "ca.pem", ca.public_bytes(pem), 0o644)
    _write(out / "destination.pem", dcert.public_bytes(pem), 0o644)
    _write(out / "destination.key", _key_pem(dkey), 0o600)
    _write(out / "source.pem", scert.public_bytes(pem), 0o644)
    _write(out / "source.key", _key_pem(skey), 0o600)
    _write(out / "token", secrets.token_hex(32).encode() + b"\n", 0o600)
    meta = {"identity": identity, "ips": list(ips or ()), "source": source_name,
            "not_after": na.isoformat(), "ca_sha256": ca.fingerprint(hashes.SHA256()).hex()}
    _write(out / "meta.json", json.dumps(meta, indent=1).encode() + b"\n", 0o644)
    return out


def _write(path: Path, data: bytes, mode: int) -> None:
    """Create ``path`` with ``mode`` from the start (a key is never world-readable)."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def parse_token(text: str) -> bytes:
    try:
        token = bytes.fromhex(text.strip())
    except ValueError:
        raise CredentialError("token is not hex") from None
    if len(token) != 32:
        raise CredentialError(f"token must be 256 bits, got {len(token) * 8}")
    return token


def load(directory: str | Path, role: str) -> Material:
    """The material ``role`` ("source" or "destination") needs from a credentials directory."""
    d = Path(directory)
    try:
        return Material((d / "ca.pem").read_text(), (d / f"{role}.pem").read_text(),
                        (d / f"{role}.key").read_text(), parse_token((d / "token").read_text()))
    except OSError as exc:
        raise CredentialError(f"credentials for the {role}: {exc}") from None


def context(material: Material, server: bool) -> ssl.SSLContext:
    """A TLS 1.3-only context that trusts only this migration's CA and presents our cert.

    The server demands a client certificate; no session tickets (nothing to resume or
    replay)."""
    import tempfile

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER if server else ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ctx.maximum_version = ssl.TLSVersion.TLSv1_3
    try:
        ctx.load_verify_locations(cadata=material.ca_pem)
        # the ssl module loads a key pair only from files: a private temporary directory
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp, "c.pem"), Path(tmp, "c.key")
            _write(cert, material.cert_pem.encode(), 0o600)
            _write(key, material.key_pem.encode(), 0o600)
            ctx.load_cert_chain(cert, key)
    except (ssl.SSLError, ValueError) as exc:
        raise CredentialError(f"bad certificate or key: {exc}") from None
    ctx.verify_mode = ssl.CERT_REQUIRED
    if server:
        ctx.num_tickets = 0
        ctx.options |= ssl.OP_NO_TICKET
    else:
        ctx.check_hostname = True
    return ctx

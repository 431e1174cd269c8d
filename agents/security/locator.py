"""The service locator (the cross-vCenter analogue) and the agents' security options.

A locator is a small JSON or TOML file the management plane hands the source::

    service = "203.0.113.1:7000"           # where to connect (e.g. a gateway's published port)
    identity = "c-h1.migration.cloud"      # whom to expect there (the certificate's name)
    encryption = "required"                # optional: disabled | opportunistic | required
    credentials = "/run/migration-42"      # a directory from `python -m agents credentials`
    # or inline, instead of `credentials`:
    [pem]
    ca = "-----BEGIN CERTIFICATE-----..."
    cert = "..."
    key = "..."
    token = "64 hex digits"

Relative ``credentials`` paths are taken from the locator's own directory.
"""

from __future__ import annotations

import argparse
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from agents.security.modes import MODES

if TYPE_CHECKING:  # cryptography and trio load only when security options are used
    from agents.security.credentials import Material
    from agents.security.tls import TlsServerTransport, TlsTransport


class LocatorError(ValueError):
    """The locator file is missing, unparsable or incomplete; the message names it."""


@dataclass(frozen=True)
class Locator:
    host: str
    port: int
    identity: str | None
    material: Material | None
    encryption: str | None = None


def _identity_from(directory: Path) -> str | None:
    try:
        return json.loads((directory / "meta.json").read_text()).get("identity")
    except (OSError, ValueError):
        return None


def load_locator(path: str | Path) -> Locator:
    """Parse a locator (TOML if it ends in .toml, else JSON)."""
    from agents.security.credentials import Material, load, parse_token

    path = Path(path)
    try:
        text = path.read_text()
        doc = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (OSError, ValueError) as exc:
        raise LocatorError(f"locator {path}: {exc}") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("service"), str):
        raise LocatorError(f"locator {path}: needs 'service' = \"host:port\"")
    host, _, port = doc["service"].rpartition(":")
    if not host or not port.isdigit():
        raise LocatorError(f"locator {path}: service {doc['service']!r} is not host:port")
    mode = doc.get("encryption")
    if mode is not None and mode not in MODES:
        raise LocatorError(f"locator {path}: encryption must be one of {MODES}")
    identity = doc.get("identity")
    material = None
    if "credentials" in doc:
        cdir = path.parent / str(doc["credentials"])
        material = load(cdir, "source")
        identity = identity or _identity_from(cdir)
    elif "pem" in doc:
        pem = doc["pem"]
        try:
            material = Material(pem["ca"], pem["cert"], pem["key"], parse_token(pem["token"]))
        except (KeyError, TypeError) as exc:
            raise LocatorError(f"locator {path}: [pem] needs ca, cert, key, token ({exc})") \
                from None
    return Locator(host.strip("[]"), int(port), identity, material, mode)


# --- command-line glue -------------------------------------------------------------------
def add_source_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encryption", choices=MODES, default=None,
                   help="default: the locator's, else opportunistic")
    p.add_argument("--credentials", metavar="DIR", help="this migration's credentials")
    p.add_argument("--locator", metavar="FILE",
                   help="JSON/TOML: destination service, identity, credentials")


def add_destination_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--encryption", choices=MODES, default="opportunistic")
    p.add_argument("--credentials", metavar="DIR", help="this migration's credentials")


def add_credentials_parser(sub: argparse._SubParsersAction) -> None:
    c = sub.add_parser("credentials", help="make one migration's ephemeral CA, certs, token")
    c.add_argument("--out", required=True, metavar="DIR")
    c.add_argument("--identity", required=True, help="the destination service's DNS name")
    c.add_argument("--ip", action="append", default=[], help="the destination's address(es)")
    c.add_argument("--valid-minutes", type=float, default=60.0)


def cmd_credentials(args: argparse.Namespace) -> int:
    from agents.security.credentials import make_credentials

    out = make_credentials(args.out, args.identity, args.ip, args.valid_minutes * 60)
    print(json.dumps({"credentials": str(out), **json.loads((out / "meta.json").read_text())}))
    return 0


def source_transport(args: argparse.Namespace) -> TlsTransport:
    """Resolve --locator/--to/--credentials/--encryption into the source's transport; sets
    ``args.to`` from the locator. Exits with a clear message on bad input."""
    from agents.security.credentials import CredentialError, load
    from agents.security.tls import TlsTransport

    try:
        loc = load_locator(args.locator) if args.locator else None
        material, identity = (loc.material, loc.identity) if loc else (None, None)
        if args.credentials:
            material = load(args.credentials, "source")
            identity = identity or _identity_from(Path(args.credentials))
        if loc is not None and args.to is None:
            args.to = (loc.host, loc.port)
        if args.to is None:
            raise SystemExit("source: --to HOST:PORT or --locator FILE is required")
        mode = args.encryption or (loc.encryption if loc else None) or "opportunistic"
        return TlsTransport(mode, material, identity, local_address=args.bind)
    except (CredentialError, LocatorError) as exc:
        raise SystemExit(f"source: {exc}") from None


def destination_transport(args: argparse.Namespace) -> TlsServerTransport:
    from agents.security.credentials import CredentialError, load
    from agents.security.tls import TlsServerTransport

    try:
        material = load(args.credentials, "destination") if args.credentials else None
        return TlsServerTransport(args.encryption, material)
    except CredentialError as exc:
        raise SystemExit(f"destination: {exc}") from None

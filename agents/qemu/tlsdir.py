"""QEMU's ``tls-creds-x509`` directory made from a per-migration credential set
(:mod:`agents.security.credentials`): each side gets only the files its endpoint loads."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from agents.security.credentials import make_credentials

from .command import Role

LAYOUT: dict[Role, dict[str, str]] = {
    "destination": {"ca-cert.pem": "ca.pem", "server-cert.pem": "destination.pem",
                    "server-key.pem": "destination.key"},
    "source": {"ca-cert.pem": "ca.pem", "client-cert.pem": "source.pem",
               "client-key.pem": "source.key"},
}


def qemu_tls_dir(credentials: Path, out: Path, role: Role) -> Path:
    """Copy ``role``'s files from an agents' credential directory into QEMU's names."""
    out.mkdir(parents=True, exist_ok=True, mode=0o700)
    for qemu_name, ours in LAYOUT[role].items():
        shutil.copyfile(credentials / ours, out / qemu_name)
        os.chmod(out / qemu_name, 0o600 if qemu_name.endswith("key.pem") else 0o644)
    return out


def make_tls_dirs(run_dir: Path, identity: str, ips: list[str]) -> dict[Role, Path]:
    """Fresh credentials for one migration (CA key dropped once signed), laid out for both
    QEMUs; the agents' originals are removed once copied."""
    creds = make_credentials(run_dir / "credentials", identity, ips, valid_s=3600.0)
    try:
        return {role: qemu_tls_dir(creds, run_dir / f"tls-{role}", role)
                for role in ("source", "destination")}
    finally:
        shutil.rmtree(creds, ignore_errors=True)

"""HOST:PORT on the agents' command lines (stdlib only: the client probe imports it too)."""

from __future__ import annotations

import argparse


def hostport(text: str) -> tuple[str, int]:
    """'10.0.0.1:7800' or '[::1]:7800' -> (host, port); an argparse error otherwise."""
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit():
        raise argparse.ArgumentTypeError(f"expected HOST:PORT, got {text!r}")
    return host.strip("[]"), int(port)

"""``key=value`` words from the command line into typed parameters."""

from __future__ import annotations

import tomllib

import click


def parse_params(pairs: tuple[str, ...]) -> dict[str, object]:
    """``key=value`` words into typed parameters (TOML literals; bare words are strings)."""
    params: dict[str, object] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r}: expected key=value", param_hint="PARAMS")
        try:
            params[key.strip()] = tomllib.loads(f"v = {value}")["v"]
        except tomllib.TOMLDecodeError:
            params[key.strip()] = value
    return params

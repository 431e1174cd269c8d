"""What a lab is made from: a topology name and parameters, a topology file, or a spec.

``resolve`` turns the user's words into a JSON-able *source* (checked by building the
network once, so bad input stops before anything touches the kernel); ``network`` builds
the same network again from it, in the supervisor.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

import topologies
from topologies import file as topofile
from topologies.model import Network


class SourceError(ValueError):
    """Unknown topology, parameter or file, or an invalid spec; the message says which."""


def resolve(what: str, params: dict[str, Any]) -> tuple[dict[str, Any], str]:
    """The source for ``what`` (a topology name, a topology file or a spec file) and the
    lab's default name."""
    path = Path(what)
    if path.suffix == ".toml" or path.exists():
        if not path.is_file():
            raise SourceError(f"{what}: no such file")
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise SourceError(f"{what}: {exc}") from None
        if "kind" in data:
            if params:
                raise SourceError(f"{what} is an experiment spec: its keys say what the "
                                  f"network is; key=value parameters ({', '.join(params)}) "
                                  "go with a topology name or file")
            source: dict[str, Any] = {"spec": str(path.resolve())}
        else:
            source = {"file": str(path.resolve()), "params": params}
    else:
        source = {"topology": what, "params": params}
    net = network(source)
    if "spec" in source:  # the lab is named after the spec, not its topology
        return source, str(data.get("name") or path.stem)
    return source, net.name.replace("_", "-")


def network(source: dict[str, Any]) -> Network:
    """Build the network of ``source`` (pure: nothing touches the kernel)."""
    try:
        if "spec" in source:
            from ..run import spec as spec_mod
            from ..run.topology import network_of

            return network_of(spec_mod.load(Path(source["spec"])))
        if "file" in source:
            return topofile.load(Path(source["file"]), source.get("params") or {})
        return topologies.build(source["topology"], **(source.get("params") or {}))
    except (topologies.TopologyError, ValueError) as exc:
        raise SourceError(str(exc)) from None


def needs(net: Network) -> tuple[str, ...]:
    """The kernel features the lab of ``net`` needs (``testbed.host.placement``)."""
    from ..run.topochoice import needs as network_needs

    return network_needs(net)

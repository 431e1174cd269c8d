"""Experiment specs (TOML) validated into a typed model before anything touches the kernel.

An error names the file, the key and what is wrong.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError


class SpecError(ValueError):
    """A spec file is unreadable or invalid; the message says where and why."""


class LinkParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    delay_ms: float = Field(25.0, ge=0, le=5000, description="one-way delay, each direction")
    bw_mbps: float | None = Field(100.0, gt=0, le=100_000)
    jitter_ms: float = Field(0.0, ge=0, le=1000)
    loss_pct: float = Field(0.0, ge=0, le=100)


class MeasureParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ping_count: int = Field(20, ge=2, le=10_000)
    iperf_seconds: float = Field(5.0, gt=0, le=110)
    iperf_streams: int = Field(1, ge=1, le=64)


class SmokeSpec(BaseModel):
    """Two hosts across one shaped link: RTT and iperf3 throughput vs the configured values."""

    model_config = ConfigDict(extra="forbid")
    name: str = "smoke"
    kind: Literal["smoke"] = "smoke"
    description: str = ""
    link: LinkParams = LinkParams()
    measure: MeasureParams = MeasureParams()

    @property
    def needs(self) -> tuple[str, ...]:
        return ("netns", "veth", "tbf", "netem") if self.link.delay_ms or \
            self.link.jitter_ms or self.link.loss_pct else ("netns", "veth", "tbf")


Spec = SmokeSpec


def load(path: Path) -> Spec:
    """Read and validate one spec file."""
    try:
        data = tomllib.loads(path.read_text())
    except OSError as exc:
        raise SpecError(f"{path}: cannot read: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML: {exc}") from None
    return parse(data, str(path))


def parse(data: dict[str, object], origin: str = "<spec>") -> Spec:
    kind = data.get("kind", "smoke")
    if kind != "smoke":
        raise SpecError(f"{origin}: key 'kind': unknown experiment kind {kind!r} "
                        "(known: 'smoke')")
    try:
        return SmokeSpec.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"key '{'.'.join(str(p) for p in err['loc'])}': {err['msg']}"
            for err in exc.errors())
        raise SpecError(f"{origin}: {problems}") from None


def default_suite() -> list[Spec]:
    """The suite `testbed run` runs with no spec."""
    return [SmokeSpec(name="smoke-50ms", description="h1 <-> h2, 25 ms each way, 100 Mbit/s")]

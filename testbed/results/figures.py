"""A migration's figures as the report's tables and the plots show them: "failed" cells and
NaN points for a failed migration, the model's prediction per migration, a saved figure.
Shared by the report, every kind's section and plots, and the side-by-side section."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from . import model
from .documents import Migration

MIB = 2**20
Mig = Migration | dict[str, Any]  # a kind's nested migration records are plain dicts


def _typed(m: Mig) -> Migration:
    return m if isinstance(m, Migration) else Migration.from_json(m)


def prediction_for(m: Mig) -> dict[str, Any] | None:
    """The model's forecast for one completed migration, beside what was measured (None if
    it failed or too little was measured); a QEMU migration by QEMU's own stop rule."""
    m = _typed(m)
    if m.raw.get("hypervisor") == "qemu":
        from . import model_qemu

        return model_qemu.prediction(m.raw)
    if not m.completed:
        return None
    inp = model.inputs_from(m.raw)
    if inp is None:
        return None
    f = model.forecast(inp)
    dev_t = model.deviation(m.migration_time_s or 0.0, f.migration_time_s)
    dev_d = model.deviation(m.downtime_ms or 0.0, f.downtime_ms)
    return {"lambda": f.ratio, "rounds": f.rounds, "migration_time_s": f.migration_time_s,
            "downtime_ms": f.downtime_ms, "deviation_time": dev_t, "deviation_downtime": dev_d,
            "rate_mbps": inp.rate_bytes_s * 8 / 1e6, "dirty_mbs": inp.dirty_bytes_s / 1e6,
            "volume_mib": inp.volume_bytes / MIB,
            "flag": model.flagged(dev_t) or model.flagged(dev_d)}


def failed(m: Mig) -> bool:
    """A migration that did not complete with its integrity verified."""
    return _typed(m).failed


def outage_never_ended(m: Mig) -> bool:
    """The guest's client lost it and never heard from it again."""
    return _typed(m).outage_resolved is False


def _figure(m: Migration, key: str) -> Any:
    return getattr(m, key) if key in Migration.__dataclass_fields__ else m.raw.get(key)


def cell(m: Mig, key: str, fmt: str = ".1f") -> str:
    """A measured figure of a migration for a table: "failed" where the migration failed."""
    m = _typed(m)
    if m.failed:
        return "failed"
    value = _figure(m, key)
    return "-" if value is None else format(value, fmt)


def value(m: Mig, key: str) -> float:
    """A measured figure of a migration for a plot: NaN (no point) where it failed."""
    m = _typed(m)
    v = _figure(m, key)
    return float("nan") if m.failed or v is None else float(v)


def fmt(x: Any, fmt: str = ".1f") -> str:
    """A value for a table: "-" for none, yes/no for booleans."""
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int) and fmt.endswith("f"):
        return str(x)
    if isinstance(x, int | float):
        return format(x, fmt)
    return str(x)


def deviation_text(x: float | None) -> str:
    """A deviation; none where the prediction is 0 (a percentage of 0 means nothing)."""
    return "pred. 0" if x is None else f"{x * 100:+.0f} %"


def client_outage(m: Mig) -> str:
    """The outage a client saw: from the client's own probe when the guest has a network
    identity, else the gap the source agent's probe heard (marked so)."""
    m = _typed(m)
    if m.outage_resolved is False:
        return "never ended"
    if m.client_outage_ms is not None:
        return f"{m.client_outage_ms:.0f}"
    if m.client_downtime_ms is not None:
        return f"{m.client_downtime_ms:.0f} (agent's probe)"
    return "-"


def machine_busy(entry: dict[str, Any]) -> str:
    """How busy the machine's CPUs were while a migration or a burst ran (``machine_cpu``,
    testbed.run.runner.note_machine_cpu), in bold where they had no idle left to speak of."""
    cpu = entry.get("machine_cpu")
    if not cpu:
        return "-"
    text = f"{math.floor(cpu['busy'] * 100)}%"  # floored: 89.7 % is not yet 90 %
    return f"**{text}**" if cpu.get("saturated") else text


def save_figure(fig: Any, path: Path) -> Path:
    """Lay out, write (PNG, 110 dpi) and close one experiment's figure."""
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

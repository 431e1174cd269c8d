"""Run experiment specs: expand sweeps and repetitions, record everything, write results.

One JSON document per spec (``<name>.json``: the spec echoed, the environment, every variant's
measurements) plus ``<name>.csv`` (one row per migration, or per variant when there is no
migration). Written after every variant, so Ctrl-C keeps the partial results.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from ..measure.cpustat import MachineCpuSampler
from ..results import documents as results
from . import environment
from .kinds import Progress, runner_for
from .spec import Common, variants

MIGRATION_COLUMNS = (
    "image_bytes", "bytes_on_wire", "rounds", "migration_time_s", "downtime_ms",
    "client_downtime_ms", "client_outage_ms", "goodput_mbps", "iperf3_mbps", "encrypted",
    "integrity_ok", "dirty_tracking", "streams", "completed", "switchover_reason",
    "hypervisor", "setup_time_ms", "dirty_sync_count", "accel",
)


def csv_rows(doc: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for v in doc["variants"]:
        base = {"experiment": doc["spec"]["name"], "repetition": v.get("repetition", 0)}
        base |= {f"sweep.{k}": val for k, val in v.get("sweep_point", {}).items()}
        migs = v.get("migrations", [])
        if not migs:
            rows.append(base | v.get("summary", {}))
        for m in migs:
            rows.append(base | {k: m.get(k) for k in ("case", *MIGRATION_COLUMNS)}
                        | {k: m.get(k) for k in m.get("row_extra", ())})
    return rows


def _span(mig: dict[str, Any]) -> tuple[float, float] | None:
    """A migration's round 0 and decision in CLOCK_MONOTONIC (``monotonic_s``), if stamped."""
    stamps = mig.get("monotonic_s") or {}
    return (stamps["round0"], stamps["decided"]) \
        if "round0" in stamps and "decided" in stamps else None


def note_machine_cpu(node: Any, sampler: MachineCpuSampler) -> None:
    """Give every migration that carries the source's stamps (``monotonic_s``: round 0 to
    the decision) ``machine_cpu``, how busy the whole machine was while it ran, and every
    burst (a dict with ``concurrency`` and ``migrations``) the same over its migrations'
    union: where the machine had no idle CPU, its figures may be this machine's."""
    if isinstance(node, list):
        for x in node:
            note_machine_cpu(x, sampler)
        return
    if not isinstance(node, dict):
        return
    span = _span(node)
    if span:
        node["machine_cpu"] = sampler.window(*span)
    migs = node.get("migrations")
    if "concurrency" in node and isinstance(migs, list):
        spans = [s for s in map(_span, migs) if s]
        if spans:
            node["machine_cpu"] = sampler.window(min(a for a, _ in spans),
                                                 max(b for _, b in spans))
    for k, x in node.items():
        if isinstance(x, list | dict) and k not in ("monotonic_s", "machine_cpu"):
            note_machine_cpu(x, sampler)


def run_spec(spec: Common, out_dir: Path, progress: Progress,
             placement: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run every variant x repetition of ``spec``; return (and write) its document.

    ``placement``: where it runs and why (``testbed.host.placement``), kept in its environment.
    """
    run_variant = runner_for(spec.kind)
    env = environment.describe() | ({"placement": placement} if placement else {})
    doc: dict[str, Any] = results.stamp({"spec": spec.model_dump(), "environment": env,
                                         "status": "running", "variants": [],
                                         "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    t0 = time.monotonic()

    def save() -> None:
        doc["duration_s"] = round(time.monotonic() - t0, 3)
        rows = csv_rows(doc)
        results.write(out_dir, spec.name, doc, rows)

    cpu = MachineCpuSampler().start()
    try:
        points = variants(spec)
        for i, (point, concrete) in enumerate(points):
            for rep in range(spec.repetitions):
                label = ", ".join(f"{k}={v}" for k, v in point.items())
                progress(f"{spec.name}: variant {i + 1}/{len(points)}"
                         f"{' (' + label + ')' if label else ''}, repetition {rep + 1}/"
                         f"{spec.repetitions}")
                v = run_variant(concrete, progress)
                note_machine_cpu(v, cpu)
                v["sweep_point"], v["repetition"] = point, rep
                doc["variants"].append(v)
                save()
        doc["status"] = "completed"
    except KeyboardInterrupt:
        doc["status"] = "interrupted"
        raise
    except Exception as exc:
        doc["status"] = f"failed: {type(exc).__name__}: {exc}"
        raise
    finally:
        cpu.stop()
        save()
    return doc

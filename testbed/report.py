"""report.md and the summary table, from the results documents alone.

Every measured migration is put next to the analytical pre-copy prediction
(``testbed.predict``); deviations above 20 % are flagged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from . import predict

MIB = 2**20


def load_docs(out_dir: Path) -> list[dict[str, Any]]:
    docs = []
    for p in sorted(out_dir.glob("*.json")):
        try:
            doc = json.loads(p.read_text())
        except ValueError:
            continue
        if isinstance(doc, dict) and "spec" in doc and "variants" in doc:
            docs.append(doc)
    return docs


def migrations(doc: dict[str, Any]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(variant, migration) pairs of a document."""
    return [(v, m) for v in doc["variants"] for m in v.get("migrations", [])]


def prediction_for(m: dict[str, Any]) -> dict[str, Any] | None:
    """The analytical model's figures for one measured migration (None if not computable)."""
    rate_mbps = m.get("iperf3_mbps") or m.get("goodput_mbps")
    rounds = m.get("rounds") or 0
    if not rate_mbps or rounds < 1 or not m.get("completed"):
        return None
    sent0 = (m.get("pages_sent_per_round") or [0])[0] * m.get("page_size", 4096)
    volume = sent0 or m.get("image_bytes", 0)
    dirty = (m.get("dirty_rate_mbs") or 0.0) * 1e6
    p = predict.precopy(volume, rate_mbps * 1e6 / 8, dirty, rounds)
    dev_t = predict.deviation(m.get("migration_time_s") or 0.0, p.migration_time_s)
    dev_d = predict.deviation(m.get("downtime_ms") or 0.0, p.downtime_ms)
    return {"lambda": p.ratio, "migration_time_s": p.migration_time_s,
            "downtime_ms": p.downtime_ms, "deviation_time": dev_t, "deviation_downtime": dev_d,
            "flag": predict.flagged(dev_t) or predict.flagged(dev_d)}


def _f(x: Any, fmt: str = ".1f") -> str:
    if x is None:
        return "-"
    if isinstance(x, bool):
        return "yes" if x else "no"
    if isinstance(x, int) and fmt.endswith("f"):
        return str(x)
    if isinstance(x, int | float):
        return format(x, fmt)
    return str(x)


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{x * 100:+.0f} %"


def client_outage(m: dict[str, Any]) -> str:
    """The outage a client saw: from the client's own probe when the guest has a network
    identity, else the gap the source agent's probe heard (marked so)."""
    if m.get("client_outage_ms") is not None:
        return f"{m['client_outage_ms']:.0f}"
    if m.get("client_downtime_ms") is not None:
        return f"{m['client_downtime_ms']:.0f} (agent's probe)"
    return "-"


def migration_table(doc: dict[str, Any]) -> list[str]:
    migs = migrations(doc)
    if not migs:
        return []
    lines = ["| case | image MiB | rounds | time s (pred.) | downtime ms (pred.) | client "
             "outage ms | goodput / iperf3 Mbit/s | encrypted | integrity | tracking | flag |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for v, m in migs:
        pred = prediction_for(m)
        point = ", ".join(f"{k}={val}" for k, val in v.get("sweep_point", {}).items())
        case = " ".join(x for x in (m.get("case", ""), point) if x)
        flag = "-" if pred is None else ("**>20 %**" if pred["flag"] else "ok")
        t_pred = f" ({pred['migration_time_s']:.1f}, {_pct(pred['deviation_time'])})" \
            if pred else ""
        d_pred = f" ({pred['downtime_ms']:.0f}, {_pct(pred['deviation_downtime'])})" \
            if pred else ""
        lines.append(
            f"| {case} | {_f((m.get('image_bytes') or 0) / MIB, '.0f')} | {_f(m.get('rounds'))}"
            f" | {_f(m.get('migration_time_s'))}{t_pred} | {_f(m.get('downtime_ms'), '.0f')}"
            f"{d_pred} | {client_outage(m)} | "
            f"{_f(m.get('goodput_mbps'))} / {_f(m.get('iperf3_mbps'))} | "
            f"{_f(m.get('encrypted'))} | {_f(m.get('integrity_ok'))} | "
            f"{m.get('dirty_tracking', '-')} | {flag} |")
    return lines


def summary_lines(doc: dict[str, Any]) -> list[str]:
    """Kind-specific headline section (each kind's module may add its own)."""
    kind = doc["spec"]["kind"]
    if kind == "smoke":
        lines = ["| configured RTT ms | RTT p50 ms | configured Mbit/s | iperf3 Mbit/s | "
                 "queue drops |", "|---|---|---|---|---|"]
        for v in doc["variants"]:
            s = v.get("summary", {})
            lines.append(f"| {_f(s.get('configured_rtt_ms'))} | {_f(s.get('rtt_p50_ms'), '.2f')}"
                         f" | {_f(s.get('configured_bw_mbps'))} | {_f(s.get('iperf3_mbps'))} | "
                         f"{_f(s.get('qdisc_drops'), 'd')} |")
        return lines
    from .experiments import report_section

    return report_section(kind, doc)


def write_report(out_dir: Path, docs: list[dict[str, Any]], plots: list[Path]) -> Path:
    lines = ["# Migration testbed report", ""]
    if docs:
        env = docs[0]["environment"]
        lines += [f"Kernel {env['kernel']} ({env['mode']}), {env['cpus']} CPUs, "
                  f"Python {env['python']}, testbed {env['versions'].get('testbed')}.", ""]
    lines += ["Every migration is shown with the analytical pre-copy prediction in brackets "
              "(lambda = D/R; T_mig = V/R (1 - lambda^(n+1)) / (1 - lambda); T_down = V "
              "lambda^n / R; V = bytes of round 0, R = iperf3 rate on the same path, D = "
              "configured dirty rate, n = rounds - 1) and its deviation; deviations above "
              "20 % are flagged.", ""]
    for doc in docs:
        spec = doc["spec"]
        lines += [f"## {spec['name']} ({spec['kind']})", "",
                  spec.get("description") or "", "",
                  f"Status: {doc['status']}, {doc.get('duration_s', 0):.0f} s, "
                  f"{len(doc['variants'])} variant run(s).", ""]
        lines += summary_lines(doc) + [""]
        table = migration_table(doc)
        if table:
            lines += ["### Migrations", ""] + table + [""]
        for p in plots:
            if p.name.startswith(spec["name"]):
                lines += [f"![{p.stem}]({p.name})", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def finish(out_dir: Path, console: Any) -> None:
    """Plots, report.md and a summary table for everything in ``out_dir``."""
    from rich.table import Table

    docs = load_docs(out_dir)
    if not docs:
        return
    from .plots import plot_all

    plots = plot_all(out_dir, docs)
    report = write_report(out_dir, docs, plots)
    table = Table(title="summary")
    for col in ("experiment", "status", "migrations", "integrity ok", "flagged vs model"):
        table.add_column(col)
    for doc in docs:
        migs = [m for _, m in migrations(doc)]
        preds = [prediction_for(m) for m in migs]
        table.add_row(doc["spec"]["name"], doc["status"], str(len(migs)),
                      f"{sum(bool(m.get('integrity_ok')) for m in migs)}/{len(migs)}",
                      str(sum(1 for p in preds if p and p["flag"])))
    console.print(table)
    console.print(f"report: {report}; plots: {len(plots)}")

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
    """The model's forecast for one completed migration, beside what was measured (None if
    it failed or too little was measured)."""
    if m.get("hypervisor") == "qemu":  # QEMU's own stop rule (testbed.predict_qemu)
        from . import predict_qemu

        return predict_qemu.prediction(m)
    if not m.get("completed"):
        return None
    inp = predict.inputs_from(m)
    if inp is None:
        return None
    f = predict.forecast(inp)
    dev_t = predict.deviation(m.get("migration_time_s") or 0.0, f.migration_time_s)
    dev_d = predict.deviation(m.get("downtime_ms") or 0.0, f.downtime_ms)
    return {"lambda": f.ratio, "rounds": f.rounds, "migration_time_s": f.migration_time_s,
            "downtime_ms": f.downtime_ms, "deviation_time": dev_t, "deviation_downtime": dev_d,
            "rate_mbps": inp.rate_bytes_s * 8 / 1e6, "dirty_mbs": inp.dirty_bytes_s / 1e6,
            "volume_mib": inp.volume_bytes / MIB,
            "flag": predict.flagged(dev_t) or predict.flagged(dev_d)}


def failed(m: dict[str, Any]) -> bool:
    """A migration that did not complete with its integrity verified."""
    return not (m.get("completed") and m.get("integrity_ok"))


def outage_never_ended(m: dict[str, Any]) -> bool:
    """The guest's client lost it and never heard from it again."""
    return (m.get("client") or {}).get("outage_resolved") is False


def cell(m: dict[str, Any], key: str, fmt: str = ".1f") -> str:
    """A measured figure of a migration for a table: "failed" where the migration failed."""
    if failed(m):
        return "failed"
    value = m.get(key)
    return "-" if value is None else format(value, fmt)


def value(m: dict[str, Any], key: str) -> float:
    """A measured figure of a migration for a plot: NaN (no point) where it failed."""
    v = m.get(key)
    return float("nan") if failed(m) or v is None else float(v)


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
    """A deviation; none where the prediction is 0 (a percentage of 0 means nothing)."""
    return "pred. 0" if x is None else f"{x * 100:+.0f} %"


def client_outage(m: dict[str, Any]) -> str:
    """The outage a client saw: from the client's own probe when the guest has a network
    identity, else the gap the source agent's probe heard (marked so)."""
    if outage_never_ended(m):
        return "never ended"
    if m.get("client_outage_ms") is not None:
        return f"{m['client_outage_ms']:.0f}"
    if m.get("client_downtime_ms") is not None:
        return f"{m['client_downtime_ms']:.0f} (agent's probe)"
    return "-"


def migration_table(doc: dict[str, Any]) -> list[str]:
    migs = migrations(doc)
    if not migs:
        return []
    lines = ["| case | image MiB | rounds (pred.) | time s (pred.) | downtime ms (pred.) | "
             "client outage ms | goodput / iperf3 Mbit/s | encrypted | integrity | tracking | "
             "flag |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for v, m in migs:
        point = ", ".join(f"{k}={val}" for k, val in v.get("sweep_point", {}).items())
        case = " ".join(x for x in (m.get("case", ""), point) if x)
        head = f"| {case} | {_f((m.get('image_bytes') or 0) / MIB, '.0f')} | "
        if failed(m):
            why = str(m.get("error") or m.get("switchover_reason") or "not verified")
            lines.append(head + f"**failed** | **failed** | **failed** | {client_outage(m)} | "
                         f"- | {_f(m.get('encrypted'))} | {_f(m.get('integrity_ok'))} | "
                         f"{m.get('dirty_tracking', '-')} | {why[:80].replace('|', '/')} |")
            continue
        pred = prediction_for(m)
        flag = "-" if pred is None else ("**>20 %**" if pred["flag"] else "ok")
        r_pred = f" ({pred['rounds']})" if pred else ""
        t_pred = f" ({pred['migration_time_s']:.1f}, {_pct(pred['deviation_time'])})" \
            if pred else ""
        d_pred = f" ({pred['downtime_ms']:.0f}, {_pct(pred['deviation_downtime'])})" \
            if pred else ""
        lines.append(
            head + f"{_f(m.get('rounds'))}{r_pred} | {_f(m.get('migration_time_s'))}{t_pred} | "
            f"{_f(m.get('downtime_ms'), '.0f')}{d_pred} | {client_outage(m)} | "
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
        lines += [f"Kernel {env['kernel']}, {env['cpus']} CPUs, Python {env['python']}, "
                  f"testbed {env['versions'].get('testbed')}.", ""]
    lines += ["Every migration is shown with the analytical pre-copy prediction in brackets "
              "(lambda = D/R; T_mig = V/R (1 - lambda^(n+1)) / (1 - lambda) + (n+1) RTT + "
              "resume; T_down = V lambda^n / R + 2 RTT + resume; V = the bytes round 0 had to "
              "send (zero pages are references), R = iperf3 on the same path shared among "
              "the migrations crossing its bottleneck, D = the dirty rate the tracker "
              "measured, n + 1 = the rounds by the model's own stop rule: V lambda^n / R "
              "within the downtime target, or the round limit; resume = the destination's "
              "measured resume and network move; the stop takes two round trips, the image to "
              "PREPARED and GO to the destination's decision, the first overlapping the "
              "source's measured check of the paused original) and its deviation; deviations above "
              "20 % are flagged. The model's D is one rate for every round: a hot set that is "
              "dirtied again and again makes short rounds dirty more per second than long "
              "ones, so the last round's set (and the downtime) comes out larger than "
              "predicted. A migration that failed is shown as failed.", ""]
    for doc in docs:
        spec = doc["spec"]
        lines += [f"## {spec['name']} ({spec['kind']})", "",
                  spec.get("description") or "", "",
                  f"Status: {doc['status']}, {doc.get('duration_s', 0):.0f} s, "
                  f"{len(doc['variants'])} variant run(s).", ""]
        where = doc["environment"].get("placement")
        if where:
            lines += [f"Ran: **{where['where']}** ({where['why']}).", ""]
        bad = [m.get("case", "?") for _, m in migrations(doc) if failed(m)]
        if bad:
            lines += [f"**{len(bad)} migration(s) failed or were not verified:** "
                      + ", ".join(bad), ""]
        lines += summary_lines(doc) + [""]
        from .side_by_side import section

        lines += section(doc)
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
    for col in ("experiment", "ran", "status", "migrations", "verified", "failed",
                "within 20 % of the model"):
        table.add_column(col)
    for doc in docs:
        migs = [m for _, m in migrations(doc)]
        preds = [p for p in (prediction_for(m) for m in migs) if p]
        table.add_row(doc["spec"]["name"],
                      (doc["environment"].get("placement") or {}).get("where", "-"),
                      doc["status"], str(len(migs)),
                      str(sum(not failed(m) for m in migs)),
                      str(sum(failed(m) for m in migs)),
                      f"{sum(not p['flag'] for p in preds)}/{len(preds)}")
    console.print(table)
    console.print(f"report: {report}; plots: {len(plots)}")


def failures(out_dir: Path) -> list[str]:
    """Every migration of the results in ``out_dir`` that failed or was not verified."""
    return [f"{doc['spec']['name']}: {m.get('case', '?')}" for doc in load_docs(out_dir)
            for _, m in migrations(doc) if failed(m)]

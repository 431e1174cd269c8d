"""report.md and the summary table, from the results documents alone.

Every measured migration is put next to the analytical pre-copy prediction
(``testbed.results.model``); deviations above 20 % are flagged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import kinds
from .documents import Document, load
from .figures import MIB, client_outage, deviation_text, fmt, machine_busy, prediction_for


def migration_table(doc: Document) -> list[str]:
    migs = doc.migrations()
    if not migs:
        return []
    lines = ["| case | image MiB | rounds (pred.) | time s (pred.) | downtime ms (pred.) | "
             "client outage ms | goodput / iperf3 Mbit/s | encrypted | integrity | tracking | "
             "machine CPU busy | flag |", "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for v, m in migs:
        case = " ".join(x for x in (m.case, v.label) if x)
        head = f"| {case} | {fmt(m.image_bytes / MIB, '.0f')} | "
        if m.failed:
            why = str(m.error or m.switchover_reason or "not verified")
            lines.append(head + f"**failed** | **failed** | **failed** | {client_outage(m)} | "
                         f"- | {fmt(m.encrypted)} | {fmt(m.integrity_ok)} | "
                         f"{m.dirty_tracking or '-'} | {machine_busy(m.raw)} | "
                         f"{why[:80].replace('|', '/')} |")
            continue
        pred = prediction_for(m)
        flag = "-" if pred is None else ("**>20 %**" if pred["flag"] else "ok")
        r_pred = f" ({pred['rounds']})" if pred else ""
        t_pred = f" ({pred['migration_time_s']:.1f}, {deviation_text(pred['deviation_time'])})" \
            if pred else ""
        d_pred = f" ({pred['downtime_ms']:.0f}, {deviation_text(pred['deviation_downtime'])})" \
            if pred else ""
        lines.append(
            head + f"{fmt(m.rounds)}{r_pred} | {fmt(m.migration_time_s)}{t_pred} | "
            f"{fmt(m.downtime_ms, '.0f')}{d_pred} | {client_outage(m)} | "
            f"{fmt(m.goodput_mbps)} / {fmt(m.iperf3_mbps)} | "
            f"{fmt(m.encrypted)} | {fmt(m.integrity_ok)} | "
            f"{m.dirty_tracking or '-'} | {machine_busy(m.raw)} | {flag} |")
    return lines + machine_cpu_note(doc)


def machine_cpu_note(doc: Document) -> list[str]:
    """How many migrations ran while this machine's CPUs were (nearly) all busy, and how
    the model fared with them and with the others: where the machine had no CPU to spare, a
    migration's figures may be the machine's as much as the network's."""
    judged = [(m, p) for _, m in doc.migrations() if not m.failed and m.raw.get("machine_cpu")
              and (p := prediction_for(m))]
    if not judged:
        return []
    at = f"{judged[0][0].raw['machine_cpu']['saturated_at'] * 100:.0f} %"
    busy = [p for m, p in judged if m.raw["machine_cpu"]["saturated"]]
    free = [p for m, p in judged if not m.raw["machine_cpu"]["saturated"]]
    if not busy:
        return ["", f"No migration ran while this machine's CPUs were {at} busy or "
                "more (column \"machine CPU busy\": all CPUs, from round 0 to the decision)."]
    return ["", f"{len(busy)} of {len(judged)} migrations ran while this machine's CPUs were "
            f"{at} busy or more (in bold; all CPUs, from round 0 to the decision): "
            "the machine's CPU may have limited them as much as the network. Within 20 % "
            f"of the model: {sum(not p['flag'] for p in busy)}/{len(busy)} of them, "
            f"{sum(not p['flag'] for p in free)}/{len(free)} of the others."]


def side_by_side_section(doc: dict[str, Any]) -> list[str]:
    from .side_by_side import section

    return section(doc)


def write_report(out_dir: Path, docs: list[Document], plots: list[Path]) -> Path:
    lines = ["# Migration testbed report", ""]
    if docs:
        env, code = docs[0].environment, docs[0].code
        commit = (code.get("commit") or "unknown")[:12]
        commit += " (with local changes)" if code.get("modified") else ""
        lines += [f"Kernel {env.get('kernel')}, {env.get('cpus')} CPUs, Python "
                  f"{env.get('python')}, testbed {code.get('version') or '?'} at commit "
                  f"{commit}; results schema {docs[0].schema}.", ""]
    lines += ["Every migration is shown with the analytical pre-copy prediction in brackets "
              "(lambda = D/R; T_mig = V/R (1 - lambda^(n+1)) / (1 - lambda) + 2 RTT + "
              "resume, plus n RTT where each pre-copy round waits for its acknowledgement "
              "(several streams); T_down = V lambda^n / R + 2 RTT + resume, the last set "
              "grown by what was dirtied while the queued bytes drained before the pause "
              "where rounds follow each other on one stream; V = the bytes round 0 had to "
              "send (zero pages are references), R = iperf3 on the same path shared among "
              "the migrations crossing its bottleneck, D = the dirty rate the tracker "
              "measured, n + 1 = the rounds by the model's own stop rule: V lambda^n / R "
              "within the downtime target at the rate where the migration decides (in a "
              "burst: its share among the migrations still sending then), or the round "
              "limit; resume = the destination's "
              "measured resume and network move; the stop takes two round trips, the image to "
              "PREPARED and GO to the destination's decision, the first overlapping the "
              "source's measured check of the paused original) and its deviation; deviations above "
              "20 % are flagged. For a guest with a hot set (the built-in one records its "
              "write pattern) one rate D would miss that rewrites of a hot page count once: "
              "there the model counts the distinct pages that Poisson writes into the hot and "
              "the cold set dirty in each round's time (the write rate calibrated from the "
              "tracker's round 0 alone, each page exposed from when round 0 read it: along "
              "iperf3's cold start on the path for one stream alone on it), round by round. "
              "A migration that failed is shown as failed.", ""]
    for doc in docs:
        lines += [f"## {doc.name} ({doc.kind})", "", doc.description, "",
                  f"Status: {doc.status}, {doc.duration_s:.0f} s, "
                  f"{len(doc.variants)} variant run(s).", ""]
        where = doc.placement
        if where:
            lines += [f"Ran: **{where['where']}** ({where['why']}).", ""]
        cc = doc.raw.get("spec", {}).get("tcp_congestion")
        if cc:
            default = doc.raw.get("environment", {}).get("tcp_congestion_default")
            lines += [f"Hosts' TCP congestion control: **{cc}**"
                      + (f" (this machine's own default: {default})" if default else "")
                      + ".", ""]
        bad = [m.case or "?" for _, m in doc.migrations() if m.failed]
        if bad:
            lines += [f"**{len(bad)} migration(s) failed or were not verified:** "
                      + ", ".join(bad), ""]
        lines += kinds.section(doc) + [""]
        lines += side_by_side_section(doc.raw)
        table = migration_table(doc)
        if table:
            lines += ["### Migrations", ""] + table + [""]
        for p in plots:
            if p.name.startswith(doc.name):
                lines += [f"![{p.stem}]({p.name})", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines) + "\n")
    return path


def finish(out_dir: Path, console: Any) -> None:
    """Plots, report.md and a summary table for everything in ``out_dir``."""
    from rich.table import Table

    docs = load(out_dir)
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
        migs = [m for _, m in doc.migrations()]
        preds = [p for p in (prediction_for(m) for m in migs) if p]
        table.add_row(doc.name, (doc.placement or {}).get("where", "-"), doc.status,
                      str(len(migs)), str(sum(not m.failed for m in migs)),
                      str(sum(m.failed for m in migs)),
                      f"{sum(not p['flag'] for p in preds)}/{len(preds)}")
    console.print(table)
    console.print(f"report: {report}; plots: {len(plots)}")


def failures(out_dir: Path) -> list[str]:
    """Every migration of the results in ``out_dir`` that failed or was not verified."""
    return [f"{doc.name}: {m.case or '?'}" for doc in load(out_dir)
            for _, m in doc.migrations() if m.failed]

"""core-load in the results: spine load and ECMP balance from the saved counter series, the
burst table, the spines plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from .. import model
from ..documents import Document
from ..figures import failed, machine_busy, outage_never_ended, prediction_for, save_figure


def jain(values: list[float]) -> float | None:
    """Jain's fairness index of per-spine bytes: 1 = perfectly balanced, 1/n = one spine."""
    if not values or not any(values):
        return None
    return sum(values) ** 2 / (len(values) * sum(v * v for v in values))


def spine_load(series: list[dict[str, Any]],
               window: tuple[float, float] | None = None) -> dict[str, dict[str, list[float]]]:
    """Per spine and sample: total tx bytes/s, and utilisation of its busiest link.

    A spine's links are read together (one read per node), so they share timestamps.
    """
    by_spine: dict[str, dict[float, list[tuple[float, float]]]] = {}
    for s in series:
        if s["label"] == "background":
            continue
        cap = s["capacity_bytes_s"] or 0.0
        for t, v in zip(s["t_s"], s["tx_bytes_s"], strict=True):
            if window is None or window[0] <= t <= window[1]:
                by_spine.setdefault(s["node"], {}).setdefault(t, []).append((v, cap))
    out = {}
    for spine, samples in sorted(by_spine.items()):
        ts = sorted(samples)
        out[spine] = {
            "t_s": ts,
            "bytes_s": [sum(v for v, _ in samples[t]) for t in ts],
            "util": [max((v / cap if cap else 0.0) for v, cap in samples[t]) for t in ts]}
    return out


def section(doc: Document) -> list[str]:
    lines = ["| path | burst | duration s | spine peak util | spine mean util | ECMP balance "
             "(Jain) | mgmt RTT p50/p99 ms idle -> burst | mgmt loss % burst | background "
             "Mbit/s idle -> burst | downtime ms max | client outage ms max | machine CPU busy | "
             "verified |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for v in doc.raw["variants"]:
        for p in v.get("paths", []):
            for b in p["bursts"]:
                sp = b["spines"].values()
                peak = max((s["peak_util"] or 0 for s in sp), default=0)
                mean = sum(s["mean_util"] or 0 for s in sp) / max(1, len(b["spines"]))
                mi, mb = b["management"]["idle"], b["management"]["burst"]
                bg = b.get("background") or {}
                good = [m for m in b["migrations"] if not failed(m)]
                ok = len(good)
                down = max((m["downtime_ms"] for m in good if m.get("downtime_ms") is not None),
                           default=None)
                outages = [m["client_outage_ms"] for m in good
                           if m.get("client_outage_ms") is not None]
                endless = sum(outage_never_ended(m) for m in b["migrations"])
                worst_outage = f"{endless} never ended" if endless else \
                    _fmt(max(outages) if outages else None, ".0f")
                n_failed = len(b["migrations"]) - ok
                who = " QEMU" if b.get("hypervisor") == "qemu" else ""
                lines.append(
                    f"| {p['path']} | {b['concurrency']}{who} | {b['duration_s']:.1f} | "
                    f"{peak:.0%} | "
                    f"{mean:.0%} | {_fmt(b['ecmp_jain'], '.2f')} | "
                    f"{_fmt(mi.get('rtt_p50_ms'))}/{_fmt(mi.get('rtt_p99_ms'))} -> "
                    f"{_fmt(mb.get('rtt_p50_ms'))}/{_fmt(mb.get('rtt_p99_ms'))} | "
                    f"{_fmt(mb.get('loss_pct'))} | {_fmt(bg.get('idle_mbps'), '.0f')} -> "
                    f"{_fmt(bg.get('burst_mbps'), '.0f')} | {_fmt(down, '.0f')} | "
                    f"{worst_outage} | {machine_busy(b)} | {ok}/{len(b['migrations'])}"
                    f"{f' ({n_failed} failed)' if n_failed else ''} |")
    return lines + model_by_burst(doc) + tcp_alone(doc)


def model_by_burst(doc: Document) -> list[str]:
    """The model against each burst. Under fair sharing every migration of a burst gets the
    same rate and all end together; TCP shares unevenly, so single ones end early, but while
    the bottleneck stays busy the burst as a whole still ends when fair sharing says (the same
    bytes cross the same links): the last migration is what the model predicts."""
    lines = ["| path | burst | last ends s (pred.) | mean s | spread s | downtime ms: mean "
             "(pred.) | burst end within 20 % | TCP losses: pre-copy; switchover |",
             "|---|---|---|---|---|---|---|---|"]
    groups: dict[tuple[str, int, str], list[Any]] = {}
    for _, m in doc.migrations():
        if not m.failed and m.raw.get("concurrency"):
            who = m.raw.get("hypervisor") or "agents"
            groups.setdefault((m.case.split(" x")[0].removesuffix(" qemu"),
                               m.raw["concurrency"], who), []).append(m)
    for (path, c, who), migs in groups.items():
        preds = [p for p in (prediction_for(m) for m in migs) if p]
        if not preds:
            continue
        times = [m.migration_time_s or 0 for m in migs]
        d = sum(m.downtime_ms or 0 for m in migs) / len(migs)
        end, pend = max(times), max(p["migration_time_s"] for p in preds)
        pd = sum(p["downtime_ms"] for p in preds) / len(preds)
        ok = not model.flagged(model.deviation(end, pend))
        lines.append(f"| {path} | {c}{' QEMU' if who == 'qemu' else ''} | {end:.2f} "
                     f"({pend:.2f}, {(end - pend) / pend:+.0%}) | {sum(times) / len(times):.2f}"
                     f" | {min(times):.2f}-{max(times):.2f} | {d:.0f} ({pd:.0f}) | "
                     f"{'yes' if ok else '**no**'} | {losses_text([m.raw for m in migs])} |")
    return ["", "The model per burst: fair sharing predicts when the burst ends (its last "
            "migration); single migrations of a burst end earlier as TCP shares unevenly (the "
            "spread), so the per-migration flags above say how uneven, not how wrong the "
            "model's rate is. TCP losses: the share of the data streams' bytes sent again and "
            "their retransmission timeouts (TCP_INFO) in pre-copy, then in how many "
            "migrations the switchover (pause to PREPARED) lost data and its timeouts; a "
            "timeout waits at least 200 ms (Linux's minimum), which no fluid model "
            "foresees:", "", *lines] if len(lines) > 2 else []


def losses_text(migs: list[dict[str, Any]]) -> str:
    """The burst's data-stream losses (``tcp_losses``, agents only): pre-copy's retransmitted
    share and timeouts; the migrations whose switchover lost data, and its timeouts."""
    have = [m for m in migs if (m.get("tcp_losses") or {}).get("precopy")]
    if not have:
        return "-"
    pre = [m["tcp_losses"]["precopy"] for m in have]
    sw = [m["tcp_losses"].get("switchover") or {} for m in have]
    share = sum(x["retrans_bytes"] for x in pre) / max(sum(m.get("bytes_on_wire") or 0
                                                           for m in have), 1)
    rtos = [x.get("rtos") for x in [*pre, *sw]]
    known = all(r is not None for r in rtos)
    pre_rto = f", {sum(x['rtos'] for x in pre)} timeouts" if known else ""
    sw_rto = f", {sum(x.get('rtos') or 0 for x in sw)} timeouts" if known else ""
    lost = sum(bool(x.get("retrans_bytes")) for x in sw)
    return f"{share:.1%}{pre_rto}; lost in {lost}/{len(have)}{sw_rto}"


def tcp_alone(doc: Document) -> list[str]:
    """Each burst's TCP baseline (iperf3, one flow per migration, the guests' bytes, the same
    hosts and stacks) against the same fluid model as the migrations: how many single flows
    TCP alone ends within 20 % of it, beside the migrations' times."""
    lines = ["| path | burst | TCP alone: flows within 20 % (time) | their ends s (fluid) | "
             "migrations within 20 %: time / time and downtime |", "|---|---|---|---|---|"]
    for v in doc.raw["variants"]:
        for p in v.get("paths", []):
            for b in p["bursts"]:
                tcp = b.get("tcp_baseline")
                if not tcp:
                    continue
                if tcp.get("error"):
                    lines.append(f"| {p['path']} | {b['concurrency']} | **failed**: "
                                 f"{tcp['error']} | - | - |")
                    continue
                flows = tcp["flows"]
                near = sum(not model.flagged(model.deviation(f["seconds"], f["predicted_s"]))
                           for f in flows)
                preds = [prediction_for(m) for m in b["migrations"]]
                timed = [x for x in preds if x]
                on_time = sum(not model.flagged(x["deviation_time"]) for x in timed)
                both = sum(not x["flag"] for x in timed)
                ends = ", ".join(f"{f['seconds']:.2f} ({f['predicted_s']:.2f})"
                                 for f in sorted(flows, key=lambda f: f["seconds"]))
                lines.append(f"| {p['path']} | {b['concurrency']} | {near}/{len(flows)} | "
                             f"{ends} | {on_time}/{len(timed)} / {both}/{len(timed)} |")
    if len(lines) == 2:
        return []
    return ["", "TCP alone, for comparison: after each burst, iperf3 sent the guests' bytes "
            "again over the same stacks, one flow per migration, all at once; the fluid model "
            "(max-min over the spines each flow took) predicts each flow's end as it predicts "
            "the migrations'. How often single flows of plain TCP land within 20 % of it "
            "says how closely any fluid model can follow single members of such a burst:", "",
            *lines]


def _fmt(x: Any, fmt: str = ".2f") -> str:
    return "-" if x is None else format(x, fmt)


def plot(doc: Document, out_dir: Path) -> list[Path]:
    """Per path: every spine's utilisation over time, bursts shaded."""
    import matplotlib.pyplot as plt

    made = []
    for vi, v in enumerate(doc.raw["variants"]):
        for p in v.get("paths", []):
            fig, ax = plt.subplots(figsize=(9, 4))
            for spine, load in spine_load(p["series"]).items():
                ax.plot(load["t_s"], [100 * u for u in load["util"]], label=spine, lw=1)
            for b in p["bursts"]:
                ax.axvspan(b["t_from_s"], b["t_to_s"], alpha=0.12, color="grey")
                ax.text(b["t_from_s"], 102, f"x{b['concurrency']}"
                        f"{' QEMU' if b.get('hypervisor') == 'qemu' else ''}", fontsize=8)
                tcp = b.get("tcp_baseline")
                if tcp and not tcp.get("error"):
                    ax.axvspan(tcp["t_from_s"], tcp["t_to_s"], alpha=0.12, color="tab:green")
            ax.set_xlabel("time (s)")
            ax.set_ylabel("spine utilisation (% of its busiest link)")
            ax.set_ylim(0, 110)
            ax.set_title(f"{doc.name}: {p['path']} (shaded: migration bursts; green: "
                         "the same as iperf3 flows)")
            ax.legend(loc="upper right", fontsize=8)
            made.append(save_figure(
                fig, out_dir / f"{doc.name}-{vi}-{p['path']}-spines.png"))
    return made

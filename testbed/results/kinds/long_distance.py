"""long-distance in the results: the table and the plots vs RTT."""

from __future__ import annotations

from pathlib import Path

from ..documents import Document
from ..figures import cell, client_outage, failed, save_figure, value


def section(doc: Document) -> list[str]:
    lines = ["| RTT ms (measured) | iperf3 Mbit/s | transport | time s | rounds | downtime ms "
             "| client outage ms | goodput Mbit/s | goodput / iperf3 | converged |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    mark = doc.spec.get("mark_rtt_ms", 150)
    for v in doc.raw["variants"]:
        for p in v.get("points", []):
            for m in p["migrations"]:
                ratio = (m.get("goodput_mbps") or 0) / p["iperf3"]["iperf3_mbps"] \
                    if p["iperf3"]["iperf3_mbps"] else None
                flag = " **(> 150 ms)**" if p["rtt_ms"] > mark else ""
                lines.append(
                    f"| {p['rtt_ms']:g} ({p['ping'].get('rtt_p50_ms')}){flag} | "
                    f"{p['iperf3']['iperf3_mbps']:.1f} | {m['transport_choice']} | "
                    f"{cell(m, 'migration_time_s')} | {cell(m, 'rounds', 'd')} | "
                    f"{cell(m, 'downtime_ms', '.0f')} | {client_outage(m)} | "
                    f"{cell(m, 'goodput_mbps')} | "
                    f"{'-' if ratio is None or failed(m) else f'{ratio:.2f}'} | "
                    f"{'yes' if m.get('converged') else 'no'} |")
    return lines


def plot(doc: Document, out_dir: Path) -> list[Path]:
    """Migration time, downtime and goodput vs RTT per transport; the 150 ms line marked."""
    import matplotlib.pyplot as plt

    made = []
    mark = doc.spec.get("mark_rtt_ms", 150)
    for vi, v in enumerate(doc.raw["variants"]):
        pts = v.get("points", [])
        if not pts:
            continue
        fig, axes = plt.subplots(1, 3, figsize=(13, 4))
        transports = sorted({m["transport_choice"] for p in pts for m in p["migrations"]})
        for tr in transports:
            xs, tm, dt, gp = [], [], [], []
            for p in pts:
                for m in p["migrations"]:
                    if m["transport_choice"] == tr:
                        xs.append(p["rtt_ms"])
                        tm.append(value(m, "migration_time_s"))
                        dt.append(value(m, "downtime_ms"))
                        gp.append(value(m, "goodput_mbps"))
            axes[0].plot(xs, tm, "o-", label=tr)
            axes[1].plot(xs, dt, "o-", label=tr)
            axes[2].plot(xs, gp, "o-", label=tr)
        axes[2].plot([p["rtt_ms"] for p in pts], [p["iperf3"]["iperf3_mbps"] for p in pts],
                     "k--", label="iperf3")
        for ax, label in zip(axes, ("migration time (s)", "downtime (ms)", "goodput (Mbit/s)"),
                             strict=True):
            ax.axvline(mark, color="red", ls=":", lw=1)
            ax.set_xlabel("RTT (ms)")
            ax.set_ylabel(label)
            ax.legend(fontsize=7)
        fig.suptitle(f"{doc.name}: {doc.spec['bw_mbps']:g} Mbit/s WAN "
                     f"(red: {mark:g} ms)")
        made.append(save_figure(fig, out_dir / f"{doc.name}-{vi}-vs-rtt.png"))
    return made

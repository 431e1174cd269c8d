"""cloud-encrypted in the results: plaintext vs TLS, markers on the wire, isolation."""

from __future__ import annotations

from pathlib import Path

from ..documents import Document
from ..figures import cell, save_figure, value


def section(doc: Document) -> list[str]:
    lines = ["| mode | encrypted | goodput Mbit/s | iperf3 Mbit/s | CPU s/GB | downtime ms | "
             "markers on the wire | integrity |", "|---|---|---|---|---|---|---|---|"]
    iso = []
    for v in doc.raw["variants"]:
        iso.append(v.get("isolation", {}))
        for m in v.get("migrations", []):
            w = m.get("wire") or {}
            who = "QEMU " if m.get("hypervisor") == "qemu" else ""
            lines.append(
                f"| {who}{m['mode']} | {m.get('encrypted')} | {cell(m, 'goodput_mbps')} | "
                f"{m.get('iperf3_mbps') or 0:.1f} | {cell(m, 'cpu_s_per_gb')} | "
                f"{cell(m, 'downtime_ms', '.0f')} | "
                f"{w.get('markers_found', '-')}/{w.get('markers_planted', '-')} | "
                f"{m.get('integrity_ok')} |")
    for i in iso:
        lines += ["", f"Management-plane isolation ({i.get('from')} -> {i.get('to')}): "
                      f"{'holds' if i.get('isolated') else 'BROKEN'} (ping exit "
                      f"{i.get('ping_rc')}, TCP exit {i.get('tcp22_rc')})."]
    return lines


def plot(doc: Document, out_dir: Path) -> list[Path]:
    import matplotlib.pyplot as plt

    migs = [m for v in doc.raw["variants"] for m in v.get("migrations", [])]
    if not migs:
        return []
    fig, axes = plt.subplots(1, 3, figsize=(11, 3.6))
    names = [("QEMU " if m.get("hypervisor") == "qemu" else "") + m["mode"] for m in migs]
    axes[0].bar(names, [value(m, "goodput_mbps") for m in migs])
    axes[0].axhline(migs[0].get("iperf3_mbps") or 0, color="k", ls="--", label="iperf3")
    axes[0].set_ylabel("goodput (Mbit/s)")
    axes[0].legend(fontsize=7)
    axes[1].bar(names, [value(m, "cpu_s_per_gb") for m in migs])
    axes[1].set_ylabel("CPU s per GB (both agents)")
    axes[2].bar(names, [value(m, "downtime_ms") for m in migs])
    axes[2].set_ylabel("downtime (ms)")
    fig.suptitle(f"{doc.name}: plaintext vs encrypted, "
                 f"{doc.spec['rtt_ms']:g} ms RTT, {doc.spec['bw_mbps']:g} Mbit/s")
    return [save_figure(fig, out_dir / f"{doc.name}-encryption.png")]

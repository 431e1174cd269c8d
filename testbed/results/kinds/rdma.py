"""rdma in the results: TCP vs RDMA per (RTT, loss) point, the verdicts, and the plots.

Everything comes from the document: each migration carries its point (``rtt_ms``,
``loss_pct``), ``transport_choice``, its baseline (``baseline_tool``, ``baseline_mbps``) and
CPU seconds per GB on the wire (``<who>_<kind>_s_per_gb``: src/dst the agent processes over
their whole run, src_copy/dst_copy over the copy phase alone, dst_verify the destination's
integrity check within it, machine the whole kernel's /proc/stat).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from ..documents import Document
from ..figures import cell, failed, fmt, save_figure, value

TARGET_GOODPUT_RATIO = 0.9  # issue 18: RDMA goodput / ib_write_bw, unimpaired
TARGET_DST_CPU_RATIO = 0.2  # issue 18: destination process CPU/GB, RDMA / TCP
TRANSPORTS = ("tcp", "rdma")


def _by_point(variant: dict[str, Any]) -> dict[tuple[float, float], dict[str, dict[str, Any]]]:
    """{(rtt, loss): {transport: migration}} in the order run."""
    out: dict[tuple[float, float], dict[str, dict[str, Any]]] = {}
    for m in variant.get("migrations", []):
        out.setdefault((m["rtt_ms"], m["loss_pct"]), {})[m["transport_choice"]] = m
    return out


def _both(m: dict[str, Any] | None, who: str) -> float | None:
    """``who``'s user + system s/GB (None: not measured, or the migration failed)."""
    if m is None or failed(m):
        return None
    u, s = m.get(f"{who}_user_s_per_gb"), m.get(f"{who}_system_s_per_gb")
    return None if u is None or s is None else u + s


def _dst_cpu(m: dict[str, Any]) -> float | None:
    """The destination process's user + system s/GB over its whole run: the target's figure."""
    return _both(m, "dst")


def dst_split(m: dict[str, Any] | None) -> dict[str, float | None]:
    """The destination's CPU per GB taken apart: the whole run (``total``), the copy phase
    (``copy``), the integrity check within it (``verify``), the copy phase less the check
    (``transfer``: receiving, placing, the event loop), the set-up before it (``setup``:
    HELLO to HELLO_OK), the commit after it (``commit``: to the decision) and the ``rest``
    (start-up, the preflight probe, the streams' set-up, the hand-over after the decision)."""
    def get(key: str) -> float | None:
        return m.get(f"{key}_s_per_gb") if m is not None and not failed(m) else None

    total, copy, verify = _both(m, "dst"), _both(m, "dst_copy"), get("dst_verify")
    setup, commit = get("dst_setup"), get("dst_commit")
    parts = (copy, setup, commit)
    return {"total": total, "copy": copy, "verify": verify,
            "transfer": copy - verify if copy is not None and verify is not None else None,
            "setup": setup, "commit": commit,
            "rest": total - sum(parts) if total is not None and None not in parts else None}


def below_tcp(tcp: dict[str, Any] | None, rdma: dict[str, Any] | None) -> bool | None:
    """RDMA below TCP at one point: its goodput lower, or it failed where TCP did not (None:
    cannot tell, e.g. both failed)."""
    if tcp is None or rdma is None or (failed(tcp) and failed(rdma)):
        return None
    if failed(tcp) or failed(rdma):
        return failed(rdma)
    return (rdma.get("goodput_mbps") or 0.0) < (tcp.get("goodput_mbps") or 0.0)


def summary(variant: dict[str, Any]) -> dict[str, Any]:
    """The figures the verdicts are made of, for one variant."""
    points = _by_point(variant)
    clean = sorted(k for k in points if k[1] == 0)
    out: dict[str, Any] = {"unimpaired": clean[0] if clean else None, "below": {}}
    if clean:
        at = points[clean[0]]
        rdma, tcp = at.get("rdma"), at.get("tcp")
        out["rdma_vs_baseline"] = rdma.get("goodput_vs_baseline") if rdma else None
        out["rdma_failed"] = rdma is not None and failed(rdma)
        out["ib_write_bw_mbps"] = rdma.get("baseline_mbps") if rdma else None
        d_rdma, d_tcp = (_dst_cpu(m) if m else None for m in (rdma, tcp))
        out["dst_cpu"] = {"rdma": d_rdma, "tcp": d_tcp,
                          "ratio": d_rdma / d_tcp if d_rdma is not None and d_tcp else None}
        out["dst_split"] = {"rdma": dst_split(rdma), "tcp": dst_split(tcp)}
        for k in ("dst_system_s_per_gb", "machine_softirq_s_per_gb",
                  "machine_system_s_per_gb"):
            out[k] = {t: (m.get(k) if m and not failed(m) else None)
                      for t, m in (("rdma", rdma), ("tcp", tcp))}
    for rtt in sorted({k[0] for k in points}):
        losses = sorted(loss for r, loss in points if r == rtt)
        verdicts = [(loss, below_tcp(points[(rtt, loss)].get("tcp"),
                                     points[(rtt, loss)].get("rdma"))) for loss in losses]
        first = next((loss for loss, b in verdicts if b), None)
        out["below"][rtt] = {"from_loss": first,
                             "unknown": [loss for loss, b in verdicts if b is None]}
    return out


def verdict_lines(variant: dict[str, Any]) -> list[str]:
    """Markdown bullets: RDMA against its baseline unimpaired, the destination's CPU per GB
    RDMA vs TCP, and per RTT the loss from which RDMA falls below TCP."""
    s = summary(variant)
    lines = []
    if s["unimpaired"] is None:
        lines.append("- No unimpaired point (loss 0) was measured: no RDMA/ib_write_bw or CPU "
                     "verdict.")
    else:
        rtt = s["unimpaired"][0]
        where = f"at the unimpaired point (RTT {rtt:g} ms, loss 0 %)"
        r = s["rdma_vs_baseline"]
        if s["rdma_failed"]:
            text = "the RDMA migration **failed**"
        elif r is None:
            text = "no ratio (no RDMA migration, or ib_write_bw failed)"
        else:
            met = "met" if r >= TARGET_GOODPUT_RATIO else "**not met**"
            text = (f"**{r:.2f}** of ib_write_bw's {fmt(s['ib_write_bw_mbps'])} Mbit/s "
                    f"(issue 18's target >= {TARGET_GOODPUT_RATIO}: {met})")
        lines.append(f"- RDMA migration goodput / ib_write_bw {where}: {text}.")
        c = s["dst_cpu"]
        if c["ratio"] is None:
            lines.append(f"- Destination process CPU per GB, RDMA vs TCP {where}: not both "
                         f"measured (RDMA {fmt(c['rdma'], '.3f')}, TCP {fmt(c['tcp'], '.3f')} "
                         "s/GB).")
        else:
            met = "met" if c["ratio"] <= TARGET_DST_CPU_RATIO else "**not met**"
            sys_, soft = s["dst_system_s_per_gb"], s["machine_softirq_s_per_gb"]
            lines.append(
                f"- Destination process CPU per GB (user + system over the agent's whole run: "
                f"the figure issue 18's target is judged on) {where}: RDMA "
                f"{c['rdma']:.3f} vs TCP {c['tcp']:.3f} s/GB = **{c['ratio']:.2f} x** "
                f"(issue 18's target <= {TARGET_DST_CPU_RATIO} x: {met}); its system time "
                f"RDMA {fmt(sys_['rdma'], '.3f')}, TCP {fmt(sys_['tcp'], '.3f')} s/GB; the "
                f"whole machine's softirq RDMA {fmt(soft['rdma'], '.3f')}, TCP "
                f"{fmt(soft['tcp'], '.3f')} s/GB (Soft-RoCE's responder among it, charged "
                "to whichever task it interrupted).")
        lines.append(_split_line(s["dst_split"]))
    for m in variant.get("migrations", []):
        pct = m.get("bottleneck_drop_pct")
        if pct is not None and pct > 2 * m["loss_pct"] + 0.1:
            lines.append(f"- {m['case']}: **{pct:.2f} %** of its packets dropped at the "
                         f"bottleneck where {m['loss_pct']:g} % loss was set: the queue "
                         "overflowed.")
    for rtt, b in s["below"].items():
        text = f"from {b['from_loss']:g} % loss" if b["from_loss"] is not None \
            else "at no loss measured"
        unknown = f" (not comparable at {', '.join(f'{x:g}' for x in b['unknown'])} %: " \
            "both failed or one transport not run)" if b["unknown"] else ""
        lines.append(f"- RTT {rtt:g} ms: RDMA falls below TCP {text}{unknown}.")
    return lines


def _split_line(split: dict[str, dict[str, float | None]]) -> str:
    """Where the destination's CPU per GB went, RDMA beside TCP (the unimpaired point)."""
    r, t = split["rdma"], split["tcp"]
    if r["copy"] is None or t["copy"] is None:
        return ("- Destination CPU per GB by phase: not measured for both transports (the "
                "agents' cpu_copy_s / cpu_verify_s missing).")
    ratio = r["transfer"] / t["transfer"] if r["transfer"] is not None and t["transfer"] \
        else None
    def two(key: str) -> str:
        return f"{fmt(r[key], '.3f')} and {fmt(t[key], '.3f')}"

    return (f"- Where it goes: of the destination's {r['total']:.3f} (RDMA) and "
            f"{t['total']:.3f} (TCP) s/GB, the copy phase (first batch to the final round's "
            f"last) took {two('copy')}; within it the integrity check (hashing every page "
            f"where it landed, the batch checksums) {two('verify')}; the transfer itself "
            f"(the copy phase less the check) {fmt(r['transfer'], '.3f')} (RDMA) vs "
            f"{fmt(t['transfer'], '.3f')} (TCP) s/GB"
            + (f" = {ratio:.2f} x" if ratio is not None else "") + ". Fixed costs around "
            f"it: the set-up (HELLO to HELLO_OK: the image, the standby guest, the RDMA "
            f"region) {two('setup')}, the commit (the final round's end to the decision) "
            f"{two('commit')}, the rest (start-up, the preflight probe, the streams' set-up, "
            f"the hand-over after the decision) {two('rest')}.")


def _emulated(doc: Document, variant: dict[str, Any]) -> str:
    """The sentence on whose CPU the figures are, from the placement and the kernel's view."""
    where = (doc.placement or {}).get("where")
    in_vm = where == "vm" or doc.environment.get("mode") == "vm"
    virt = variant.get("virtualization")
    if virt == "qemu":
        return (f"This ran {'in the full-kernel VM ' if in_vm else ''}under software emulation "
                "(QEMU TCG; `systemd-detect-virt --vm`: qemu): every CPU figure is the "
                "emulator's, and Soft-RoCE's rate is bounded by emulated CPU, not by the link.")
    if in_vm:
        return (f"This ran in the full-kernel VM ({virt or 'accelerator not recorded'}): under "
                "TCG every CPU figure is the emulator's.")
    return f"This ran natively on kernel {doc.environment.get('kernel')} ({virt or '?'})."


def section(doc: Document) -> list[str]:
    queue = doc.spec.get("queue_pkts")
    lines = [f"Bottleneck queue: {queue if queue else 'one BDP (at least 64)'} packets at every "
             "point; *dropped %* is the share of the source link's packets its qdisc dropped "
             "during the migration: the configured random loss, and whatever overflowed the "
             "queue (Soft-RoCE sends without congestion control).", "",
             "CPU s/GB is per GB on the wire: src/dst are each agent process's own user and "
             "system time over its whole run (getrusage; the target's figure); *copy* the "
             "same over the copy phase alone (the source: round 0 to the final round sent; "
             "the destination: its first batch to the final round's last), *verify* the "
             "destination's integrity check within it (its thread's CPU hashing every page "
             "where it landed and checking the batch checksums); *machine* is the whole "
             "kernel's system and softirq time over the migration (/proc/stat: both agents, "
             "the guest, netem). "
             "Soft-RoCE's responder copies the WRITEs into the destination's memory in "
             "softirq context, which Linux does not charge to the destination process as "
             "such: a kernel without IRQ time accounting (Debian's) charges a softirq tick "
             "as system time to whichever task it interrupted (the source agent sending, a "
             "qdisc's timer, the idle task), so the whole cost shows only in the machine's "
             "softirq column.", ""]
    for v in doc.raw["variants"]:
        if len(doc.raw["variants"]) > 1:
            label = ", ".join(f"{k}={x}" for k, x in v.get("sweep_point", {}).items())
            lines += [f"#### {label or 'variant'} (repetition {v.get('repetition', 0) + 1})",
                      ""]
        lines += [_emulated(doc, v), "",
                  "| RTT ms (p50) | loss % | transport | dropped % | baseline Mbit/s | "
                  "goodput Mbit/s | / baseline | time s | rounds | downtime ms | "
                  "src user / sys s/GB | dst user / sys s/GB | src / dst copy s/GB | "
                  "dst verify s/GB | machine sys / softirq s/GB | integrity |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        rtt_seen = {(p["rtt_ms"], p["loss_pct"]): p.get("ping", {}).get("rtt_p50_ms")
                    for p in v.get("points", [])}
        counted = {(p["rtt_ms"], p["loss_pct"]) for p in v.get("points", [])
                   if (p.get("ib_write_bw") or {}).get("rate_from") == "iterations"}
        for (rtt, loss), migs in _by_point(v).items():
            for t in TRANSPORTS:
                m = migs.get(t)
                if m is None:
                    continue
                base = f"{m['baseline_tool']} {fmt(m.get('baseline_mbps'))}" \
                    if m.get("baseline_mbps") is not None else f"{m['baseline_tool']} failed"
                if t == "rdma" and (rtt, loss) in counted:
                    base += " (iterations)"
                lines.append(
                    f"| {rtt:g} ({fmt(rtt_seen.get((rtt, loss)), '.2f')}) | {loss:g} | {t} | "
                    f"{fmt(m.get('bottleneck_drop_pct'), '.2f')} | {base} | "
                    f"{cell(m, 'goodput_mbps')} | "
                    f"{cell(m, 'goodput_vs_baseline', '.2f')} | "
                    f"{cell(m, 'migration_time_s')} | {cell(m, 'rounds', 'd')} | "
                    f"{cell(m, 'downtime_ms', '.0f')} | "
                    f"{_pair(m, 'src_user', 'src_system')} | "
                    f"{_pair(m, 'dst_user', 'dst_system')} | "
                    f"{_copy_pair(m)} | {cell(m, 'dst_verify_s_per_gb', '.3f')} | "
                    f"{_pair(m, 'machine_system', 'machine_softirq')} | "
                    f"{'ok' if not failed(m) else '**failed**'} |")
        if counted:
            lines += ["", "*(iterations)*: perftest's own average read 0 (its cycle clock "
                      "failed under emulation); the rate is its completed 1 MiB WRITEs over "
                      "the run's duration."]
        lines += ["", *verdict_lines(v), ""]
    return lines


def _pair(m: dict[str, Any], a: str, b: str) -> str:
    return f"{cell(m, a + '_s_per_gb', '.3f')} / {cell(m, b + '_s_per_gb', '.3f')}"


def _copy_pair(m: dict[str, Any]) -> str:
    """Each end's user + system s/GB over the copy phase (failed, or - when not measured)."""
    if failed(m):
        return "failed / failed"
    return " / ".join(fmt(_both(m, f"{end}_copy"), ".3f") for end in ("src", "dst"))


def _nan(x: float | None) -> float:
    return float("nan") if x is None else x


def plot(doc: Document, out_dir: Path) -> list[Path]:
    """Per variant: goodput vs loss per RTT (TCP dashed, RDMA solid); each end's process CPU
    s/GB (user + system; ticks: its copy phase, the destination's integrity check) and the
    machine's system + softirq s/GB, per point and transport."""
    import matplotlib.pyplot as plt

    made = []
    for vi, v in enumerate(doc.raw["variants"]):
        points = _by_point(v)
        if not points:
            continue
        fig, axes = plt.subplots(1, 3, figsize=(15, 5.5))
        ax = axes[0]
        for ci, rtt in enumerate(sorted({k[0] for k in points})):
            losses = sorted(loss for r, loss in points if r == rtt)
            for t, style in (("tcp", "--o"), ("rdma", "-s")):
                ms = [points[(rtt, loss)].get(t) for loss in losses]
                ys = [value(m, "goodput_mbps") if m else float("nan") for m in ms]
                ax.plot(losses, ys, style, color=f"C{ci}", label=f"{t.upper()} {rtt:g} ms")
                for loss, m in zip(losses, ms, strict=True):  # a failure is no point, said
                    if m is not None and failed(m):
                        ax.annotate(f"{t.upper()} {rtt:g} ms failed", (loss, 0), fontsize=7,
                                    color=f"C{ci}", rotation=90, va="bottom", ha="center",
                                    xycoords=("data", "axes fraction"))
        ax.set_xscale("symlog", linthresh=0.1)
        ax.set_ylim(bottom=0)
        ax.set_xlabel("loss % (each way)")
        ax.set_ylabel("migration goodput (Mbit/s)")
        ax.legend(fontsize=7, ncol=2)
        keys = list(points)
        labels = [f"{r:g} ms\n{loss:g} %" for r, loss in keys]
        width = 0.2
        for ti, t in enumerate(TRANSPORTS):
            ms = [points[k].get(t) for k in keys]
            for ei, (end, hatch) in enumerate((("src", ""), ("dst", "//"))):
                xs = [i + (2 * ti + ei - 1.5) * width for i in range(len(keys))]
                user = [value(m, f"{end}_user_s_per_gb") if m else float("nan") for m in ms]
                sys_ = [value(m, f"{end}_system_s_per_gb") if m else float("nan") for m in ms]
                axes[1].bar(xs, user, width, color=f"C{2 + ti}", hatch=hatch,
                            label=f"{t.upper()} {end} user")
                axes[1].bar(xs, sys_, width, bottom=user, color=f"C{2 + ti}", alpha=0.45,
                            hatch=hatch, label=f"{t.upper()} {end} system")
                copy = [_nan(_both(m, f"{end}_copy")) for m in ms]  # the copy phase's share
                axes[1].scatter(xs, copy, marker="_", s=200, color="black", zorder=3,
                                label="copy phase" if ti == ei == 0 else None)
                if end == "dst":  # and the integrity check within it
                    check = [_nan(m.get("dst_verify_s_per_gb") if m and not failed(m)
                                  else None) for m in ms]
                    axes[1].scatter(xs, check, marker="_", s=200, color="blue", zorder=3,
                                    label="dst integrity check" if ti == 0 else None)
            xs = [i + (ti - 0.5) * 2 * width for i in range(len(keys))]
            msys = [value(m, "machine_system_s_per_gb") if m else float("nan") for m in ms]
            soft = [value(m, "machine_softirq_s_per_gb") if m else float("nan") for m in ms]
            axes[2].bar(xs, msys, 2 * width, color=f"C{2 + ti}", label=f"{t.upper()} system")
            axes[2].bar(xs, soft, 2 * width, bottom=msys, color=f"C{2 + ti}", alpha=0.45,
                        label=f"{t.upper()} softirq")
        for a, title in ((axes[1], "process CPU per end (s/GB)"),
                         (axes[2], "whole machine: system + softirq (s/GB)")):
            a.set_xticks(range(len(keys)), labels, fontsize=7)
            a.set_ylabel(title)
            a.legend(fontsize=6, ncol=2, loc="upper center", bbox_to_anchor=(0.5, -0.16))
        virt = v.get("virtualization")
        fig.suptitle(f"{doc.name}: TCP vs RDMA (Soft-RoCE), {doc.spec['bw_mbps']:g} Mbit/s"
                     + (" - TCG: the emulator's CPU" if virt == "qemu" else ""))
        made.append(save_figure(fig, out_dir / f"{doc.name}-{vi}-tcp-vs-rdma.png"))
    return made

"""QEMU next to the agents in report.md and a figure, from a results document alone.

Every migration of a kind that ran both carries ``hypervisor`` and ``compare_at`` (the RTT,
the path and burst, the mode: where both ran on the same path). The section puts them next
to each other and says where they differ and why, with the figures of this document.
"""

from __future__ import annotations

import statistics
from pathlib import Path
from typing import Any

from topologies.model import HostTcp

from .figures import MIB, failed, prediction_for

HOST_TCP_MAX_MIB = HostTcp().mem_max_bytes >> 20  # the hosts' tcp_rmem/tcp_wmem max


def _migs(doc: dict[str, Any]) -> list[dict[str, Any]]:
    return [m for v in doc["variants"] for m in v.get("migrations", [])]


def both(doc: dict[str, Any]) -> bool:
    """Did this document's runs include both hypervisors?"""
    return {m.get("hypervisor", "agents") for m in _migs(doc)} >= {"agents", "qemu"}


def _med(xs: list[float | None]) -> float | None:
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


def _f(x: Any, fmt: str = ".1f") -> str:
    return "-" if x is None else format(x, fmt)


def _natural(place: Any) -> list[Any]:
    """'RTT 50 ms' before 'RTT 100 ms', 'own-stack x2' before 'own-stack x10'."""
    import re

    return [(0, float(t), "") if re.fullmatch(r"\d+(\.\d+)?", t) else (1, 0.0, t)
            for t in re.split(r"[\s x]+", str(place)) if t]


def _ratio(m: dict[str, Any]) -> float | None:
    ip3 = m.get("fair_share_mbps") or m.get("iperf3_mbps")
    return (m.get("goodput_mbps") or 0) / ip3 if ip3 and not failed(m) else None


def _row(m: dict[str, Any]) -> str:
    who = m.get("hypervisor", "agents")
    p = prediction_for(m)
    pt = f" ({p['migration_time_s']:.1f})" if p else ""
    pd = f" ({p['downtime_ms']:.0f})" if p else ""
    pr = f" ({p['rounds']})" if p else ""
    flag = "-" if p is None else ("**>20 %**" if p["flag"] else "ok")
    if failed(m):
        why = str(m.get("error") or "not verified")[:70].replace("|", "/")
        return (f"| {m.get('compare_at', '-')} | {who} | {m.get('case', '')} | **failed** | | "
                f"| | | | | | {why} |")
    setup = m.get("setup_time_ms") if who == "qemu" else None
    guest = ("ran on" if (m.get("guest") or {}).get("heartbeat_continued") else "NO") \
        if who == "qemu" else ("verified" if m.get("integrity_ok") else "NO")
    accel = f" ({m['accel']})" if m.get("accel") else ""
    rate = m.get("fair_share_mbps") or m.get("iperf3_mbps")
    return (f"| {m.get('compare_at', '-')} | {who}{accel} | {m.get('case', '')} | "
            f"{_f(m.get('migration_time_s'))}{pt} | {_f(m.get('downtime_ms'), '.0f')}{pd} / "
            f"{_f(m.get('downtime_target_ms'), '.0f')} | {_f(m.get('goodput_mbps'))} / "
            f"{_f(rate)} = {_f(_ratio(m), '.2f')} | {m.get('rounds', '-')}{pr} | "
            f"{(m.get('bytes_on_wire') or 0) / 1e6:.1f} | {_f(setup, '.0f')} | {guest} | {flag} |")


def section(doc: dict[str, Any]) -> list[str]:
    """Markdown: the two side by side, then where they differ and why ([] unless both ran)."""
    if not both(doc):
        return []
    migs = sorted(_migs(doc), key=lambda m: (_natural(m.get("compare_at")),
                                             m.get("hypervisor", "agents")))
    lines = ["### QEMU next to the agents", "",
             "Same path, one after the other; model forecasts in brackets (the agents': "
             "`testbed.results.model`; QEMU's: `testbed.results.model_qemu`, with QEMU's own "
             "stop rule and its rounds counted as dirty-bitmap syncs).", "",
             "| where | hypervisor | case | time s (model) | downtime ms (model) / limit | "
             "goodput / iperf3 Mbit/s | rounds (model) | wire MB | QEMU setup ms | guest | "
             "model |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    lines += [_row(m) for m in migs]
    return lines + [""] + differences(doc)


def differences(doc: dict[str, Any]) -> list[str]:
    """Where they differ and why, with this document's own figures."""
    good = [m for m in _migs(doc) if not failed(m)]
    a = [m for m in good if m.get("hypervisor", "agents") == "agents"]
    q = [m for m in good if m.get("hypervisor") == "qemu"]
    out = ["**Where they differ, and why.**", ""]
    if not a or not q:
        return out + ["Only one side completed here, so there is nothing to put side by "
                      "side (see the failures above).", ""]
    wa, wq = _med([m.get("bytes_on_wire") for m in a]), _med([m.get("bytes_on_wire") for m in q])
    ia, iq = _med([m.get("image_bytes") for m in a]), _med([m.get("image_bytes") for m in q])
    out.append(f"- *Bytes.* QEMU put {wq / 1e6:.0f} MB on the wire (median) where the agents "
               f"put {wa / 1e6:.0f} MB: QEMU moves the whole guest ({iq / MIB:.0f} MiB of RAM: "
               "kernel, page cache, the dirtier; free pages as zero-page flags), the agents "
               f"only their {ia / MIB:.0f} MiB arena. Times follow the bytes.")
    da, dq = _med([m.get("downtime_ms") for m in a]), _med([m.get("downtime_ms") for m in q])
    rtt = _med([m.get("rtt_measured_ms") or m.get("rtt_ms") for m in a])
    out.append(f"- *Downtime* (median {_f(da, '.0f')} ms agents, {_f(dq, '.0f')} ms QEMU, "
               "same limit): " + _downtimes(q) + " The agents' runs from the pause to the "
               "source's receipt of the destination's decision, so it holds two round trips "
               "(the image to PREPARED, GO to the decision)"
               + (f", here {2 * rtt:.0f} ms," if rtt else "") + " and the resume.")
    ra, rq = _med([m.get("rounds") for m in a]), _med([m.get("rounds") for m in q])
    thr = [p["threshold_mib"] for p in (prediction_for(m) for m in q) if p]
    out.append(f"- *Switchover rule and iterations* (median rounds {_f(ra, 'g')} agents, "
               f"{_f(rq, 'g')} QEMU syncs). Both stop once what is dirty fits bandwidth x "
               "downtime limit. QEMU 7.2 measures that bandwidth itself over 100 ms windows "
               "(migration.c, migration_update_counters: threshold_size = bandwidth x "
               "downtime_limit) and syncs its dirty bitmap only when the rest of the current "
               "pass has fallen below the threshold (ram.c, ram_save_pending), so an "
               "iteration is everything dirty at the previous sync and its count is the "
               "passes plus the setup's and the stop's syncs"
               + (f"; its threshold here was {_med(thr):.1f} MiB" if thr else "") + ". "
               "It then stops with up to that threshold of the current pass still unsent "
               "(it checks every 50 ms of sending, MAX_WAIT; on a long path, where its "
               "writes block on a full socket, after each burst the kernel lets it write, "
               "and the stop-and-copy is then anything up to the threshold), so its "
               "stop-and-copy and its downtime sit under the limit however little the guest "
               "dirties, and a few "
               "short passes follow the first one. The agents finish each round before they "
               "check, take the bandwidth of their last round and count the rounds, the "
               "stop-and-copy included: their last round holds only what was dirtied during "
               "the one before. Iteration sizes (MiB per pass, first QEMU run): "
               + _sizes(q[0]) + "; agents' first run: " + _sizes(a[0]) + ".")
    out.append(_buffers(a, q))
    accel = {m.get("accel") for m in q}
    if "tcg" in accel:
        out.append("- *The emulator's CPU.* These QEMU guests ran under TCG (software "
                   "emulation: this host boots no KVM guest), sharing the machine's cores with "
                   "QEMU's own migration thread; where QEMU's goodput stays below iperf3 on an "
                   "unloaded path, that is the emulator's CPU, not the network.")
    fa = [p["flag"] for p in (prediction_for(m) for m in a) if p]
    fq = [p["flag"] for p in (prediction_for(m) for m in q) if p]
    out.append(f"- *Model.* Within 20 %: agents {fa.count(False)}/{len(fa)}, QEMU "
               f"{fq.count(False)}/{len(fq)}.")
    return out + [""]


def _downtimes(q: list[dict[str, Any]]) -> str:
    """How QEMU's downtime was taken: at the guest (its events), or QEMU's own figure."""
    own = _med([m.get("qemu_downtime_ms") for m in q])
    if all(m.get("timing") == "guest-resumed-at-destination" for m in q):
        return ("QEMU's is taken where the guest lives it, from the source's STOP event "
                "(vCPUs stopped for the stop-and-copy) to the destination's RESUME (its vCPUs "
                "run), one host clock; QEMU's own figure, which ends with the source's last "
                "write into its socket, was " + _f(own, ".0f") + " ms (median).")
    return ("not measured alike: QEMU's is its own, the source's, vCPUs stopped -> the last "
            "RAM page and the device state written to the socket (documents made before "
            "the guest's events were read).")


def _sizes(m: dict[str, Any]) -> str:
    ps = m.get("page_size") or 4096
    sent = m.get("pages_sent_per_round") or []
    return ", ".join(f"{p * ps / MIB:.1f}" for p in sent[:8]) + (" ..." if len(sent) > 8 else "")


def _buffers(a: list[dict[str, Any]], q: list[dict[str, Any]]) -> str:
    """The TCP buffers: QEMU sets none (the kernel autotunes), the agents may size them."""
    by: dict[str, list[float]] = {}
    for m in a + q:
        r = _ratio(m)
        if r is not None:
            key = "qemu" if m.get("hypervisor") == "qemu" else \
                str(m.get("transport_choice") or m.get("mode") or "agents")
            by.setdefault(key, []).append(r)
    figures = ", ".join(f"{k} {statistics.median(v):.2f}" for k, v in sorted(by.items()))
    return ("- *TCP buffers.* QEMU sets no socket buffer: the kernel autotunes it up to "
            f"tcp_wmem / tcp_rmem max ({HOST_TCP_MAX_MIB} MiB on these hosts), like the "
            "agents' default-buffers; the agents' bdp-buffers set SO_SNDBUF / SO_RCVBUF from "
            "the bandwidth-delay product, which matters once the window, not the link, "
            "limits a flow (long RTT). QEMU's own downtime and total-time end with its "
            "last write into that socket: at long RTT the autotuned send buffer (it grows "
            "towards the bandwidth-delay product) takes the whole stop-and-copy at once, so "
            "QEMU reports a few ms while the guest stays paused until those bytes have "
            "arrived, and its own goodput (transferred / total-time) can exceed the path's "
            "rate; the figures here end where the guest runs at the destination (QEMU's own "
            f"are kept as qemu_*). Median goodput / iperf3: {figures}.")


def plot(doc: dict[str, Any], out_dir: Path) -> list[Path]:
    """Per place both ran: time, downtime and goodput / iperf3, agents beside QEMU."""
    if not both(doc):
        return []
    import matplotlib.pyplot as plt

    from .figures import save_figure

    good = [m for m in _migs(doc) if not failed(m)]
    places = sorted({str(m.get("compare_at")) for m in good}, key=_natural)
    fig, axes = plt.subplots(1, 3, figsize=(13, 4))
    width = 0.38
    for k, who in enumerate(("agents", "qemu")):
        xs, vals = [], {"migration_time_s": [], "downtime_ms": [], "ratio": []}
        for i, place in enumerate(places):
            ms = [m for m in good if str(m.get("compare_at")) == place
                  and m.get("hypervisor", "agents") == who]
            if not ms:
                continue
            xs.append(i + (k - 0.5) * width)
            vals["migration_time_s"].append(_med([m.get("migration_time_s") for m in ms]))
            vals["downtime_ms"].append(_med([m.get("downtime_ms") for m in ms]))
            vals["ratio"].append(_med([_ratio(m) for m in ms]))
        for ax, key in zip(axes, vals, strict=True):
            ax.bar(xs, [v or 0 for v in vals[key]], width, label=who)
    limit = _med([m.get("downtime_target_ms") for m in good])
    if limit:
        axes[1].axhline(limit, color="red", ls=":", lw=1, label="limit")
    for ax, label in zip(axes, ("migration time (s)", "downtime (ms)", "goodput / iperf3"),
                         strict=True):
        ax.set_xticks(range(len(places)), places, rotation=30, fontsize=7)
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    fig.suptitle(f"{doc['spec']['name']}: agents vs QEMU (medians; QEMU accel "
                 f"{', '.join(sorted({str(m.get('accel')) for m in good if m.get('accel')}))})")
    return [save_figure(fig, out_dir / f"{doc['spec']['name']}-agents-vs-qemu.png")]

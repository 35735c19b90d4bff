#!/usr/bin/env python3
"""bench_report.py: turns the benchmark's CSV (scripts/bench.sh, `wmgwd2-lab bench`) into
docs/benchmarks.md and docs/bench.png.

Writes only between <!-- bench:begin --> and <!-- bench:end --> in the document and keeps the
rest of the file as it is (other generated sections, hand-written analysis). Every figure comes
from the CSV of one run; nothing here is typed in by hand.

Usage: bench_report.py --csv docs/bench.csv --meta docs/bench.csv.meta --doc docs/benchmarks.md
                       --png docs/bench.png
"""

import argparse
import csv
import os
import re

BEGIN = "<!-- bench:begin -->"
END = "<!-- bench:end -->"

MODES = [
    ("crash", "daemon crash (kill -9 of gw1's daemon)"),
    ("restart", "restart after the crash (gw1)"),
    ("node", "whole-gateway failure (gw3's switch port down)"),
    ("heal", "whole gateway back (gw3's switch port up)"),
    ("stop", "graceful stop (SIGTERM to gw2's daemon)"),
    ("rejoin", "rejoin (gw2's daemon started after the graceful stop)"),
]


def ival(ms):
    ms = int(ms)
    return f"{ms // 1000} s" if ms % 1000 == 0 else f"{ms} ms"


def num(x):
    return float(x) if x not in ("", None) else None


def load(path):
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["vnis"] = int(r["vnis"])
        r["interval_ms"] = int(r["interval_ms"])
        r["gateways"] = int(r["gateways"])
        r["cpu"] = [float(x) for x in r["cpu_s"].split(";") if x]
        r["rss"] = [float(x) for x in r["rss_mib"].split(";") if x]
        for k in ("moved", "garped", "ownerless_vnis", "dup_vnis", "open_vnis"):
            r[k] = int(r[k])
        for k in ("ctl_pps", "converge_s", "garp_first_s", "garp_last_s", "max_gap_s",
                  "ownerless_max_s", "dup_max_s", "settled_s"):
            r[k] = num(r[k])
    return rows


def load_meta(path):
    meta = {}
    with open(path) as f:
        for line in f:
            if "=" in line:
                k, v = line.rstrip("\n").split("=", 1)
                meta[k] = v
    return meta


def configs(rows):
    """One entry per (daemon, V, interval), in run order, with its rows by mode."""
    out = {}
    for r in rows:
        key = (r["daemon"], r["vnis"], r["interval_ms"])
        out.setdefault(key, {"key": key, "first": r, "modes": {}})["modes"][r["mode"]] = r
    return list(out.values())


def mean(xs):
    return sum(xs) / len(xs) if xs else 0.0


def ms(x):
    return "-" if x is None else f"{x * 1000:.0f} ms"


def vnis(n):
    return f"{n} VNI" if n == 1 else f"{n} VNIs"


def anomaly(n, mx, open_, mode):
    if n == 0:
        return "none"
    if not open_:
        return f"{vnis(n)}, {ms(mx)}"
    if mode == "crash":
        return f"{vnis(n)}, ≥ {ms(mx)}: until the restart"
    return f"{vnis(n)}, ≥ {ms(mx)} ({open_} still at the end)"


def steady_table(cfgs, steady_s):
    lines = [
        f"| daemon | V | interval | start: converged | control pkt/s | CPU s per {steady_s} s, "
        "per gateway | cores per gateway (mean) | RSS MiB per gateway |",
        "|---|---:|---:|---:|---:|---|---:|---|",
    ]
    for c in cfgs:
        r = c["first"]
        d, v, i = c["key"]
        drops = f" ({r['ctl_drops']} dropped)" if r["ctl_drops"] not in ("", "0") else ""
        lines.append(
            f"| {d} | {v} | {ival(i)} | {r['converge_s']:.2f} s | {r['ctl_pps']:.1f}{drops} | "
            f"{' / '.join(f'{x:.2f}' for x in r['cpu'])} | {mean(r['cpu']) / steady_s:.4f} | "
            f"{' / '.join(f'{x:.1f}' for x in r['rss'])} |")
    return lines


def failure_table(cfgs, mode):
    lines = [
        "| daemon | V | interval | moved VNIs | first GARP | last GARP | longest ping gap | "
        "ownerless | duplicate owners |",
        "|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for c in cfgs:
        r = c["modes"].get(mode)
        if r is None:
            continue
        d, v, i = c["key"]
        garped = "" if r["garped"] == r["moved"] else f" ({r['garped']} of {r['moved']} GARPed)"
        conv = "" if r["converged"] == "1" else " **(no convergence)**"
        lines.append(
            f"| {d} | {v} | {ival(i)} | {r['moved']}{conv} | {ms(r['garp_first_s'])} | "
            f"{ms(r['garp_last_s'])}{garped} | {ms(r['max_gap_s'])} | "
            f"{anomaly(r['ownerless_vnis'], r['ownerless_max_s'], 0, mode)} | "
            f"{anomaly(r['dup_vnis'], r['dup_max_s'], r['open_vnis'], mode)} |")
    return lines


def goals(cfgs):
    """Rows (goal, target, measured, verdict), computed from the run."""
    by = {c["key"]: c for c in cfgs}
    vmax = max(c["key"][1] for c in cfgs)
    out = []

    def get(d, i, mode=None, v=vmax):
        c = by.get((d, v, i))
        if c is None:
            return None
        return c["first"] if mode is None else c["modes"].get(mode)

    def verdict(ok, by_how_much):
        return "met" if ok else f"**missed** by {by_how_much}"

    wm_intervals = sorted({c["key"][2] for c in cfgs if c["key"][0] == "wmgwd2"}, reverse=True)
    vmin = min(c["key"][1] for c in cfgs)
    for i in wm_intervals:
        r = get("wmgwd2", i)
        if r is None:
            continue
        g = r["gateways"]
        want = g * 1000 / i
        got = r["ctl_pps"]
        lo = get("wmgwd2", i, v=vmin)
        extra = f"; {lo['ctl_pps']:.1f} at V = {vmin}" if lo is not None and vmin != vmax else ""
        ok = abs(got - want) <= 0.1 * want
        out.append((f"control traffic independent of V ({ival(i)}, V = {vmax})",
                    f"G per interval = {want:g} pkt/s (±10 %)",
                    f"{got:.1f} pkt/s{extra}",
                    verdict(ok, f"{abs(got - want):.1f} pkt/s")))

    w = get("wmgwd2", 100, "node")
    k = get("keepalived", 100, "node")
    if w and k:
        ok = w["max_gap_s"] <= k["max_gap_s"]
        out.append((f"whole-gateway failure gap at 100 ms (V = {vmax})",
                    f"≤ keepalived's ({ms(k['max_gap_s'])})", ms(w["max_gap_s"]),
                    verdict(ok, ms(w["max_gap_s"] - k["max_gap_s"]))))
    w = get("wmgwd2", 100)
    k = get("keepalived", 100)
    if w and k:
        wc, kc = mean(w["cpu"]), mean(k["cpu"])
        ratio = f"1/{kc / wc:.0f} of keepalived's" if wc > 0 else "below the 10 ms tick"
        ok = wc < kc / 100
        out.append((f"CPU at 100 ms (V = {vmax})",
                    f"< 1/100 of keepalived's {kc:.2f} s = {kc / 100:.3f} s per gateway",
                    f"{wc:.2f} s per gateway ({ratio})",
                    verdict(ok, f"{wc - kc / 100:.3f} s")))
    w = get("wmgwd2", 10, "node")
    if w:
        ok = w["max_gap_s"] < 0.060
        out.append((f"whole-gateway failure gap at 10 ms (V = {vmax})", "< 60 ms",
                    ms(w["max_gap_s"]), verdict(ok, ms(w["max_gap_s"] - 0.060))))
    for i in wm_intervals:
        w = get("wmgwd2", i, "stop")
        if w:
            last = w["garp_last_s"]
            ok = last is not None and last < 0.050
            out.append((f"graceful stop, last GARP ({ival(i)}, V = {vmax})", "< 50 ms", ms(last),
                        verdict(ok, ms(last - 0.050) if last is not None else "no GARP seen")))
    for i in wm_intervals:
        w = get("wmgwd2", i, "rejoin")
        if w:
            ok = w["ownerless_vnis"] == 0
            out.append((f"rejoin, ownerless time ({ival(i)}, V = {vmax})", "zero",
                        anomaly(w["ownerless_vnis"], w["ownerless_max_s"], 0, "rejoin"),
                        verdict(ok, ms(w["ownerless_max_s"]))))
    return vmax, out


def section(rows, meta):
    cfgs = configs(rows)
    steady_s = int(meta.get("steady_s", "20"))
    vmax, gl = goals(cfgs)
    L = [BEGIN, "",
         "<!-- Generated by scripts/bench.sh (scripts/bench_report.py) from docs/bench.csv; "
         "do not edit by hand. -->", "",
         "## Measured: wmgwd2 against keepalived", "",
         "Command, run as root from the repository:", "", "```sh", meta.get("command", "?"),
         "```", "",
         f"- date: {meta.get('date', '?')}, duration {meta.get('duration_s', '?')} s",
         f"- machine: {meta.get('nproc', '?')} × {meta.get('cpu', '?')}, {meta.get('mem', '?')}, "
         f"{meta.get('os', '?')}, kernel {meta.get('kernel', '?')}, iproute2 {meta.get('iproute2', '?')}",
         f"- daemons: {meta.get('wmgwd2', '?')}; {meta.get('keepalived', '?')} (Debian package)",
         f"- load average at start {meta.get('load_start', '?')}, at end {meta.get('load_end', '?')}; "
         f"network namespaces present at start (other labs): {meta.get('other_netns_start', '?')}",
         f"- G = {meta.get('gateways', '?')} gateways; raw figures: [bench.csv](bench.csv)", "",
         "### Goals (issue 3), computed from this run", "",
         "| goal | target | measured | verdict |", "|---|---|---|---|"]
    for g in gl:
        L.append("| " + " | ".join(g) + " |")
    L += ["", "### Steady state", ""]
    L += steady_table(cfgs, steady_s)
    for mode, title in MODES:
        L += ["", f"### {title[0].upper()}{title[1:]}", ""]
        L += failure_table(cfgs, mode)
    L += ["", "![failover and cost against V](bench.png)", "",
          "### How each column is measured", "",
          "- **Lab**: the lab crate `scripts/lab` (`wmgwd2-lab bench`; one fresh lab per "
          "configuration): a switch namespace "
          "(bridge, one port per host), G gateway namespaces and a client namespace; per VNI a "
          "VXLAN segment flooding to every VTEP and a macvlan `vrrp4-<V>` on each gateway with "
          "distinct (kernel-chosen) MACs, so the client's ARP cache has to move.",
          "- **wmgwd2**: `wmgwd2 --uid 0x100<g> --minvni 1 --maxvni V --interval I --broadcast "
          "10.0.1.255 --bind-interface eth0`, everything else default (dead after 3 intervals, "
          "hold-down 3 intervals, 3 GARPs per takeover). The gateway IP is on every `vrrp4-<V>`; "
          "ownership is `protodown off`.",
          "- **keepalived**: `keepalived --dont-fork --vrrp -f gw<g>.conf` per gateway; one "
          "`vrrp_instance` per VNI on `vrrp4-<V>` (`vrrp_version 3`, `advert_int` = the interval, "
          "priority 200/150/100 rotating so VNI V prefers gateway (V-1) mod G + 1, preemption on, "
          "no `vrrp_garp_*` settings: its defaults), `virtual_ipaddress` = the gateway IP. Each "
          "gateway has its own address on `vrrp4-<V>` (`GatewayIp::Vrrp`) as the adverts' "
          "source; ownership is the gateway IP being on the link. This is the configuration an "
          "operator with an existing per-VNI macvlan would write; `use_vmac` would add a second "
          "macvlan per VNI.",
          "- **start: converged**: from starting the daemons until the owner map (read from the "
          "kernel) is the one the daemon's rule predicts for the live gateways (wmgwd2: its own "
          "assignment; keepalived: the highest priority) and then stays still for max(1 s, "
          "5 intervals); the same wait follows every failure.",
          "- **control pkt/s**: a packet socket on the switch port towards the client over the steady "
          "window, counting UDP port 3000 (wmgwd2 heartbeats, broadcast) and VRRP (IP protocol "
          "112) inside VXLAN. Each heartbeat and each advert reaches the client's VTEP exactly "
          "once, so this is the number sent. keepalived's adverts are per VNI and go as BUM "
          "traffic by head-end replication to every other VTEP: on the wire of this lab each is "
          "G copies.",
          f"- **CPU**: the scheduler's run time of every thread (`/proc/PID/task/*/schedstat`, ns) over the steady window "
          f"({steady_s} s), per gateway (keepalived: parent + VRRP child); **cores** = CPU s / "
          f"window. **RSS**: `VmRSS` at the end of the window (keepalived: both processes).",
          "- **moved VNIs**: VNIs whose owner changed between the owner maps before and after.",
          "- **first / last GARP**: from the failure (the moment the script acted) to the first "
          "gratuitous ARP of any moved VNI, and to the moment the last moved VNI had its first "
          "one, from its new owner's MAC, captured with a packet socket in the client namespace.",
          "- **longest ping gap**: the client pings (a raw ICMP socket) up to 8 sampled gateway IPs "
          "(spread over the "
          "gateways the failures hit) every 10 ms; the longest time between two replies of one "
          "IP within the failure's window (event until settled), so a 10 ms resolution.",
          "- **ownerless / duplicate owners**: from the kernel's point of view: `ip -ts -o "
          "monitor link` (wmgwd2, protodown) or `monitor address` (keepalived, the gateway IP) "
          "in every gateway namespace, replayed in time order. A gateway counts while its switch "
          "port is up, whether or not its daemon runs: a killed daemon leaves its interfaces as "
          "they were and they still answer ARP. Per failure: the VNIs that had no owner (or two) "
          "at some moment, and the longest such moment; moments under 5 ms are not counted "
          "(each namespace's monitor stamps records when it reads them).",
          "- Daemon crash: the killed daemon's interfaces stay as they were (wmgwd2: protodown "
          "off; keepalived: the gateway IP stays), so its gateway keeps answering beside the new "
          "owner: duplicate owners until the daemon is restarted (the crash window ends when the "
          "other gateways have settled; the restart follows).",
          "- Whole-gateway failure: the isolated gateway's own state is not counted while its "
          "port is down (no one can reach it).",
          "- Order per configuration: crash, restart, node, heal, stop, rejoin. After restart, "
          "heal and rejoin the run waits until the starting owner map is back; after every event "
          "it also waits until each sampled gateway IP answers the client again, so an outage "
          "is charged to the event that caused it (the window of an event ends when it has "
          "settled: moments after that are not in its row).",
          "- Run it on an otherwise idle machine: the CPU, gap and GARP figures are sensitive "
          "to other load (the load average and foreign namespaces at start are printed above).",
          "", END]
    return "\n".join(L) + "\n"


def write_doc(path, text):
    old = ""
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
    if BEGIN in old and END in old:
        pre = old[: old.index(BEGIN)]
        post = old[old.index(END) + len(END):]
        post = post[1:] if post.startswith("\n") else post
        new = pre + text + post
    elif old:
        new = old.rstrip("\n") + "\n\n" + text
    else:
        new = "# Benchmarks\n\n" + text
    with open(path, "w") as f:
        f.write(new)


def plot(rows, path, steady_s):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cfgs = configs(rows)
    series = sorted({(c["key"][0], c["key"][2]) for c in cfgs}, key=lambda s: (s[0], -s[1]))
    fig, axes = plt.subplots(2, 2, figsize=(11, 8))
    panels = [
        (axes[0][0], "whole-gateway failure: longest ping gap (s)",
         lambda c: c["modes"].get("node", {}).get("max_gap_s")),
        (axes[0][1], "graceful stop: last GARP after SIGTERM (s)",
         lambda c: c["modes"].get("stop", {}).get("garp_last_s")),
        (axes[1][0], "CPU per gateway (cores, steady state)",
         lambda c: mean(c["first"]["cpu"]) / steady_s),
        (axes[1][1], "control packets/s (steady state)", lambda c: c["first"]["ctl_pps"]),
    ]
    for ax, title, f in panels:
        for d, i in series:
            pts = sorted((c["key"][1], f(c)) for c in cfgs
                         if c["key"][0] == d and c["key"][2] == i and f(c) is not None)
            if not pts:
                continue
            xs, ys = zip(*pts)
            ys = [max(y, 1e-4) for y in ys]
            colour = {1000: "tab:blue", 100: "tab:orange", 10: "tab:green"}.get(i, "tab:gray")
            ax.plot(xs, ys, marker="o" if d == "wmgwd2" else "s", color=colour,
                    linestyle="-" if d == "wmgwd2" else "--", label=f"{d} {ival(i)}")
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("VNIs (V)")
        ax.set_title(title, fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].legend(fontsize=8)
    fig.suptitle("wmgwd2 vs keepalived (VRRPv3), G = 3, one run of scripts/bench.sh", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", required=True)
    ap.add_argument("--meta", required=True)
    ap.add_argument("--doc", required=True)
    ap.add_argument("--png", required=True)
    a = ap.parse_args()
    rows = load(a.csv)
    meta = load_meta(a.meta)
    plot(rows, a.png, int(meta.get("steady_s", "20")))
    write_doc(a.doc, section(rows, meta))


if __name__ == "__main__":
    main()

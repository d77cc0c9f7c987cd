#!/usr/bin/env python3
"""Turns benchmark results into the tables of BENCHMARKS.md and one SVG picture.

Usage: python3 benches/report.py [--target DIR] [--svg FILE] BASELINE [BASELINE ...]

Reads, for each BASELINE (the name given to `--save-baseline` when running the
benchmarks), criterion's medians from TARGET/criterion/**/BASELINE/estimates.json and the
custom harnesses' JSON from TARGET/shmlease-bench/BASELINE/{scale,handoff}.json. Prints
Markdown tables (one column per baseline) and writes the SVG (acquire cost against
capacity, and the handoff latency distribution) from the last baseline.

Standard library only: no plotting package needed.
"""

import json
import math
import os
import sys


def load_criterion(target, baseline):
    """{full_id: median_ns} for one baseline."""
    out = {}
    root = os.path.join(target, "criterion")
    for dirpath, dirnames, filenames in os.walk(root):
        if os.path.basename(dirpath) != baseline or "estimates.json" not in filenames:
            continue
        try:
            with open(os.path.join(dirpath, "benchmark.json")) as f:
                full_id = json.load(f)["full_id"]
            with open(os.path.join(dirpath, "estimates.json")) as f:
                out[full_id] = json.load(f)["median"]["point_estimate"]
        except (OSError, KeyError, ValueError):
            pass
    return out


def load_json(target, baseline, name):
    try:
        with open(os.path.join(target, "shmlease-bench", baseline, name)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def fmt_ns(v):
    if v is None:
        return "—"
    if v >= 1e6:
        return f"{v / 1e6:.2f} ms"
    if v >= 1e4:
        return f"{v / 1e3:.1f} µs"
    if v >= 1e3:
        return f"{v / 1e3:.2f} µs"
    return f"{v:.1f} ns"


def ratio(a, b):
    if a is None or b is None or b == 0:
        return "—"
    return f"{a / b:.2f}×"


FASTPATH = [
    ("ours/try_acquire+release", "`try_acquire` + `release` (8-byte name)"),
    ("ours/try_acquire+release_64B_name", "`try_acquire` + `release` (64-byte name)"),
    ("ours/renew", "`renew`"),
    ("ours/is_valid", "`is_valid`"),
    ("ours/remaining", "`remaining`"),
    ("ours/get", "`get`"),
    ("ours/list_1000_leases", "`list` (1,000 held leases, 2,048 slots)"),
    ("ours/try_acquire_refused_held", "`try_acquire` refused (held by this process)"),
    ("ours/try_acquire_refused_held_by_other_process", "`try_acquire` refused (held by another live process: liveness probe)"),
    ("ours/ffi_try_acquire+release+free", "C API `try_acquire` + `release` + `lease_free`"),
    ("baseline/clock_gettime_MONOTONIC", "`clock_gettime(CLOCK_MONOTONIC)`"),
    ("baseline/clock_gettime_MONOTONIC_COARSE", "`clock_gettime(CLOCK_MONOTONIC_COARSE)`"),
    ("baseline/CAS64_acquire+release", "bare CAS acquire + CAS release (64-bit)"),
    ("baseline/clock+CAS64_acquire+release", "clock + load + CAS acquire + CAS release, 64-bit"),
    ("baseline/clock+CAS128_acquire+release", "clock + load + CAS acquire + CAS release, 128-bit"),
    ("baseline/clock+CAS64_renew", "clock + load + one CAS, 64-bit (renew limit)"),
    ("baseline/clock+CAS128_renew", "clock + load + one CAS, 128-bit (renew limit)"),
    ("baseline/robust_pthread_mutex_lock+unlock", "robust process-shared pthread mutex lock + unlock"),
    ("baseline/posix_sem_wait+post", "process-shared POSIX semaphore wait + post"),
    ("baseline/flock_EX+UN", "`flock` LOCK_EX + LOCK_UN"),
    ("baseline/fcntl_OFD_lock+unlock", "fcntl OFD lock + unlock (`F_OFD_SETLK`)"),
]

CAPS = [1000, 65536, 1000000]
OCCS = [10, 50, 90]


def scale_id(group, occ, cap):
    return f"{group}/occupancy_{occ}pct/{cap}"


def main():
    args = sys.argv[1:]
    target = "target"
    svg = "docs/bench/results.svg"
    while args and args[0].startswith("--"):
        if args[0] == "--target":
            target = args[1]
        elif args[0] == "--svg":
            svg = args[1]
        args = args[2:]
    baselines = args or ["new"]
    crit = {b: load_criterion(target, b) for b in baselines}
    scale = {b: load_json(target, b, "scale.json") for b in baselines}
    hand = {b: load_json(target, b, "handoff.json") for b in baselines}
    p = print

    p("### Fast path and baselines (criterion medians)\n")
    p("| operation | " + " | ".join(baselines) + " |")
    p("|---|" + "---:|" * len(baselines))
    for key, label in FASTPATH:
        p(f"| {label} | " + " | ".join(fmt_ns(crit[b].get(key)) for b in baselines) + " |")

    p("\n### Ratios against the targets of issues 2 and 5\n")
    p("| ratio | target | " + " | ".join(baselines) + " |")
    p("|---|---|" + "---:|" * len(baselines))

    def row(label, target_text, num, den):
        p(f"| {label} | {target_text} | "
          + " | ".join(ratio(crit[b].get(num), crit[b].get(den)) for b in baselines) + " |")

    acq = "ours/try_acquire+release"
    row("`try_acquire`+`release` / clock+CAS128 limit", "≤ 1.7", acq, "baseline/clock+CAS128_acquire+release")
    row("`try_acquire`+`release` / clock+CAS64 limit", "≤ 1.7", acq, "baseline/clock+CAS64_acquire+release")
    row("flock / `try_acquire`+`release`", "≥ 6", "baseline/flock_EX+UN", acq)
    row("`renew` / clock+CAS128", "≤ 1.2", "ours/renew", "baseline/clock+CAS128_renew")
    row("`renew` / clock+CAS64", "≤ 1.2", "ours/renew", "baseline/clock+CAS64_renew")
    row("`try_acquire`+`release` / robust mutex", "< 1 (stretch)", acq, "baseline/robust_pthread_mutex_lock+unlock")
    row("C API / Rust `try_acquire`+`release`", "—", "ours/ffi_try_acquire+release+free", acq)
    p("| `try_acquire`+`release` absolute | ≤ 60 ns | "
      + " | ".join(fmt_ns(crit[b].get(acq)) for b in baselines) + " |")
    p("| `renew` absolute | ≤ 40 ns | "
      + " | ".join(fmt_ns(crit[b].get("ours/renew")) for b in baselines) + " |")

    p("\n### Scale: `try_acquire` + `release` of other, free names (criterion medians)\n")
    p("| pool | occupancy | " + " | ".join(f"{b}: {c:,}" for b in baselines for c in CAPS)
      + " | " + " | ".join(f"{b}: 1M / 1k" for b in baselines) + " |")
    p("|---|---|" + "---:|" * (len(baselines) * (len(CAPS) + 1)))
    for group, pool in [("scale_hot64", "64 names"), ("scale_random", "5% of capacity, random")]:
        for occ in OCCS:
            cells = []
            for b in baselines:
                for c in CAPS:
                    cells.append(fmt_ns(crit[b].get(scale_id(group, occ, c))))
            for b in baselines:
                cells.append(ratio(crit[b].get(scale_id(group, occ, CAPS[-1])),
                                   crit[b].get(scale_id(group, occ, CAPS[0]))))
            p(f"| {pool} | {occ}% | " + " | ".join(cells) + " |")
    cells = []
    for b in baselines:
        for c in CAPS:
            cells.append(fmt_ns(crit[b].get(f"scale_random_limit/clock+CAS128/{c}")))
    for b in baselines:
        cells.append(ratio(crit[b].get(f"scale_random_limit/clock+CAS128/{CAPS[-1]}"),
                           crit[b].get(f"scale_random_limit/clock+CAS128/{CAPS[0]}")))
    p("| limit: clock+CAS128 on a random slot of a shared array of that size | — | " + " | ".join(cells) + " |")

    p("\n### Create and open (median of 7), size\n")
    p("| capacity | " + " | ".join(f"create ({b}) | open ({b})" for b in baselines) + " | file bytes | bytes/slot |")
    p("|---:|" + "---:|---:|" * len(baselines) + "---:|---:|")
    for i, c in enumerate(CAPS):
        cells, size, per = [], "—", "—"
        for b in baselines:
            s = scale[b]
            e = s["create_open"][i] if s and i < len(s["create_open"]) else None
            cells += [fmt_ns(e["create_ns"]) if e else "—", fmt_ns(e["open_ns"]) if e else "—"]
            if e:
                size, per = f"{e['file_bytes']:,}", f"{e['bytes_per_slot']:.3f}"
        p(f"| {c:,} | " + " | ".join(cells) + f" | {size} | {per} |")

    p("\n### Handoff latency between two processes\n")
    p("| mechanism | run | p50 | p90 | p99 | p99.9 | max |")
    p("|---|---|---:|---:|---:|---:|---:|")
    keys = []
    for b in baselines:
        for k in (hand[b] or {}).get("handoff", {}):
            if k not in keys:
                keys.append(k)
    for mech in keys:
        for b in baselines:
            h = hand[b] and hand[b]["handoff"].get(mech)
            if h:
                p(f"| {mech} | {b} | " + " | ".join(fmt_ns(h[k]) for k in ["p50", "p90", "p99", "p999", "max"]) + " |")
    p("\n### Two-process throughput (operations per second, 1 s per run)\n")
    p("| workload | run | process A | process B | total | refused attempts |")
    p("|---|---|---:|---:|---:|---:|")
    for kind in ["lease_solo", "lease_try_one_name", "lease_acquire_one_name", "lease_two_names", "mutex_one"]:
        for b in baselines:
            t = hand[b] and hand[b]["throughput"].get(kind)
            if t:
                p(f"| {kind} | {b} | {t['a']:,} | {t['b']:,} | {t['total']:,} | {t['refused']:,} |")

    last = baselines[-1]
    write_svg(svg, crit[last], hand[last], last)
    p(f"\n(picture: {svg}, from run `{last}`)")


def write_svg(path, crit, hand, label):
    W, H = 980, 560
    out = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" '
           f'viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">',
           f'<rect width="{W}" height="{H}" fill="white"/>']

    def panel(x0, y0, w, h, title, xlabel, ylabel, xs, ys, series, xfmt, yfmt, legend_at):
        """series: [(name, color, dash, [(x, y)])]; xs/ys: (min, max, log?)."""
        out.append(f'<text x="{x0 + w / 2}" y="{y0 - 12}" text-anchor="middle" font-size="14" font-weight="bold">{title}</text>')
        out.append(f'<rect x="{x0}" y="{y0}" width="{w}" height="{h}" fill="none" stroke="#444"/>')

        def tx(v):
            lo, hi, lg = xs
            f = (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) if lg else (v - lo) / (hi - lo)
            return x0 + f * w

        def ty(v):
            lo, hi, lg = ys
            f = (math.log10(v) - math.log10(lo)) / (math.log10(hi) - math.log10(lo)) if lg else (v - lo) / (hi - lo)
            return y0 + h - f * h

        for v in xfmt[0]:
            out.append(f'<line x1="{tx(v):.1f}" y1="{y0}" x2="{tx(v):.1f}" y2="{y0 + h}" stroke="#ddd"/>')
            out.append(f'<text x="{tx(v):.1f}" y="{y0 + h + 16}" text-anchor="middle">{xfmt[1](v)}</text>')
        for v in yfmt[0]:
            out.append(f'<line x1="{x0}" y1="{ty(v):.1f}" x2="{x0 + w}" y2="{ty(v):.1f}" stroke="#ddd"/>')
            out.append(f'<text x="{x0 - 6}" y="{ty(v) + 4:.1f}" text-anchor="end">{yfmt[1](v)}</text>')
        out.append(f'<text x="{x0 + w / 2}" y="{y0 + h + 34}" text-anchor="middle">{xlabel}</text>')
        out.append(f'<text x="{x0 - 48}" y="{y0 + h / 2}" text-anchor="middle" transform="rotate(-90 {x0 - 48} {y0 + h / 2})">{ylabel}</text>')
        lx, ly = legend_at
        for i, (name, color, dash, pts) in enumerate(series):
            pts = [(x, y) for x, y in pts if y is not None and y > 0]
            if not pts:
                continue
            d = " ".join(f"{tx(x):.1f},{ty(min(max(y, ys[0]), ys[1])):.1f}" for x, y in pts)
            out.append(f'<polyline points="{d}" fill="none" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>')
            if len(pts) <= 4:
                for x, y in pts:
                    out.append(f'<circle cx="{tx(x):.1f}" cy="{ty(y):.1f}" r="3" fill="{color}"/>')
            yy = ly + i * 16
            out.append(f'<line x1="{lx}" y1="{yy}" x2="{lx + 22}" y2="{yy}" stroke="{color}" stroke-width="2" stroke-dasharray="{dash}"/>')
            out.append(f'<text x="{lx + 28}" y="{yy + 4}">{name}</text>')

    # Panel 1: acquire cost against capacity.
    colors = {10: "#1b9e77", 50: "#d95f02", 90: "#7570b3"}
    series = []
    for occ in OCCS:
        series.append((f"64 hot names, {occ}% held", colors[occ], "",
                       [(c, crit.get(scale_id("scale_hot64", occ, c))) for c in CAPS]))
    for occ in OCCS:
        series.append((f"random 5% of slots, {occ}% held", colors[occ], "6,3",
                       [(c, crit.get(scale_id("scale_random", occ, c))) for c in CAPS]))
    series.append(("limit: clock+CAS128, random slot", "#000", "2,3",
                   [(c, crit.get(f"scale_random_limit/clock+CAS128/{c}")) for c in CAPS]))
    vals = [y for _, _, _, pts in series for _, y in pts if y]
    ymin = 10 ** math.floor(math.log10(min(vals))) if vals else 10
    ymax = 10 ** math.ceil(math.log10(max(vals))) if vals else 1000
    yt = [v for v in [10, 20, 50, 100, 200, 500, 1000, 2000, 5000] if ymin <= v <= ymax]
    panel(90, 40, 360, 300, "try_acquire + release vs capacity", "slots (log)", "median ns (log)",
          (700, 1.4e6, True), (ymin, ymax, True), series,
          (CAPS, lambda v: f"{v:,}"), (yt, lambda v: f"{v}"), (40, 400))

    # Panel 2: handoff latency CDF.
    series = []
    hcolors = {"lease": "#d62728", "robust_mutex": "#1f77b4", "flock": "#2ca02c"}
    allx = []
    if hand:
        for key, h in hand["handoff"].items():
            mech = next((m for m in hcolors if key.startswith(m)), None)
            if not mech:
                continue
            dash = "6,3" if key.endswith("same_core") else ""
            pts = [(ns / 1000.0, q) for q, ns in h["quantiles"] if ns > 0]
            pts.sort()
            allx += [x for x, _ in pts]
            series.append((f"{key} (p50 {h['p50'] / 1000:.1f} µs, p99 {h['p99'] / 1000:.1f} µs)", hcolors[mech], dash, pts))
    xmin = 10 ** math.floor(math.log10(min(allx))) if allx else 1
    xmax = 10 ** math.ceil(math.log10(max(allx))) if allx else 1000
    xt = [v for v in [0.1, 0.3, 1, 3, 10, 30, 100, 300, 1000, 3000, 10000] if xmin <= v <= xmax]
    panel(580, 40, 360, 300, "handoff latency, two processes (CDF)", "µs from release to the waiter holding it (log)",
          "percentile", (xmin, xmax, True), (0, 100, False), series,
          (xt, lambda v: f"{v:g}"), ([0, 25, 50, 75, 90, 100], lambda v: f"{v}"), (530, 400))
    out.append(f'<text x="{W - 8}" y="{H - 6}" text-anchor="end" fill="#777" font-size="10">run: {label}</text>')
    out.append("</svg>")
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as f:
        f.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()

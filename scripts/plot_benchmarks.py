#!/usr/bin/env python3
"""Turns the JSON of benchmarks/ips_memory (Google Benchmark,
--benchmark_out_format=json) into PNG figures:

  memory_vs_N.png     peak allocated memory against N, one line per loading mode (+ the model)
  time_vs_N.png       seconds per step against N, one line per loading mode
  memory_vs_M_I.png   peak allocated memory against M and against I
  features_vs_N.png   feature bags: peak memory and time against N (when present)

    /usr/bin/python3 scripts/plot_benchmarks.py results.json [more.json ...] --out docs/figures

Needs matplotlib (Debian: apt-get install -y python3-matplotlib).
"""
import argparse
import json
import os
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

MODES = {0: "lazy", 1: "eager", 2: "eager sequential"}
MIB = 2.0 ** 20


def load(paths):
    rows = []
    for p in paths:
        with open(p) as f:
            doc = json.load(f)
        for b in doc.get("benchmarks", []):
            if "peak_alloc" in b:
                rows.append(b)
    return rows


def sweep(rows, prefix):
    return [r for r in rows if r["name"].split("/")[0] == prefix]


def plot_vs_n(rows, out):
    side = sweep(rows, "side")
    if not side:
        return []
    fig_m, ax_m = plt.subplots(figsize=(6, 4))
    fig_t, ax_t = plt.subplots(figsize=(6, 4))
    for mode, label in MODES.items():
        rs = sorted((r for r in side if int(r["mode"]) == mode), key=lambda r: r["N"])
        if not rs:
            continue
        n = [r["N"] for r in rs]
        line, = ax_m.plot(n, [r["peak_alloc"] / MIB for r in rs], "o-", label=f"{label} (measured)")
        ax_m.plot(n, [r["model_peak"] / MIB for r in rs], "x--", color=line.get_color(), alpha=0.6,
                  label=f"{label} (model)")
        ax_t.plot(n, [r["s_per_step"] for r in rs], "o-", label=label)
    ax_m.set_xlabel("patches per image N")
    ax_m.set_ylabel("peak allocated memory (MiB)")
    ax_m.set_title("IPS training step: peak memory vs N")
    ax_m.grid(alpha=0.3)
    ax_m.legend(fontsize=8)
    ax_t.set_xlabel("patches per image N")
    ax_t.set_ylabel("seconds per optimizer step")
    ax_t.set_title("IPS training step: time vs N")
    ax_t.grid(alpha=0.3)
    ax_t.legend(fontsize=8)
    paths = [os.path.join(out, "memory_vs_N.png"), os.path.join(out, "time_vs_N.png")]
    fig_m.tight_layout()
    fig_m.savefig(paths[0], dpi=110)
    fig_t.tight_layout()
    fig_t.savefig(paths[1], dpi=110)
    return paths


def plot_m_i(rows, out):
    official = [r for r in sweep(rows, "official") if int(r.get("dedup", 1)) == 1 and int(r.get("fold_bn", 1)) == 1]
    m_rows = sweep(rows, "M") + [r for r in official if int(r["mode"]) == 0]
    i_rows = sweep(rows, "I") + [r for r in official if int(r["mode"]) == 0]
    if not sweep(rows, "M") and not sweep(rows, "I"):
        return []
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, rs, key, fixed in ((axes[0], m_rows, "M", "I"), (axes[1], i_rows, "I", "M")):
        rs = sorted((r for r in rs if r[fixed] == 100), key=lambda r: r[key])
        if not rs:
            continue
        x = [r[key] for r in rs]
        ax.plot(x, [r["peak_alloc"] / MIB for r in rs], "o-", label="measured")
        ax.plot(x, [r["model_peak"] / MIB for r in rs], "x--", label="model")
        ax.set_xlabel(key)
        ax.set_ylabel("peak allocated memory (MiB)")
        ax.set_title(f"peak memory vs {key} ({fixed} = 100, lazy)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    path = os.path.join(out, "memory_vs_M_I.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return [path]


def plot_features(rows, out):
    rs = sorted(sweep(rows, "features"), key=lambda r: r["N"])
    if not rs:
        return []
    fig, ax = plt.subplots(figsize=(6, 4))
    n = [r["N"] for r in rs]
    ax.plot(n, [r["peak_alloc"] / MIB for r in rs], "o-", label="peak allocated (measured)")
    ax.plot(n, [r["model_peak"] / MIB for r in rs], "x--", label="model")
    ax.set_xlabel("patches per bag N")
    ax.set_ylabel("MiB")
    ax2 = ax.twinx()
    ax2.plot(n, [r["s_per_step"] for r in rs], "s:", color="gray", label="s / step")
    ax2.set_ylabel("seconds per step")
    ax.set_title("feature bags (F = %d, M = I = %d)" % (rs[0]["F"], rs[0]["M"]))
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left", fontsize=8)
    ax2.legend(loc="lower right", fontsize=8)
    path = os.path.join(out, "features_vs_N.png")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    return [path]


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("json", nargs="+")
    ap.add_argument("--out", default="docs/figures")
    args = ap.parse_args()
    rows = load(args.json)
    if not rows:
        print("plot_benchmarks: no ips_memory rows in", args.json, file=sys.stderr)
        return 1
    os.makedirs(args.out, exist_ok=True)
    written = plot_vs_n(rows, args.out) + plot_m_i(rows, args.out) + plot_features(rows, args.out)
    for p in written:
        print("wrote", p)
    # A table for BENCHMARKS.md.
    print("\n| benchmark | N | s/step | img/s | peak alloc MiB | model MiB | model err |")
    print("|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['name']} | {int(r['N'])} | {r['s_per_step']:.3f} | {r['img_per_s']:.2f} | "
              f"{r['peak_alloc'] / MIB:.1f} | {r['model_peak'] / MIB:.1f} | {100 * r['model_err']:+.1f}% |")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Summarizes a `../shared/peers/run.sh` results.csv of the shape sweep: per thread count and
layout, pointwise's GFLOP/s over the best other peer's on each shape, the geometric mean
overall and per class (the name's prefix before '-'), and the worst shapes.

Usage: benches/sweep/summarize.py RESULTS.csv [--worst N]
"""
import collections
import csv
import math
import sys


def main():
    args = sys.argv[1:]
    if not args:
        sys.exit(__doc__)
    worst_n = 10
    if "--worst" in args:
        i = args.index("--worst")
        worst_n = int(args[i + 1])
        del args[i:i + 2]
    rows = list(csv.DictReader(open(args[0])))
    ours = collections.defaultdict(dict)
    best = collections.defaultdict(lambda: (0.0, ""))
    shape = {}
    for r in rows:
        if r["ok"] != "true":
            continue
        key = (r["threads"], r["layer"])
        g = float(r["gflops"])
        shape[r["layer"]] = " ".join(r[c] for c in ["n", "c", "k", "h", "w", "stride", "groups"])
        if r["peer"] == "pointwise":
            ours[key][r["layout"]] = g
        elif g > best[key][0]:
            best[key] = (g, r["peer"])
    for threads in sorted({k[0] for k in ours}):
        for layout in ["nchw", "nhwc"]:
            ratios = []
            for key, by_layout in ours.items():
                if key[0] != threads or layout not in by_layout or best[key][0] == 0:
                    continue
                ratios.append((by_layout[layout] / best[key][0], key[1], by_layout[layout], *best[key]))
            if not ratios:
                continue
            geo = math.exp(sum(math.log(r[0]) for r in ratios) / len(ratios))
            below = sum(r[0] < 1.0 for r in ratios)
            print(f"## {threads} thread(s), {layout}: {len(ratios)} shapes, geomean {geo:.2f}x best peer, "
                  f"{below} below 1.0x, {sum(r[0] < 0.95 for r in ratios)} below 0.95x")
            classes = collections.defaultdict(list)
            for r in ratios:
                classes[r[1].split("-")[0]].append(r[0])
            print("   by class: " + ", ".join(
                f"{c} {math.exp(sum(map(math.log, v)) / len(v)):.2f} (min {min(v):.2f})"
                for c, v in sorted(classes.items())))
            print(f"   worst {worst_n}:")
            for r in sorted(ratios)[:worst_n]:
                print(f"     {r[1]:8s} ({shape[r[1]]:>28s}) {r[2]:7.1f} vs {r[4]} {r[3]:7.1f} GFLOP/s = {r[0]:.2f}x")


if __name__ == "__main__":
    main()

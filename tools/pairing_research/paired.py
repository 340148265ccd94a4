"""Paired (same zip seed) differences of each candidate against random+compensation and against mtz."""
import json, sys, statistics
from collections import defaultdict
rows = [json.loads(l) for l in open(sys.argv[1] if len(sys.argv) > 1 else "results.jsonl")]
v = defaultdict(dict)
for r in rows:
    v[(r["level"], r["iters"], r["cand"])][r["seed"]] = r["inc_mean_pp"]
print("| level | iters | candidate | n | mean (pp) | std | vs random: mean Δ [min, max] | vs mtz: mean Δ [min, max] |")
print("|---|---|---|---|---|---|---|---|")
for (level, it, c) in sorted(v):
    x = v[(level, it, c)]
    xs = list(x.values())
    out = [level, str(it), c, str(len(xs)), f"{statistics.mean(xs):+.3f}", f"{statistics.stdev(xs):.3f}" if len(xs) > 1 else "–"]
    for ref in ("random", "mtz"):
        y = v.get((level, it, ref), {})
        d = [x[s] - y[s] for s in x if s in y]
        out.append(f"{statistics.mean(d):+.3f} [{min(d):+.2f}, {max(d):+.2f}]" if d and ref != c else "–")
    print("| " + " | ".join(out) + " |")

"""Table per level: candidate x {no retrain, retrained} -> mean increase per task (pp), spread over seeds."""
import json, sys, statistics
from collections import defaultdict
rows = [json.loads(l) for l in open(sys.argv[1] if len(sys.argv) > 1 else "results.jsonl")]
g = defaultdict(list)
for r in rows:
    g[(r["level"], r["cand"], r["iters"])].append(r)
RT = max(r["iters"] for r in rows)
order = ["random", "randpair", "mtz", "zipit", "comp", "comp_lin", "comp_proj"]
for level in sorted({r["level"] for r in rows}):
    sf = statistics.mean(r["shared_fraction"] for r in rows if r["level"] == level)
    print(f"\n### level {level}  (shared fraction {100*sf:.1f} % of parameters)\n")
    print("| candidate | no retrain: mean Δ/task (pp) | range over seeds | per-seed | retrained: mean Δ/task (pp) | range | per-seed | zip s (0/90) | cost s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for c in order + sorted({r['cand'] for r in rows} - set(order)):
        cells = [c]
        ts = []
        for it in (0, RT):
            rs = sorted(g.get((level, c, it), []), key=lambda r: r["seed"])
            if not rs:
                cells += ["–", "–", "–"]; ts.append("–"); continue
            v = [r["inc_mean_pp"] for r in rs]
            cells += [f"{statistics.mean(v):+.3f}", f"{max(v)-min(v):.3f}", " ".join(f"{x:+.2f}" for x in v)]
            ts.append(f"{statistics.mean(r['zip_s'] for r in rs):.0f}")
        cs = [r["cost_s"] for r in rows if r["level"] == level and r["cand"] == c]
        cells += ["/".join(ts), f"{statistics.mean(cs):.1f}" if cs else "–"]
        print("| " + " | ".join(cells) + " |")

"""Mean increase per task (a/fine, b/coarse) for each level x candidate x iters."""
import json, sys, statistics
from collections import defaultdict
rows = [json.loads(l) for l in open(sys.argv[1])]
g = defaultdict(list)
for r in rows:
    g[(r["level"], r["iters"], r["cand"])].append(r)
for k in sorted(g):
    rs = g[k]
    print(k, f"n={len(rs)}", f"task1 {statistics.mean(r['inc_a_pp'] for r in rs):+.2f}",
          f"task2 {statistics.mean(r['inc_b_pp'] for r in rs):+.2f}")

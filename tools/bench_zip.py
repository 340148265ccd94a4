#!/usr/bin/env python3
"""Time to zip one synthetic layer (Hessians + metric + exact pairing + merge, no retraining)
beside the time of that layer's unavoidable GEMMs, measured side by side in one run.

Unavoidable: the two Hessians, Xᵀ X over n samples per task (plain float32 GEMM), and the
pairwise products Wᵀ M W given M (M W_B then W_Aᵀ (M W_B), float64). The ratio is
zip time / unavoidable time; medians over --repeats runs.

    python tools/bench_zip.py                       # N ∈ {300, 1024, 4096}, d ∈ {785, 4609}
    python tools/bench_zip.py --units 300 --inputs 785 --repeats 5
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtz_mobile.mtz_math import PairGeometry, layer_hessian  # noqa: E402
from mtz_mobile.pairing import select_pairs  # noqa: E402


def timed(fn):
    t0 = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t0


def one_run(n_units: int, d: int, n: int, rng: np.random.Generator) -> dict:
    # inputs look like a ReLU layer's outputs (a fifth of them exactly zero); d counts the bias
    x_a = np.maximum(rng.standard_normal((n, d - 1), dtype=np.float32) + 0.8, 0)
    x_b = np.maximum(x_a + 0.3 * rng.standard_normal((n, d - 1), dtype=np.float32), 0)
    w_a = rng.standard_normal((d, n_units)) / np.sqrt(d)
    w_b = w_a[:, rng.permutation(n_units)] + 0.1 * rng.standard_normal((d, n_units)) / np.sqrt(d)

    x_a.T @ x_a  # page the inputs in before anything is timed
    row = {}
    (h_a, h_b), row["zip_hessians"] = timed(lambda: (layer_hessian(x_a, 0.5), layer_hessian(x_b, 0.5)))
    geom, row["zip_factor"] = timed(lambda: PairGeometry.from_hessians(h_a, h_b))
    cmp, row["zip_metric"] = timed(lambda: geom.compare(w_a, w_b))
    pairs, row["zip_pairing"] = timed(lambda: select_pairs(cmp.d, count=n_units, method="exact"))
    _, row["zip_merge"] = timed(lambda: cmp.merged(pairs))
    row["zip_total"] = sum(v for k, v in row.items() if k.startswith("zip_"))

    _, row["gemm_hessians"] = timed(lambda: (x_a.T @ x_a, x_b.T @ x_b))
    m = geom.m
    _, row["gemm_wmw"] = timed(lambda: w_a.T @ (m @ w_b))
    row["unavoidable"] = row["gemm_hessians"] + row["gemm_wmw"]
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, nargs="+", default=[300, 1024, 4096])
    parser.add_argument("--inputs", type=int, nargs="+", default=[785, 4609], help="d, counting the bias unit")
    parser.add_argument("--samples", type=int, default=10000, help="calibration samples n per task")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows here")
    args = parser.parse_args(argv)

    rng = np.random.default_rng(args.seed)
    rows = []
    print("| N | d | n | Hessians GEMM s | WᵀMW s | unavoidable s | zip s (hessians / factor / metric / "
          "pairing / merge) | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for d in args.inputs:
        for n_units in args.units:
            runs = []
            for rep in range(args.repeats):
                runs.append(one_run(n_units, d, args.samples, rng))
                print(f"  N={n_units} d={d} run {rep + 1}/{args.repeats}: {runs[-1]['zip_total']:.2f} s",
                      file=sys.stderr)
            med = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
            med["ratio"] = statistics.median(r["zip_total"] / r["unavoidable"] for r in runs)
            med.update(units=n_units, inputs=d, samples=args.samples, repeats=args.repeats)
            rows.append(med)
            print(f"| {n_units} | {d} | {args.samples} | {med['gemm_hessians']:.2f} | {med['gemm_wmw']:.2f} | "
                  f"{med['unavoidable']:.2f} | {med['zip_total']:.2f} ({med['zip_hessians']:.2f} / "
                  f"{med['zip_factor']:.2f} / {med['zip_metric']:.2f} / {med['zip_pairing']:.2f} / "
                  f"{med['zip_merge']:.2f}) | {med['ratio']:.2f}× |", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

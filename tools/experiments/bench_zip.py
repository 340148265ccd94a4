#!/usr/bin/env python3
"""Time to zip one synthetic layer (Hessians + metric + exact pairing + merge, no retraining)
beside the time of that layer's unavoidable GEMMs, measured side by side in one run.

Unavoidable: the two Hessians, Xᵀ X over n samples per task (plain float32 GEMM), and the
pairwise products Wᵀ M W given M (M W_B then W_Aᵀ (M W_B), float64). The ratio is
zip time / unavoidable time; medians over --repeats runs.

    python tools/experiments/bench_zip.py                       # N ∈ {300, 1024, 4096}, d ∈ {785, 4609}
    python tools/experiments/bench_zip.py --units 300 --inputs 785 --repeats 5
    python tools/experiments/bench_zip.py --units --vgg-images 500 --repeats 1   # one VGG-16-sized conv layer
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from mtz_mobile.markdown import markdown_row, markdown_table
from mtz_mobile.zipper.mtz_math import HessianAccumulator, PairGeometry, layer_hessian
from mtz_mobile.zipper.pairing import select_pairs


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


def vgg_layer(images: int, repeats: int, rng: np.random.Generator) -> None:
    """One VGG-16-sized convolution (512 kernels of 3×3×512, on 14×14 maps as in conv5): the
    Hessians from im2col patches (every output position of every image is an instance), metric,
    exact pairing of all 512 kernels and merge — what zipping that layer costs, retraining aside."""
    from mtz_mobile.graph.ops import TFOps

    ops = TFOps()
    attrs = {"kernel_size": [3, 3], "strides": [1, 1], "padding": "same", "dilation": [1, 1]}
    rows = []
    for _ in range(repeats):
        w_a = rng.standard_normal((4609, 512)) / 48
        w_b = w_a[:, rng.permutation(512)] + 0.01 * rng.standard_normal((4609, 512))
        t = {}
        t0 = time.perf_counter()
        hs = []
        for task in range(2):
            acc = HessianAccumulator(4608)
            for s in range(0, images, 50):
                maps = np.maximum(rng.standard_normal((min(50, images - s), 14, 14, 512), dtype=np.float32), 0)
                acc.update(np.asarray(ops.patches(maps, attrs)).reshape(-1, 4608))
            hs.append(acc.hessian(0.5))
        t["hessians"] = time.perf_counter() - t0
        geom, t["factor"] = timed(lambda: PairGeometry.from_hessians(*hs))
        cmp, t["metric"] = timed(lambda: geom.compare(w_a, w_b))
        pairs, t["pairing"] = timed(lambda: select_pairs(cmp.d, count=512, method="exact"))
        _, t["merge"] = timed(lambda: cmp.merged(pairs))
        t["total"] = sum(t.values())
        rows.append(t)
    med = {k: statistics.median(r[k] for r in rows) for k in rows[0]}
    print(f"\nVGG-16-sized conv layer, 512 kernels of 3×3×512 on 14×14 maps, {images} images per task "
          f"({images * 196:,} instances), median of {repeats}:")
    print(markdown_table(["total s", "Hessians (im2col + XᵀX) s", "factor s", "metric s", "pairing s", "merge s"],
                         [[f"{med['total']:.1f}", f"{med['hessians']:.1f}", f"{med['factor']:.2f}",
                           f"{med['metric']:.2f}", f"{med['pairing']:.2f}", f"{med['merge']:.2f}"]]), flush=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, nargs="*", default=[300, 1024, 4096])
    parser.add_argument("--inputs", type=int, nargs="+", default=[785, 4609], help="d, counting the bias unit")
    parser.add_argument("--samples", type=int, default=10000, help="calibration samples n per task")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", help="also write the rows here")
    parser.add_argument("--vgg-images", type=int, default=0,
                        help="also time one VGG-16-sized conv layer zip with this many calibration images per task")
    args = parser.parse_args(argv)
    if args.vgg_images:
        vgg_layer(args.vgg_images, args.repeats, np.random.default_rng(args.seed))
        if not args.units:
            return 0

    rng = np.random.default_rng(args.seed)
    rows = []
    # the header now, each row as its runs finish
    print(markdown_table(["N", "d", "n", "Hessians GEMM s", "WᵀMW s", "unavoidable s",
                          "zip s (hessians / factor / metric / pairing / merge)", "ratio"], []))
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
            print(markdown_row([n_units, d, args.samples, f"{med['gemm_hessians']:.2f}", f"{med['gemm_wmw']:.2f}",
                                f"{med['unavoidable']:.2f}",
                                f"{med['zip_total']:.2f} ({med['zip_hessians']:.2f} / {med['zip_factor']:.2f} / "
                                f"{med['zip_metric']:.2f} / {med['zip_pairing']:.2f} / {med['zip_merge']:.2f})",
                                f"{med['ratio']:.2f}×"]), flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""Experiments on Fashion-MNIST, printed as Markdown tables (and saved as JSON/CSV).

    python tools/reproduce.py --exp lenet300 --out results/     # the zipper-core figures

lenet300: two LeNet-300-100 (seeds 1 and 2, 8 epochs, hidden units permuted);
  (1) the first hidden layer fully shared, no retraining: MTZ as in the paper, MTZ with next-layer
      compensation, random sharing (the paper's baseline), random sharing with compensation;
  (2) both hidden layers fully shared with light retraining after each layer, for several seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from mtz_mobile.data import load_task_data  # noqa: E402
from mtz_mobile.evaluate import error_rate  # noqa: E402
from mtz_mobile.keras_io import read_dense_chain  # noqa: E402
from mtz_mobile.reference import train_reference_pair  # noqa: E402
from mtz_mobile.retrain import RetrainSettings  # noqa: E402
from mtz_mobile.zipper import ZipConfig, zip_networks  # noqa: E402


def references(out: Path, data, epochs: int):
    ref_dir = out / f"reference_e{epochs}"
    if not (ref_dir / "reference.json").exists():
        train_reference_pair([data, data], ref_dir, epochs=epochs, verbose=0)
    records = json.loads((ref_dir / "reference.json").read_text())
    return {"a": ref_dir / "a.keras", "b": ref_dir / "b.keras"}, records


def zip_and_score(chains, data, cfg: ZipConfig):
    t0 = time.perf_counter()
    result = zip_networks(chains, {"a": data, "b": data}, cfg, progress=False)
    errors = {t: 100 * error_rate(result.network.predict(t, data.x_test), data.y_test) for t in ("a", "b")}
    iterations = sum(l.retrain.get("iterations", 0) for l in result.plan.layers)
    return errors, iterations, time.perf_counter() - t0, result


def exp_lenet300(out: Path, data, args) -> dict:
    paths, records = references(out, data, args.epochs)
    chains = {t: read_dense_chain(p) for t, p in paths.items()}
    base = {r["name"]: 100 * r["test_error"] for r in records}
    train_iters = records[0]["iterations"]
    rows = []
    print(f"\nReference: errors a {base['a']:.2f} %, b {base['b']:.2f} %, {train_iters} training iterations each\n")
    print("### (1) first hidden layer fully shared, no retraining\n")
    print("| method | error a | error b | mean increase (pp) |\n|---|---|---|---|")
    none = RetrainSettings(iterations=0)
    variants = [("MTZ (paper: metric + merge)", dict(method="mtz", compensation="none")),
                ("MTZ + next-layer compensation", dict(method="mtz", compensation="next-layer")),
                ("random sharing (paper's baseline)", dict(method="random", compensation="none")),
                ("random sharing + next-layer compensation", dict(method="random", compensation="next-layer"))]
    for label, kw in variants:
        cfg = ZipConfig(shared=["all", 0], retrain=none, seed=args.seeds[0], **kw)
        errs, _, secs, _ = zip_and_score(chains, data, cfg)
        inc = (errs["a"] - base["a"] + errs["b"] - base["b"]) / 2
        rows.append({"exp": "layer1", "method": label, "error_a": errs["a"], "error_b": errs["b"], "increase": inc})
        print(f"| {label} | {errs['a']:.2f} % | {errs['b']:.2f} % | {inc:+.2f} |", flush=True)

    print(f"\n### (2) both hidden layers fully shared, {args.iterations} retraining iterations after each layer\n")
    print("| method | seed | error a (Δ) | error b (Δ) | retraining iterations | / training iterations |")
    print("|---|---|---|---|---|---|")
    for label, comp in (("MTZ + compensation", "next-layer"), ("MTZ (paper)", "none")):
        for seed in args.seeds:
            cfg = ZipConfig(shared=["all"], compensation=comp, seed=seed,
                            retrain=RetrainSettings(iterations=args.iterations, learning_rate=args.lr))
            errs, iters, secs, result = zip_and_score(chains, data, cfg)
            rows.append({"exp": "full", "method": label, "seed": seed, "error_a": errs["a"], "error_b": errs["b"],
                         "delta_a": errs["a"] - base["a"], "delta_b": errs["b"] - base["b"],
                         "retrain_iterations": iters, "train_iterations": train_iters,
                         "shared_fraction": result.plan.params["shared_fraction"], "seconds": secs})
            print(f"| {label} | {seed} | {errs['a']:.2f} % ({errs['a'] - base['a']:+.2f}) | "
                  f"{errs['b']:.2f} % ({errs['b'] - base['b']:+.2f}) | {iters} | 1/{train_iters / iters:.1f} |",
                  flush=True)
    full = [r for r in rows if r["exp"] == "full" and r["method"] == "MTZ + compensation"]
    print(f"\nMTZ + compensation over seeds {args.seeds}: median Δa {statistics.median(r['delta_a'] for r in full):+.2f} pp, "
          f"median Δb {statistics.median(r['delta_b'] for r in full):+.2f} pp, worst "
          f"{max(max(r['delta_a'], r['delta_b']) for r in full):+.2f} pp")
    return {"reference": records, "rows": rows}


EXPERIMENTS = {"lenet300": exp_lenet300}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp", choices=sorted(EXPERIMENTS) + ["all"], default="all")
    parser.add_argument("--out", default="results")
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--iterations", type=int, default=90, help="retraining iterations after each layer")
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    data = load_task_data("fashion-mnist", args.data_dir)
    for name in (sorted(EXPERIMENTS) if args.exp == "all" else [args.exp]):
        result = EXPERIMENTS[name](out, data, args)
        (out / f"{name}.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The MobileNetV2 pair (tools/experiments/mobilenet_results.py) fully shared, with the task weight α chosen on
the training hold-out: α weights the fine task against the coarse one in the Hessians of every
merge and in the retraining loss.

    python tools/experiments/mobilenet_alpha.py --out results/mobilenet_alpha --refs results/mobilenet

For each α of ``--alphas`` one ``mtz-mobile sweep`` at level 1 (every hidden layer shared) with
light retraining after the last layer (1/10 of the fine reference's iterations, Adam 1e-3, cosine
schedule), zip seed 0. The α whose worse task has the smaller validation increase (point estimate,
on the 6,000 held-out training images) is chosen; it is then zipped with seeds 1 and 2, and random
pairing + compensation and the paper's method (no compensation, labels-only loss) run at that α.
The test set is read only to report. Writes OUT/alpha.md and OUT/alpha.json; re-runs reuse the
finished sweeps.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from mtz_mobile import api
from mtz_mobile.markdown import markdown_table
from mtz_mobile.zipper.sweep import load_sweep

sys.path.insert(0, str(Path(__file__).resolve().parent))
from mobilenet_results import NAMES, SPECS, references  # noqa: E402

COMPARED = {"random + compensation": {"method": "random"},   # against MTZ + compensation at the chosen α
            "paper's method (no compensation, labels only)": {"compensation": "none", "retrain_distill": 0.0}}


def run_sweep(out: Path, refs: list[dict], name: str, options: dict, args) -> dict:
    where = out / name
    if not (where / "sweep.json").exists():
        print(f"sweep {name}", flush=True)
        partial = where.with_name(where.name + ".partial")
        api.sweep_models([r["path"] for r in refs], where, data=SPECS, names=NAMES, levels=[1.0], budget=args.budget,
                         calibration_samples=args.calibration, retrain_iterations=args.retrain,
                         retrain_schedule="end", retrain_learning_rate=1e-3, retrain_learning_rate_schedule="cosine",
                         resume=partial.exists(), progress=False, **options)
    point = load_sweep(where)["points"][0]
    return {"sweep": name, "alpha": options.get("alpha", 0.5), "seed": options.get("seed", 0),
            "shared_fraction": point["shared_fraction"],
            "validation": {t: point["validation"][t] for t in NAMES},
            "test_increase_pp": {t: point["test"][t]["increase_pp"] for t in NAMES}}


def worst_validation(row: dict) -> float:
    return max(row["validation"][t]["point_pp"] for t in NAMES)


def table(rows: list[dict]) -> str:
    head = (["variant", "α", "seed", "shared"] + [f"{t}: validation (bound)" for t in NAMES]
            + [f"{t}: test" for t in NAMES])
    return markdown_table(head, [
        [r["variant"], f"{r['alpha']:g}", r["seed"], f"{100 * r['shared_fraction']:.1f} %"]
        + [f"{r['validation'][t]['point_pp']:+.2f} (≤ {r['validation'][t]['upper_pp']:+.2f})" for t in NAMES]
        + [f"{r['test_increase_pp'][t]:+.2f} pp" for t in NAMES] for r in rows])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--refs", type=Path, required=True, help="tools/experiments/mobilenet_results.py's OUT (its reference/)")
    p.add_argument("--alphas", type=float, nargs="+", default=[0.5, 0.65, 0.8, 0.9, 0.95])
    p.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="extra zip seeds at the chosen α")
    p.add_argument("--calibration", type=int, default=2000)
    p.add_argument("--retrain", type=int, default=0, help="default: 1/10 of the fine reference's iterations")
    p.add_argument("--budget", type=float, default=0.5)
    p.add_argument("--no-compare", dest="compare", action="store_false",
                   help="skip random pairing and the paper's method at the chosen α")
    args = p.parse_args(argv)
    refs = references(args.refs, epochs=12, early_stopping=2)   # trained there when absent
    args.retrain = args.retrain or refs[0]["iterations"] // 10
    args.out.mkdir(parents=True, exist_ok=True)
    grid = [dict(run_sweep(args.out, refs, f"sweep_a{a:g}", {"alpha": a}, args), variant="MTZ + compensation")
            for a in args.alphas]
    chosen = min(grid, key=worst_validation)["alpha"]
    print(f"chosen on validation: α = {chosen:g}", flush=True)
    rows = list(grid)
    for seed in args.seeds:
        rows.append(dict(run_sweep(args.out, refs, f"sweep_a{chosen:g}_s{seed}", {"alpha": chosen, "seed": seed},
                                   args), variant="MTZ + compensation"))
    for label, options in COMPARED.items() if args.compare else ():
        name = f"sweep_a{chosen:g}_{options.get('method', 'paper')}"
        rows.append(dict(run_sweep(args.out, refs, name, dict(options, alpha=chosen), args), variant=label))
    md = (f"Every hidden layer shared, {args.retrain} retraining iterations after the last layer (Adam 1e-3, cosine), "
          f"{args.calibration} calibration images per task; validation on the training hold-out, test on all "
          f"10,000 test images. Chosen on validation: α = {chosen:g}.\n\n" + table(rows) + "\n")
    (args.out / "alpha.md").write_text(md)
    (args.out / "alpha.json").write_text(json.dumps({"chosen_alpha": chosen, "rows": rows,
                                                     "references": refs}, indent=1) + "\n")
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())

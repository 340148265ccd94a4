#!/usr/bin/env python3
"""Zip time and peak memory against parameter count, for every network the project zips.

    python tools/experiments/cost_curves.py --out docs/cost_curves                  # every pair, default calibration
    python tools/experiments/cost_curves.py --out results/costs --only lenet300 lenet5 resnet-pair
    python tools/experiments/cost_curves.py --out docs/cost_curves --reuse docs/cost_curves/runs.json   # redraw
    python tools/experiments/cost_curves.py --out docs/cost_curves --reuse docs/cost_curves/costs.csv results/vgg128/vgg16.json

Each pair is zipped (every hidden layer, no retraining) by ``tools/experiments/bench_zip_graphs.py`` in a
fresh process, so that each peak RSS is that zip's own; a run already measured can be given with
``--reuse`` (its JSON from ``bench_zip_graphs.py --json``, or an earlier costs.csv whose rows are
kept as they are) instead of being run again. Writes
costs.csv, costs.md and costs.png (log-log: wall time and peak RSS against parameters per
model) and runs.json (the runs, for --reuse) to --out, and prints the table. The parameter
count alone does not predict the cost (see docs/RESULTS.md): a conv net's Hessians and
compensation grow with its patch instances (images × output positions, capped per layer), and
every layer's math with the square (Hessians) and cube (factorisation) of its inputs.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
ORDER = ["lenet300", "lenet5", "resnet-pair", "wide-mlp", "mobilenet-v2", "vgg16"]
DAMPING = {"mobilenet-v2": 1e-2}   # random 224×224 MobileNetV2 weights need more than the default


def run_pair(name: str, calibration: int | None, timeout: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / f"{name}.json"
        cmd = [sys.executable, str(HERE / "bench_zip_graphs.py"), f"--{name}", "--json", str(out)]
        if calibration:
            cmd += ["--calibration", str(calibration)]
        if name in DAMPING:
            cmd += ["--damping", str(DAMPING[name])]
        print(f"cost_curves: {' '.join(cmd[1:])}", file=sys.stderr, flush=True)
        done = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, timeout=timeout)
        if done.returncode != 0:
            tail = done.stderr.strip().splitlines()[-1:] or ["(no output)"]
            raise SystemExit(f"cost_curves: {name} failed (exit {done.returncode}): {tail[0]}")
        return json.loads(out.read_text())


def table_rows(path: Path) -> list[dict]:
    """An earlier costs.csv's rows, typed as rows_of makes them."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for row in rows:
        row.update({k: (int(v) if k in ("params_per_model", "calibration") else float(v))
                    for k, v in row.items() if k not in ("pair", "what")})
    return rows


def rows_of(runs: list[dict]) -> list[dict]:
    rows = []
    for r in runs:
        med = r["median"]
        params = r["params_per_task"]
        rows.append({"pair": r["pair"], "what": r["what"], "params_per_model": max(params.values()),
                     "calibration": r["calibration"], "wall_s": round(med["wall"], 1),
                     "hessians_s": round(med["hessians"], 1), "factorisation_s": round(med["factorisation"], 1),
                     "metric_s": round(med["metric"], 1), "compensation_s": round(med["compensation"], 1),
                     "forward_s": round(med["forward"], 1), "peak_rss_gb": round(r["peak_rss_gb"], 2)})
    return sorted(rows, key=lambda row: row["params_per_model"])


def markdown(rows: list[dict]) -> str:
    from mtz_mobile.markdown import markdown_table

    head = ["pair", "parameters per model", "calibration images", "wall s", "Hessians s", "factorisation s",
            "metric s", "compensation s", "forward s", "peak RSS GB"]
    body = [[r["what"], f"{r['params_per_model']:,}", r["calibration"], r["wall_s"], r["hessians_s"],
             r["factorisation_s"], r["metric_s"], r["compensation_s"], r["forward_s"], r["peak_rss_gb"]] for r in rows]
    return markdown_table(head, body)


def chart(rows: list[dict], path: Path) -> None:
    from mtz_mobile.png import pyplot, save_png

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    params = [r["params_per_model"] for r in rows]
    for ax, key, label in ((axes[0], "wall_s", "zip wall time (s)"), (axes[1], "peak_rss_gb", "peak RSS (GB)")):
        # points, not a curve: the cost follows the activations and the widest layer, not the count
        ax.loglog(params, [r[key] for r in rows], "o", color="#2b6cb0")
        for r in rows:
            ax.annotate(r["pair"], (r["params_per_model"], r[key]), fontsize=7, xytext=(4, 4),
                        textcoords="offset points")
        ax.set_xlabel("parameters per model")
        ax.set_ylabel(label)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle("Zipping two models (every hidden layer, no retraining), 2-core CPU")
    save_png(fig, path)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="directory for costs.csv, costs.md, costs.png")
    parser.add_argument("--only", nargs="+", choices=ORDER, help="these pairs only (default: all)")
    parser.add_argument("--reuse", nargs="*", default=[], help="bench_zip_graphs.py --json files to use as measured")
    parser.add_argument("--calibration", type=int, help="calibration images per task for every pair "
                        "(default: each pair's own)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per pair before it is stopped")
    args = parser.parse_args(argv)
    reused, tabled = [], []
    for p in args.reuse:   # one run's JSON, a runs.json list, or an earlier costs.csv
        if p.endswith(".csv"):
            tabled += table_rows(Path(p))
            continue
        loaded = json.loads(Path(p).read_text())
        reused += loaded if isinstance(loaded, list) else [loaded]
    for r in reused:
        if "pair" not in r or "params_per_task" not in r:
            parser.error(f"--reuse: {r.get('what', 'a file')} was not written by this version of "
                         "bench_zip_graphs.py --json (no pair or params_per_task): run it again")
    runs = reused + [run_pair(name, args.calibration, args.timeout) for name in (args.only or ORDER)
                     if name not in {r["pair"] for r in reused + tabled}]
    fresh = {r["pair"] for r in runs}
    rows = sorted(rows_of(runs) + [r for r in tabled if r["pair"] not in fresh], key=lambda row: row["params_per_model"])
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    from mtz_mobile.fileio import write_atomic

    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_atomic(out / "costs.csv", buf.getvalue().encode())
    write_atomic(out / "runs.json", json.dumps(runs, indent=1) + "\n")
    table = markdown(rows)
    write_atomic(out / "costs.md", (table + "\n").encode())
    chart(rows, out / "costs.png")
    print(table)
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python3
"""The journal paper's nine-task setting (issue 15, item 2): nine correlated tasks on the same
Fashion-MNIST images, one small ResNet per task, zipped 2, 3, 5 and 9 at a time into one file.

    python tools/experiments/nine_tasks.py --out results/nine_tasks                  # training sized for ~10 min on 2 cores
    python tools/experiments/nine_tasks.py --out results/nine_tasks --counts 2,9 --retrain-iterations 140
    python tools/experiments/nine_tasks.py --out /tmp/nine_smoke --quick             # smoke run, a few minutes

Tasks, in zipping order (every count zips the first k): fine (10 item types), coarse (the 5 groups
of ``fashion-mnist-coarse``), footwear (5, 7, 9 vs rest), upper (0, 2, 4, 6 vs rest), bag (8 vs rest),
shirtlike (Shirt, T-shirt/top, rest), half (items 0-4 vs 5-9), parity (item mod 2), mod3 (item mod 3).

References of the first max(--counts) tasks: ``reference.build_resnet`` (width 16), Adam, batch
128, seeded per task (task i: seed i+1), trained on the first --train images with early stopping on
a per-class 10 % hold-out of those training images (never the test set); cached in OUT/refs.

Each count k, in OUT/k{k}/: every hidden layer fully shared with next-layer compensation (the
default config), then --retrain-iterations joint steps of light retraining once after the last
layer (default: a tenth of the fine reference's training iterations). Once, not after every layer:
nine tasks are 8 × 9 zip steps, so that budget spread over them would be about one step per
retraining call, each of which pays a graph trace (as in tools/experiments/mobilenet_results.py).
``pipeline.deploy`` then converts the zip to one .tflite with baselines and benchmarks it on the
host (CompiledModel, XNNPACK weight cache on). A count whose OUT/k{k}/result.json exists is not
run again. Writes OUT/nine_tasks.{json,csv,md} and the chart (--chart; default docs/nine_tasks.png,
with --quick OUT/nine_tasks.png so that a smoke run leaves the documented figure alone).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path

import numpy as np

from mtz_mobile.cli import quiet
from mtz_mobile.data import COARSE_LABELS, COARSE_OF_FINE, FASHION_LABELS, TaskData, load_task_data
from mtz_mobile.errors import MTZError
from mtz_mobile.fileio import partial_dir, write_atomic
from mtz_mobile.markdown import markdown_table
from mtz_mobile.png import pyplot, save_png

ITEMS = range(10)
# (name, each item type's class in the task, class names); fine first: every count zips it
TASKS = [
    ("fine", list(ITEMS), FASHION_LABELS),
    ("coarse", COARSE_OF_FINE.tolist(), COARSE_LABELS),
    ("footwear", [int(c in (5, 7, 9)) for c in ITEMS], ["not footwear", "footwear"]),
    ("upper", [int(c in (0, 2, 4, 6)) for c in ITEMS], ["not upper body", "upper body"]),
    ("bag", [int(c == 8) for c in ITEMS], ["not bag", "bag"]),
    ("shirtlike", [{6: 0, 0: 1}.get(c, 2) for c in ITEMS], ["Shirt", "T-shirt/top", "other"]),
    ("half", [int(c >= 5) for c in ITEMS], ["items 0-4", "items 5-9"]),
    ("parity", [c % 2 for c in ITEMS], ["even item number", "odd item number"]),
    ("mod3", [c % 3 for c in ITEMS], ["item number mod 3 = 0", "item number mod 3 = 1", "item number mod 3 = 2"]),
]
NAMES = [t[0] for t in TASKS]
# plan.json records a task's spec; the derived tasks have none the package could load again
SPECS = {"fine": "fashion-mnist", "coarse": "fashion-mnist-coarse"}
BATCH = 128
VALIDATION_SPLIT = 0.1
FULL = dict(train=20000, test=None, epochs=5, patience=2, counts=[2, 3, 5, 9], runs=10, calibration=1000)
QUICK = dict(train=2000, test=500, epochs=1, patience=1, counts=[2, 3], runs=3, calibration=100)
ROOT = Path(__file__).resolve().parents[2]


def say(*parts) -> None:
    print(*parts, file=sys.stderr, flush=True)


def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=1) + "\n")


def check_same(path: Path, recorded: dict, wanted: dict) -> None:
    """Resuming must not mix results made with other settings into one table."""
    changed = sorted(k for k in wanted if recorded.get(k) != wanted[k])
    if changed:
        raise MTZError(f"{path} was made with other settings ({', '.join(changed)}): use another --out or delete it")


def build_tasks(data_dir, n_train: int, n_test: int | None) -> dict[str, TaskData]:
    """The nine tasks share the image arrays (views of one load); only the labels differ."""
    base = load_task_data("fashion-mnist", data_dir).head(n_train, n_test)
    out = {}
    for name, mapping, labels in TASKS:
        m = np.asarray(mapping, dtype=np.int64)
        out[name] = replace(base, spec=SPECS.get(name, f"nine-tasks:{name}"), y_train=m[base.y_train],
                            y_test=m[base.y_test], labels=list(labels), strata=base.y_train)
    return out


def train_references(out: Path, tasks: dict[str, TaskData], s: dict) -> list[dict]:
    from mtz_mobile.graph.keras_io import load_keras_model
    from mtz_mobile.reference import train_reference

    records = []
    for i, name in enumerate(NAMES[:max(s["counts"])]):
        path, rec_path = out / "refs" / f"{name}.keras", out / "refs" / f"{name}.json"
        wanted = {"train": s["train"], "test": s["test"], "epochs": s["epochs"], "patience": s["patience"],
                  "seed": i + 1}
        if path.is_file() and rec_path.is_file():
            rec = json.loads(rec_path.read_text())
            check_same(rec_path, rec["settings"], wanted)
        else:
            say(f"reference {name}: training a ResNet on {s['train']} images, at most {s['epochs']} epoch(s)")
            path.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            rec = asdict(train_reference(tasks[name], path, i + 1, epochs=s["epochs"], batch_size=BATCH,
                                         permute=False, verbose=0, arch="resnet", early_stopping=s["patience"],
                                         validation_split=VALIDATION_SPLIT))
            rec.update(task=name, classes=tasks[name].num_classes, settings=wanted,
                       params=int(load_keras_model(path).count_params()),
                       train_seconds=round(time.perf_counter() - t0, 1))
            write_json(rec_path, rec)
        rec["path"] = str(path)   # where it is now, should OUT have moved since
        say(f"reference {name}: test error {100 * rec['test_error']:.2f} %, {rec['iterations']} iterations "
            f"({rec['epochs_run']} epoch(s) run, best {rec['best_epoch']})")
        records.append(rec)
    return records


def zip_once(out: Path, k: int, refs: list[dict], tasks: dict[str, TaskData], config, verbose: bool) -> float:
    """The zip's wall time, measured here because deploy does not report it per stage."""
    from mtz_mobile import api

    zip_dir, timing = out / "zip", out / "zip_seconds.json"
    if (zip_dir / "plan.json").is_file() and timing.is_file():
        return json.loads(timing.read_text())["seconds"]
    # an interrupted zip resumed would time only its remainder: zip from the start
    shutil.rmtree(partial_dir(zip_dir), ignore_errors=True)
    say(f"k={k}: zipping {', '.join(NAMES[:k])}")
    t0 = time.perf_counter()
    api.zip_models([r["path"] for r in refs[:k]], out_dir=zip_dir, data={n: tasks[n] for n in NAMES[:k]},
                   names=NAMES[:k], config=config, overwrite=True, progress=verbose)
    seconds = round(time.perf_counter() - t0, 1)
    write_json(timing, {"seconds": seconds})
    return seconds


def bench_figures(report: dict, names: list[str]) -> dict:
    st = report["storage"]
    rss = next(v for v in report["memory"]["versus_one_original"] if v["metric"] == "VmRSS")
    lat = {r["signature"]: r["ratio"] for r in report["latency"]["ratios"] if r["xnnpack_cache"] == "on"}
    joint = report["model"]["joint_key"]
    return {"file_bytes": st["zipped_file_bytes"], "floor_bytes": st["unique_weight_bytes"],
            "floor_ratio": st["floor_ratio"], "baselines_file_bytes": st["baselines_file_bytes"],
            "file_ratio_vs_baselines": st["file_ratio"], "rss_ratio": rss["ratio"],
            "rss_ratio_delta": rss["ratio_delta"],
            "rss_one_original_task": rss["original_task"], "latency_ratio": {t: lat[t] for t in names},
            "latency_ratio_joint": lat.get(joint) if joint else None}


def run_count(out: Path, k: int, refs: list[dict], tasks: dict[str, TaskData], s: dict, wanted: dict) -> dict:
    from mtz_mobile import api
    from mtz_mobile.bench import HostSettings
    from mtz_mobile.pipeline import deploy
    from mtz_mobile.zipper.evaluate import evaluate_zip
    from mtz_mobile.zipper.plan import load_zip_dir

    kdir = out / f"k{k}"
    result_path = kdir / "result.json"
    if result_path.is_file():
        row = json.loads(result_path.read_text())
        check_same(result_path, row["settings"], wanted)
        say(f"k={k}: done before, read {result_path}")
        return row
    # 0.3's rate (Adam 1e-4, constant), as measured: pinned against the default preset's change
    config = api.make_config(calibration_samples=s["calibration"], retrain_iterations=s["retrain"],
                             retrain_schedule="end", preset="per-layer")
    names, datas = NAMES[:k], {n: tasks[n] for n in NAMES[:k]}
    seconds = zip_once(kdir, k, refs, tasks, config, s["verbose"])
    say(f"k={k}: zipped in {seconds:.0f} s; converting with baselines and benchmarking ({s['runs']} runs)")
    done = deploy([r["path"] for r in refs[:k]], kdir, data=datas, names=names, joint=s["joint"], config=config,
                  bench=HostSettings(runs=s["runs"], runtime="compiled", xnnpack_cache="on"), progress=s["verbose"])
    say(f"k={k}: evaluating every task on {len(tasks['fine'].y_test)} test images")
    # api.evaluate reloads data from plan.json's specs, which the derived tasks do not have
    zipdir = load_zip_dir(kdir / "zip")
    evals = evaluate_zip(zipdir, datas=datas)
    plan, params = zipdir.plan, zipdir.plan.params
    row = {"count": k, "tasks": names, "settings": wanted, "zip_seconds": seconds,
           "retrain_iterations": int(sum(l.retrain.get("iterations", 0) for l in plan.layers)
                                     + plan.final_retrain.get("iterations", 0)),
           "fine_reference_iterations": refs[0]["iterations"], "shared_fraction": params["shared_fraction"],
           "params_zipped": params["zipped"], "params_separate": params["separate_total"],
           **bench_figures(done.report, names),
           "errors": {e.task: {"original": e.original_error, "zipped": e.zipped_error,
                               "increase_pp": e.increase_pp, "test_images": e.samples} for e in evals}}
    write_json(result_path, row)
    say(f"k={k}: file / floor {row['floor_ratio']:.3f}x, RSS / one original {row['rss_ratio']:.3f}x, "
        f"error change {min(increases(row)):+.2f} to {max(increases(row)):+.2f} pp")
    return row


def increases(row: dict) -> list[float]:
    return [row["errors"][t]["increase_pp"] for t in row["tasks"]]


def latencies(row: dict) -> list[float]:
    return [row["latency_ratio"][t] for t in row["tasks"]]


def x(v: float | None, digits: int = 2) -> str:
    return "–" if v is None else f"{v:.{digits}f}×"


def summary_rows(rows: list[dict]) -> list[dict]:
    """One flat line per count, for the CSV and the chart."""
    out = []
    for r in rows:
        inc, lat = increases(r), latencies(r)
        out.append({"count": r["count"], "zip_seconds": r["zip_seconds"], "retrain_iterations": r["retrain_iterations"],
                    "shared_fraction": r["shared_fraction"], "file_bytes": r["file_bytes"],
                    "floor_bytes": r["floor_bytes"], "floor_ratio": r["floor_ratio"],
                    "file_ratio_vs_baselines": r["file_ratio_vs_baselines"], "rss_ratio": r["rss_ratio"],
                    "rss_ratio_delta": r["rss_ratio_delta"], "latency_ratio_min": min(lat),
                    "latency_ratio_median": statistics.median(lat), "latency_ratio_max": max(lat),
                    "latency_ratio_joint": r["latency_ratio_joint"], "error_increase_min_pp": min(inc),
                    "error_increase_mean_pp": statistics.fmean(inc), "error_increase_max_pp": max(inc)})
    return out


def write_csv(path: Path, flat: list[dict]) -> None:
    def cell(v):
        return "" if v is None else f"{v:.6g}" if isinstance(v, float) else str(v)

    lines = [",".join(flat[0])] + [",".join(cell(v) for v in r.values()) for r in flat]
    write_atomic(path, "\n".join(lines) + "\n")


def markdown(rows: list[dict], flat: list[dict], refs: list[dict], s: dict) -> str:
    table = [[f["count"], f"{f['zip_seconds']:.0f} s", f["retrain_iterations"], f"{100 * f['shared_fraction']:.1f} %",
              f"{f['file_bytes'] / 1024:.0f} kB / {f['floor_bytes'] / 1024:.0f} kB = {x(f['floor_ratio'], 3)}",
              x(f["file_ratio_vs_baselines"]), f"{x(f['rss_ratio'], 3)} (Δ {x(f['rss_ratio_delta'])})",
              f"{x(f['latency_ratio_min'])}–{x(f['latency_ratio_max'])}", x(f["latency_ratio_joint"]),
              f"{f['error_increase_min_pp']:+.2f} / {f['error_increase_mean_pp']:+.2f} / "
              f"{f['error_increase_max_pp']:+.2f}"] for f in flat]
    last = rows[-1]
    per_task = [[t, refs[i]["classes"], refs[i]["iterations"], f"{100 * last['errors'][t]['original']:.2f} %",
                 f"{100 * last['errors'][t]['zipped']:.2f} %", f"{last['errors'][t]['increase_pp']:+.2f}",
                 x(last["latency_ratio"][t])] for i, t in enumerate(last["tasks"])]
    test = refs[0]["settings"]["test"] or 10000
    return "\n".join([
        f"# Nine tasks on Fashion-MNIST{' (quick smoke run)' if s['quick'] else ''}\n",
        f"One ResNet (width 16, {refs[0]['params']} parameters for fine) per task, trained on {s['train']} images "
        f"(at most {s['epochs']} epoch(s), early stopping with patience {s['patience']} on a 10 % hold-out of them); "
        f"every hidden layer fully shared with next-layer compensation, {s['calibration']} calibration images, "
        f"{s['retrain']} retraining iterations once after the last layer ({refs[0]['iterations']} trained the "
        f"fine reference); host bench with CompiledModel and XNNPACK's weight cache, {s['runs']} runs. Errors on "
        f"{test} test images.\n",
        markdown_table(["tasks", "zip time", "retraining iterations", "shared params", "file / unique-weight floor",
                        "file / separate files", "RSS all tasks / one original (Δ over runtime)",
                        "latency / own file (range over tasks)", "joint `all` / all own files",
                        "error change pp (min / mean / max)"], table), "",
        f"Per task, {last['count']} tasks zipped:\n",
        markdown_table(["task", "classes", "reference training iterations", "original error", "zipped error",
                        "change (pp)", "latency / own file"], per_task), ""])


def chart(flat: list[dict], path: Path, quick: bool) -> None:
    plt = pyplot()
    fig, axes = plt.subplots(1, 5, figsize=(19, 3.6))
    k = [f["count"] for f in flat]

    def col(name):
        return [np.nan if f[name] is None else f[name] for f in flat]

    panels = [("zip wall time (s)", [("zip_seconds", "zip")]),
              ("file size / unique-weight floor", [("floor_ratio", "file / floor")]),
              ("RSS all tasks / one original", [("rss_ratio", "VmRSS"), ("rss_ratio_delta", "Δ over runtime")]),
              ("latency / own file", [("latency_ratio_median", "median over tasks")]),
              ("error change (pp)", [("error_increase_mean_pp", "mean over tasks")])]
    for ax, (title, lines) in zip(axes, panels):
        for name, label in lines:
            ax.plot(k, col(name), marker="o", label=label)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("tasks zipped")
        ax.set_xticks(k)
        ax.grid(alpha=0.3)
    for ax, lo, hi in ((axes[3], "latency_ratio_min", "latency_ratio_max"),
                       (axes[4], "error_increase_min_pp", "error_increase_max_pp")):
        ax.fill_between(k, col(lo), col(hi), alpha=0.25, label="range over tasks")
    for ax in axes[2:]:
        ax.legend(fontsize=8)
    axes[4].axhline(0.0, color="grey", linewidth=0.8)
    fig.suptitle("Nine Fashion-MNIST tasks, ResNet-16 each, zipped k at a time" + (" (quick)" if quick else ""))
    save_png(fig, path)


def parse_counts(text: str) -> list[int]:
    try:
        counts = [int(v) for v in text.split(",")]
    except ValueError:
        counts = []
    if not counts or len(set(counts)) != len(counts) or not all(2 <= c <= len(TASKS) for c in counts):
        raise argparse.ArgumentTypeError(f"{text!r}: give distinct task counts from 2 to {len(TASKS)}, e.g. 2,3,5,9")
    return sorted(counts)


def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/nine_tasks", help="output directory (default %(default)s)")
    p.add_argument("--quick", action="store_true", help="smoke run: " + ", ".join(f"{k} {v}" for k, v in QUICK.items()))
    p.add_argument("--counts", type=parse_counts, help="task counts to zip, 2 to 9 (default 2,3,5,9)")
    p.add_argument("--train", type=int, help=f"training images per task (default {FULL['train']})")
    p.add_argument("--test", type=int, help="test images per task (default all 10000)")
    p.add_argument("--epochs", type=int, help=f"most epochs per reference (default {FULL['epochs']})")
    p.add_argument("--patience", type=int, help=f"early-stopping patience in epochs (default {FULL['patience']})")
    p.add_argument("--calibration", type=int, help=f"calibration images per task (default {FULL['calibration']})")
    p.add_argument("--retrain-iterations", type=int,
                   help="joint retraining steps per zip (default: the fine reference's training iterations / 10)")
    p.add_argument("--runs", type=int, help=f"timed runs per signature in the bench (default {FULL['runs']})")
    p.add_argument("--no-joint", dest="joint", action="store_false", help="no joint `all` signature in the file")
    p.add_argument("--chart", help="PNG path (default docs/nine_tasks.png; with --quick OUT/nine_tasks.png)")
    p.add_argument("--data-dir", help="Fashion-MNIST idx files (default: the package's search)")
    p.add_argument("--verbose", action="store_true", help="the package's own progress lines too")
    return p


def settings(parser: argparse.ArgumentParser, args) -> dict:
    s = dict(QUICK if args.quick else FULL)
    s.update({k: getattr(args, k) for k in s if getattr(args, k) is not None})
    # fewer than 100 leaves a class or two without a validation image
    if not 100 <= s["train"] <= 60000 or (s["test"] is not None and not 1 <= s["test"] <= 10000):
        parser.error("--train must be 100 to 60000 and --test 1 to 10000")
    for key in ("epochs", "patience", "calibration", "runs"):
        if s[key] < 1:
            parser.error(f"--{key} must be at least 1, got {s[key]}")
    if args.retrain_iterations is not None and args.retrain_iterations < 0:
        parser.error(f"--retrain-iterations must be at least 0, got {args.retrain_iterations}")
    out = Path(args.out)
    chart_path = Path(args.chart) if args.chart else (out if args.quick else ROOT / "docs") / "nine_tasks.png"
    if chart_path.suffix != ".png":
        parser.error(f"--chart {chart_path} does not end in .png")
    return dict(s, quick=args.quick, retrain=args.retrain_iterations, joint=args.joint, verbose=args.verbose,
                out=out, chart=chart_path, data_dir=args.data_dir)


def run(s: dict) -> str:
    t0 = time.perf_counter()
    out = s["out"]
    tasks = build_tasks(s["data_dir"], s["train"], s["test"])
    refs = train_references(out, tasks, s)
    if s["retrain"] is None:
        s["retrain"] = max(1, round(refs[0]["iterations"] / 10))
    wanted = {k: s[k] for k in ("train", "test", "epochs", "patience", "calibration", "retrain", "runs", "joint")}
    rows = [run_count(out, k, refs, tasks, s, wanted) for k in s["counts"]]
    flat = summary_rows(rows)
    md = markdown(rows, flat, refs, s)
    result = {"settings": {k: v for k, v in wanted.items()}, "counts": s["counts"], "tasks": NAMES,
              "references": refs, "rows": rows, "summary": flat}
    write_json(out / "nine_tasks.json", result)
    write_csv(out / "nine_tasks.csv", flat)
    write_atomic(out / "nine_tasks.md", md + "\n")
    chart(flat, s["chart"], s["quick"])
    say(f"wrote {out}/nine_tasks.{{json,csv,md}} and {s['chart']} in {time.perf_counter() - t0:.0f} s")
    return md


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    # before anything imports TensorFlow: its import-time notices would bury the progress lines
    quiet.configure(verbose=quiet.verbose_requested(argv))
    parser = make_parser()
    args = parser.parse_args(argv)
    s = settings(parser, args)
    try:
        print(run(s))
    except MTZError as exc:
        print(f"nine_tasks: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

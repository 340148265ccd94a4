"""Is zipping worth it where the tasks really differ? Pairs of tasks on different images, two
initialisation regimes, MTZ against the practitioner baselines, at equal stored bytes and equal
retraining steps.

Pairs (all data available offline):
  a  Fashion-MNIST classes 0–4 vs 5–9, each task's training images from its own third of the
     training set (no class and no image in common); the last third is the source task's.
  b  scikit-learn's handwritten digits (8×8, 1,797 images, upscaled to 28×28; 80 % train) vs
     Fashion-MNIST items on their own third; each task keeps its own preprocessing.
Regimes:
  shared       pretrain one backbone on the source task (all ten Fashion-MNIST classes on the
               remaining third), fine-tune two copies, each with its own head;
  independent  each task's model trained from its own random init.
Methods (all share every hidden layer, so all store the same bytes; the zips and the baselines
retrain with the same steps, rate and schedule — the default preset, a tenth of one reference's
training):
  mtz       MTZ + compensation (the default zip)     random  random pairing + compensation
  paper     the paper's method (no compensation, labels-only loss)
  frozen    task A's trunk for both, task B's head retrained on it (mtz_mobile.baselines)
  multitask one trunk (from the common init in the shared regime, else A's), both heads, jointly
  budget    `mtz-mobile zip A B --budget 0.5` (the one-command search: sharing levels from the most
            shared down, α 0.1 / 0.5 / 0.9 at each, the most shared point certified within 0.5 pp kept)
Validation: each task's hold-out from its training split (20 %); increases on the whole test set.
Architectures: LeNet-5 (default) or MobileNetV2 (α 0.35, Fashion-MNIST zero-padded to 32×32×3;
pair a only; with --early-stopping the references stop on their hold-out's error).

    python tools/experiments/regimes.py --out results/regimes                      # LeNet-5, pair a, seed 0
    python tools/experiments/regimes.py --out results/regimes --pairs a b --seeds 0 1 2
    python tools/experiments/regimes.py --out results/regimes_mnv2 --arch mobilenet_v2 --regimes shared \
        --epochs 40 --early-stopping 3 --methods mtz frozen multitask budget random paper

Resumable: rows already in OUT/rows.csv are skipped; references are cached under OUT/refs/.
"""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from mtz_mobile.data import TaskData, error_rate, load_task_data
from mtz_mobile.markdown import markdown_table
from mtz_mobile.reference import APPLICATIONS

METHODS = ("mtz", "random", "paper", "frozen", "multitask", "budget")
ZIP_METHODS = {"mtz": {}, "random": {"method": "random"},
               "paper": {"compensation": "none", "retrain_distill": 0.0}}
SPLIT = 0.2
FIELDS = ["arch", "pair", "regime", "method", "seed", "shared_pct", "a_val_pp", "a_bound_pp", "b_val_pp",
          "b_bound_pp", "a_test_pp", "b_test_pp", "worse_test_pp", "certified_0.5", "retrain_steps", "seconds", "note"]
BUDGET_PP = 0.5


def thirds(n: int, seed: int = 0) -> list[np.ndarray]:
    order = np.random.default_rng(seed).permutation(n)
    return [np.sort(part) for part in np.array_split(order, 3)]


def _subset(spec: str, x, y, xt, yt, classes, labels) -> TaskData:
    keep, keep_t = np.isin(y, classes), np.isin(yt, classes)
    remap = {c: n for n, c in enumerate(classes)}
    return TaskData(spec, x[keep], np.array([remap[v] for v in y[keep]], np.int64), xt[keep_t],
                    np.array([remap[v] for v in yt[keep_t]], np.int64), [labels[c] for c in classes])


def digits() -> TaskData:
    from sklearn.datasets import load_digits

    d = load_digits()
    x = np.kron(d.images / 16.0, np.ones((3, 3)))                # 8×8 → 24×24, then 2 pixels of border
    x = np.pad(x, ((0, 0), (2, 2), (2, 2))).astype(np.float32)
    y = d.target.astype(np.int64)
    order = np.random.default_rng(1).permutation(len(y))
    train, test = np.sort(order[:1437]), np.sort(order[1437:])
    return TaskData("sklearn-digits", x[train], y[train], x[test], y[test], [str(c) for c in range(10)],
                    {"scale": 1 / 16.0, "mean": 0.0})


def pair_data(pair: str, arch: str = "lenet5") -> tuple[dict[str, TaskData], TaskData]:
    """(task A, task B) and the source task of the shared regime; for the application networks
    (MobileNetV2) Fashion-MNIST zero-padded to 32×32, grey repeated to 3 channels."""
    if pair == "b" and arch in APPLICATIONS:
        raise SystemExit("pair b (8×8 digits) is measured on LeNet-5 only")
    f = load_task_data("fashion-mnist@32x32x3" if arch in APPLICATIONS else "fashion-mnist")
    parts = thirds(len(f.y_train))
    x, y = f.x_train, f.y_train
    source = TaskData("fashion-mnist third 3", x[parts[2]], y[parts[2]], f.x_test, f.y_test, f.labels)
    if pair == "a":
        a = _subset("fashion-mnist 0-4, third 1", x[parts[0]], y[parts[0]], f.x_test, f.y_test, [0, 1, 2, 3, 4],
                    f.labels)
        b = _subset("fashion-mnist 5-9, third 2", x[parts[1]], y[parts[1]], f.x_test, f.y_test, [5, 6, 7, 8, 9],
                    f.labels)
        return {"a": a, "b": b}, source
    b = TaskData("fashion-mnist third 2", x[parts[1]], y[parts[1]], f.x_test, f.y_test, f.labels)
    return {"a": digits(), "b": b}, source


def train(model, data: TaskData, epochs: int, seed: int, patience: int | None = None) -> dict:
    """Adam 1e-3 on the training split less the hold-out, for ``epochs`` or, with ``patience``, at
    most ``epochs`` stopping on the hold-out's error (the best epoch's weights restored); returns
    the iterations run and the epochs."""
    import keras
    import tensorflow as tf

    from mtz_mobile.reference import batchnorm_momentum, fit_early_stopping

    held = data.holdout(SPLIT)
    # train-reference's rule: 126 steps an epoch on a third of Fashion-MNIST gives 0.9 (at 0.99
    # MobileNetV2 scored chance on the hold-out for 4 epochs while it trained at 79 %)
    momentum = batchnorm_momentum(math.ceil(len(held.x_train) / 128))
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                  metrics=["sparse_categorical_accuracy"])
    if patience is None:
        model.fit(held.x_train, held.y_train, batch_size=128, epochs=epochs, verbose=0, shuffle=True)
        run = {"epochs_run": epochs, "best_epoch": epochs}
    else:
        run = fit_early_stopping(model, held, epochs, 128, patience, 2)   # one line per epoch
    run["val_error"] = round(error_rate(model.predict(held.x_val, verbose=0), held.y_val), 5)
    run["iterations"] = run["epochs_run"] * -(-len(held.y_train) // 128)
    print(f"  trained {data.spec}: {run}", flush=True)
    return run


def references(out: Path, arch: str, pair: str, regime: str, seed: int, datas, source, epochs: int,
               patience: int | None = None):
    """Task A's and B's models (and the source model in the shared regime), cached."""
    import keras

    from mtz_mobile.reference import build_reference

    root = out / "refs" / f"{arch}-{pair}-{regime}-s{seed}"
    root.mkdir(parents=True, exist_ok=True)
    done = root / "refs.json"
    if done.exists():
        return json.loads(done.read_text())
    shape = datas["a"].x_train.shape[1:]
    rec = {"paths": {}, "iterations": 0, "source": None, "runs": {}, "epochs": epochs, "patience": patience}
    base = None
    t0 = time.perf_counter()
    if regime == "shared":
        keras.utils.set_random_seed(1000 + seed)   # the initial weights too: deterministic under the seed
        base = build_reference(arch, shape, source.num_classes)
        rec["runs"]["source"] = train(base, source, epochs, 1000 + seed, patience)
        base.save(root / "source.keras")
        rec["source"] = str(root / "source.keras")
    for n, (t, d) in enumerate(datas.items()):
        keras.utils.set_random_seed(10 * seed + n + 1)
        model = build_reference(arch, shape, d.num_classes)
        if base is not None:   # a copy of the backbone; the head, for this task's classes, is new
            for mine, pretrained in zip(model.layers[:-1], base.layers[:-1]):
                mine.set_weights(pretrained.get_weights())
        rec["runs"][t] = train(model, d, epochs, 10 * seed + n + 1, patience)
        rec["iterations"] = max(rec["iterations"], rec["runs"][t]["iterations"])
        model.save(root / f"{t}.keras")
        rec["paths"][t] = str(root / f"{t}.keras")
        # beside the model, as train-reference writes it: `zip` reads its steps from here
        (root / f"{t}.json").write_text(json.dumps({"path": str(root / f"{t}.keras"), **rec["runs"][t]}))
    rec["seconds"] = round(time.perf_counter() - t0, 1)
    done.write_text(json.dumps(rec, indent=1))
    return rec


def run_method(method: str, rec: dict, datas: dict, seed: int, steps: int, out: Path, levels) -> dict:
    from mtz_mobile import api
    from mtz_mobile.baselines import frozen_trunk, multitask_finetune
    from mtz_mobile.graph.keras_io import read_model
    from mtz_mobile.graph.network import ZippedNetwork
    from mtz_mobile.zipper.run import zip_networks

    models = {t: read_model(p) for t, p in rec["paths"].items()}
    # the training split's hold-out, as the references were early-stopped on it; never the test set
    datas = {t: d.holdout(SPLIT) for t, d in datas.items()}
    options = dict(retrain_iterations=steps, validation_split=SPLIT, seed=seed, calibration_samples=2000)
    t0, note = time.perf_counter(), ""
    if method in ZIP_METHODS:
        result = zip_networks(models, datas, api.make_config(shared=[1.0], **options, **ZIP_METHODS[method]),
                              progress=False)
    elif method == "frozen":
        result = frozen_trunk(models, datas, api.make_config(**options))   # every hidden layer: A's trunk
    elif method == "multitask":
        trunk = read_model(rec["source"]) if rec["source"] else None
        result = multitask_finetune(models, datas, api.make_config(**options), trunk=trunk)
    else:
        result, note, point = budget_search(rec, datas, seed, out, levels)
        if result is None:
            return _uncertified_row(point, steps, time.perf_counter() - t0, note)
    original = ZippedNetwork.from_models(models)
    row = {"shared_pct": round(100 * result.plan.params["shared_fraction"], 2), "retrain_steps": steps,
           "seconds": round(time.perf_counter() - t0, 1), "note": note}
    for t, d in datas.items():
        v = result.plan.validation[t]
        row[f"{t}_val_pp"], row[f"{t}_bound_pp"] = round(v["point_pp"], 3), round(v["upper_pp"], 3)
        row[f"{t}_test_pp"] = round(100 * (error_rate(result.network.predict(t, d.x_test), d.y_test)
                                           - error_rate(original.predict(t, d.x_test), d.y_test)), 3)
    row["worse_test_pp"] = max(row["a_test_pp"], row["b_test_pp"])
    row["certified_0.5"] = "yes" if max(row["a_bound_pp"], row["b_bound_pp"]) <= 0.5 else "no"
    return row


def _uncertified_row(point: dict, steps: int, seconds: float, note: str) -> dict:
    """A budget search that certified nothing: its least-bound point's validation, no test figures."""
    row = {"shared_pct": round(100 * point["shared_fraction"], 2), "retrain_steps": steps, "seconds": round(seconds, 1),
           "note": note, "certified_0.5": "no", "a_test_pp": "", "b_test_pp": "", "worse_test_pp": ""}
    for t, v in point["validation"].items():
        row[f"{t}_val_pp"], row[f"{t}_bound_pp"] = round(v["point_pp"], 3), round(v["upper_pp"], 3)
    return row


def budget_search(rec: dict, datas: dict, seed: int, out: Path, levels) -> tuple:
    """``mtz-mobile zip A B --budget 0.5`` through the API, the default preset (steps: a tenth of the
    references' training, read from the records beside them); the zip and its frontier under
    OUT/zips. Returns (ZipResult, note, None), or where no point is certified (None, note, the
    point with the smallest worst bound: its validation only, no zip to test)."""
    from mtz_mobile import api
    from mtz_mobile.errors import MTZError
    from mtz_mobile.zipper.budget import frontier_dir
    from mtz_mobile.zipper.sweep import load_sweep

    where = out / "zips" / f"{Path(rec['paths']['a']).parent.name}-budget"
    search = {"levels": list(levels)} if levels else {}
    try:
        result = api.zip_models(list(rec["paths"].values()), where, data=datas, names=list(rec["paths"]), seed=seed,
                                validation_split=SPLIT, calibration_samples=2000, budget=BUDGET_PP, resume=True,
                                overwrite=False, progress=False, **search)
    except MTZError as err:
        points = load_sweep(frontier_dir(where))["points"]
        if not points or any(p["within_budget"] for p in points):
            raise
        best = min(points, key=lambda p: max(v["upper_pp"] for v in p["validation"].values()))
        tried = ", ".join(f"α {p['alpha']:g}" for p in points)
        return None, (f"none certified ({tried} at level {best['level']:g}); least bound: α {best['alpha']:g}; "
                      f"{err}"[:300]), best
    config = result.plan.settings
    return result, f"kept α {config['alpha']:g}, level {config['shared'][0]:g}", None


def _done(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open())) if path.exists() else []


def _key(row: dict) -> tuple:
    return tuple(str(row[k]) for k in ("arch", "pair", "regime", "method", "seed"))


def write_outputs(out: Path, rows: list[dict]) -> None:
    head = ["arch", "pair", "regime", "method", "seed", "shared %", "A: val (bound)", "B: val (bound)",
            "A: test", "B: test", "certified ≤ 0.5 pp", "s"]
    body = [[r["arch"], r["pair"], r["regime"], r["method"], r["seed"], r["shared_pct"],
             f"{float(r['a_val_pp']):+.2f} (≤ {float(r['a_bound_pp']):+.2f})",
             f"{float(r['b_val_pp']):+.2f} (≤ {float(r['b_bound_pp']):+.2f})",
             _pp(r["a_test_pp"]), _pp(r["b_test_pp"]), r["certified_0.5"], r["seconds"]]
            for r in rows]
    (out / "regimes.md").write_text("Error increase (pp) against each task's own model, every hidden layer "
                                    "shared.\n\n" + markdown_table(head, body) + "\n")
    plot(out, rows)


def _pp(value) -> str:
    return "–" if str(value) == "" else f"{float(value):+.2f}"


def plot(out: Path, rows: list[dict]) -> None:
    from mtz_mobile.png import pyplot, save_png

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.2))
    for n, method in enumerate(METHODS):
        pts = [r for r in rows if r["method"] == method and str(r["worse_test_pp"]) != ""]
        if pts:
            ax.scatter([float(r["shared_pct"]) + 0.3 * n for r in pts], [float(r["worse_test_pp"]) for r in pts],
                       label=method, marker="os^Dv"[n])
    ax.axhline(0, color="black", lw=0.5)
    ax.set_xlabel("parameters shared (%)")
    ax.set_ylabel("worse task's test error increase (pp)")
    ax.legend(fontsize=7)
    save_png(fig, out / "regimes.png")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--arch", default="lenet5", choices=["lenet5", "mlp", "mobilenet_v2"])
    p.add_argument("--pairs", nargs="+", default=["a"], choices=["a", "b"])
    p.add_argument("--regimes", nargs="+", default=["shared", "independent"], choices=["shared", "independent"])
    p.add_argument("--methods", nargs="+", default=list(METHODS[:5]), choices=list(METHODS),
                   help="default: the five at equal stored bytes; budget (the one-command search) on request")
    p.add_argument("--seeds", type=int, nargs="+", default=[0])
    p.add_argument("--epochs", type=int, default=5, help="training epochs of each reference (and the source); "
                   "with --early-stopping the most")
    p.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                   help="stop each reference after PATIENCE epochs without a lower hold-out error")
    p.add_argument("--budget-levels", type=float, nargs="+", default=None,
                   help="the budget method's sharing levels (default: zip --budget's own)")
    p.add_argument("--retrain-fraction", type=float, default=0.1, help="steps: this fraction of one reference's")
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    rows = _done(args.out / "rows.csv")
    finished = {_key(r) for r in rows}
    for pair in args.pairs:
        datas, source = pair_data(pair, args.arch)
        for regime in args.regimes:
            for seed in args.seeds:
                rec = references(args.out, args.arch, pair, regime, seed, datas, source, args.epochs,
                                 args.early_stopping)
                steps = max(1, round(args.retrain_fraction * rec["iterations"]))
                for method in args.methods:
                    row = {"arch": args.arch, "pair": pair, "regime": regime, "method": method, "seed": seed}
                    if _key(row) in finished:
                        continue
                    print(f"{_key(row)} …", flush=True)
                    row.update(run_method(method, rec, datas, seed, steps, args.out, args.budget_levels))
                    print(f"  {row}", flush=True)
                    rows.append(row)
                    _append(args.out / "rows.csv", row)
    write_outputs(args.out, rows)
    return 0


def _append(path: Path, row: dict) -> None:
    new = not path.exists()
    with path.open("a", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=FIELDS)
        if new:
            writer.writeheader()
        writer.writerow(row)


if __name__ == "__main__":
    sys.exit(main())

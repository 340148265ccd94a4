#!/usr/bin/env python3
"""The paper's experiments on Fashion-MNIST (He, Zhou & Thiele, NeurIPS 2018, arXiv 1805.09791),
written as JSON, CSV and Markdown tables (and a PNG for Fig. 2) under --out.

    python tools/experiments/reproduce.py --exp all --out results/            # everything (about 18 min on 2 cores)
    python tools/experiments/reproduce.py --exp fig2 --out results/           # one experiment
    python tools/experiments/reproduce.py --exp all --quick --out /tmp/smoke  # smoke run on data slices (about 2 min)

Experiments (tasks a/b = two LeNets trained with seeds 1 and 2 on the 10 item types, hidden units
and channels randomly permuted afterwards; "fine"/"coarse" = the 10 item types / 5 coarse groups
of the same images):

  lenet300  two LeNet-300-100: (1) layer 1 fully shared, no retraining, MTZ vs random, with and
            without our next-layer compensation; (2) both layers fully shared with light
            retraining, over several zip seeds.
  fig2      Fig. 2 analogue: test error vs number of shared neurons (layer 1, then layer 2) of the
            same LeNet-300-100 pair, no retraining: MTZ as in the paper (compensation "none"),
            MTZ + next-layer compensation (ours), random sharing with and without compensation
            (mean and range over seeds); PNG and CSV.
  table1    Table 1 analogue: LeNet-300-100 and LeNet-5 (Caffe widths 20/50/500), dense and
            magnitude-pruned to Han et al.'s densities then fine-tuned with masks; every hidden
            layer shared, light retraining after each layer; sparse zips with the paper's mask,
            the union mask, and a longer retraining; nonzero counts from the plans.
  table3    Table 2/3 analogue, different tasks on the same images (fine vs coarse, LeNet-5): full
            zip (MTZ and random) and adaptive zip under a 0.5 pp validation budget, with and without
            retraining; Ñ_l per layer and the shared fraction.
  resnet    a ResNet pair (width 16, BatchNorm folded by the reader) for fine vs coarse: all
            layers shared and half the channels of every layer shared, with retraining.

Reference models are cached under --out/refs (and --out/reference_e*), so re-runs only zip
again. Every number written is measured; retraining iterations are summed from the plans'
layer records. Results are deterministic under the seeds (TensorFlow op determinism is on).
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np

from mtz_mobile.data import TaskData, error_rate, load_task_data
from mtz_mobile.fileio import write_atomic
from mtz_mobile.graph.keras_io import load_keras_model, read_model, save_keras_atomic
from mtz_mobile.markdown import markdown_table
from mtz_mobile.prune import HAN_LENET_5, HAN_LENET_300_100, fine_tune_pruned, kernel_densities, prune_model
from mtz_mobile.reference import train_reference_pair
from mtz_mobile.zipper.config import RetrainSettings
from mtz_mobile.zipper import ZipConfig, zip_networks

PAPER = "He, Zhou & Thiele, Multi-Task Zipping via Layer-wise Neuron Sharing, NeurIPS 2018 (arXiv 1805.09791)"


# ----- settings --------------------------------------------------------------------------------

@dataclass
class Settings:
    """Everything that sizes a run. ``quick()`` is the smoke-test variant."""

    quick: bool = False
    n_train: int | None = None        # training images per task (None: all 60,000)
    n_test: int | None = None         # test images per task (None: all 10,000)
    mlp_epochs: int = 8               # LeNet-300-100 references (as `mtz-mobile train`)
    lenet5_epochs: int = 4
    resnet_epochs: int = 3
    resnet_train: int | None = None   # ResNet references train on this many images (None: all)
    prune_epochs: int = 3             # masked fine-tuning of the pruned references
    prune_lr: float = 1e-3
    batch_size: int = 128
    retrain_mlp: int = 90             # light retraining iterations after each zipped layer
    retrain_lenet5: int = 100
    retrain_resnet: int = 40
    resnet_schedule: str = "layer"   # "end": one retraining call after the last layer (one graph trace, not nine)
    retrain_lr: float = 1e-4
    calib_dense: int = 10000          # calibration images for the Hessians (ZipConfig default)
    calib_conv: int = 2000
    calib_resnet: int = 1000
    validation_split: float = 0.1     # of each task's training data, held out for the adaptive search
    budget_pp: float = 0.5
    lenet300_seeds: list = field(default_factory=lambda: [0, 1, 2])
    fig2_layer1: list = field(default_factory=lambda: [0, 25, 50, 100, 150, 200, 250, 300])
    fig2_layer2: list = field(default_factory=lambda: [0, 10, 20, 40, 60, 80, 100])
    random_seeds: list = field(default_factory=lambda: [0, 1, 2])
    zip_seed: int = 0

    @classmethod
    def quick_settings(cls) -> "Settings":
        return cls(quick=True, n_train=2000, n_test=1000, mlp_epochs=1, lenet5_epochs=1, resnet_epochs=1,
                   resnet_train=1000, prune_epochs=1, retrain_mlp=5, retrain_lenet5=5, retrain_resnet=18,
                   resnet_schedule="end",
                   calib_dense=500, calib_conv=300, calib_resnet=100, validation_split=0.2, budget_pp=2.0,
                   lenet300_seeds=[0],
                   fig2_layer1=[0, 150, 300], fig2_layer2=[0, 50, 100], random_seeds=[0])


def no_retrain() -> RetrainSettings:
    return RetrainSettings(iterations=0)


def retrain(s: Settings, iterations: int, paper: bool = False, schedule: str = "layer") -> RetrainSettings:
    """Light retraining as configured; ``paper``: the paper's loss (labels only, no distillation)."""
    extra = {"distill": 0.0} if paper else {}
    return RetrainSettings(iterations=iterations, learning_rate=s.retrain_lr, batch_size=s.batch_size,
                           schedule=schedule, learning_rate_schedule="constant", **extra)


# ----- output ----------------------------------------------------------------------------------

def write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=1, default=_json_default) + "\n")


def _json_default(v):
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating,)):
        return float(v)
    if isinstance(v, np.ndarray):
        return v.tolist()
    raise TypeError(f"not JSON serialisable: {type(v).__name__}")


def write_csv(path: Path, rows: list[dict]) -> None:
    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _csv_value(r.get(k)) for k in columns})
    write_atomic(path, buf.getvalue())


def _csv_value(v):
    if isinstance(v, float):
        return f"{v:.6g}"
    if isinstance(v, (list, tuple, dict)):
        return json.dumps(v, default=_json_default)
    return "" if v is None else v


def pct(v: float | None) -> str:
    return "–" if v is None else f"{100 * v:.2f} %"


def num(n: int) -> str:
    return f"{n:,}".replace(",", "\u2009")


def pp(v: float) -> str:
    return f"{100 * v:+.2f}"


def say(*parts) -> None:
    print(*parts, flush=True)


# ----- data and references ---------------------------------------------------------------------

def keras_input(model, x: np.ndarray) -> np.ndarray:
    return x.reshape((len(x),) + tuple(model.input_shape[1:]))


def keras_error(model, data: TaskData) -> float:
    return error_rate(model.predict(keras_input(model, data.x_test), batch_size=2048, verbose=0), data.y_test)


def mlp_pair(out: Path, data: TaskData, epochs: int, s: Settings):
    """The two LeNet-300-100 of `lenet300`/`fig2`/`table1` (train_reference_pair: seeds 1, 2, permuted)."""
    ref_dir = out / (f"reference_e{epochs}" + (f"_n{len(data.x_train)}" if s.n_train else ""))
    if not (ref_dir / "reference.json").exists():
        say(f"training two LeNet-300-100 ({epochs} epochs) into {ref_dir}")
        train_reference_pair([data, data], ref_dir, epochs=epochs, batch_size=s.batch_size, verbose=0,
                             overwrite=ref_dir.exists())
    records = json.loads((ref_dir / "reference.json").read_text())
    return {"a": ref_dir / "a.keras", "b": ref_dir / "b.keras"}, records


ARCH = {"lenet300": "mlp", "lenet5": "lenet5", "resnet16": "resnet"}   # reference.build_reference's names


def reference(out: Path, kind: str, data: TaskData, seed: int, epochs: int, s: Settings,
              n_train: int | None = None, permute: bool = True) -> dict:
    """Train (reference.train_reference: Adam, op determinism, permuted hidden units and channels
    for chains) or load from the cache one reference model; returns its record."""
    from mtz_mobile.reference import train_reference

    data = data.head(n_train=n_train)
    name = f"{kind}_{data.spec}_s{seed}_e{epochs}_n{len(data.x_train)}" + ("_perm" if permute else "")
    path = out / "refs" / f"{name}.keras"
    rec_path = path.with_suffix(".json")
    if path.exists() and rec_path.exists():
        return json.loads(rec_path.read_text())
    path.parent.mkdir(parents=True, exist_ok=True)
    say(f"training {name} ({len(data.x_train)} images, {epochs} epochs)")
    t0 = time.perf_counter()
    rec = asdict(train_reference(data, path, seed, epochs=epochs, batch_size=s.batch_size, permute=permute,
                                 verbose=0, arch=ARCH[kind]))
    rec.update(kind=kind, train_images=len(data.x_train), params=int(load_keras_model(path).count_params()),
               train_seconds=round(time.perf_counter() - t0, 1))
    write_json(rec_path, rec)
    return rec


def pruned_reference(out: Path, rec: dict, densities, data: TaskData, s: Settings) -> dict:
    """The reference pruned by magnitude to ``densities`` and fine-tuned with its masks (cached)."""
    src = Path(rec["path"])
    tag = "-".join(f"{round(100 * d)}" for d in densities)
    path = src.with_name(f"{src.stem}_pruned{tag}_ft{s.prune_epochs}_lr{s.prune_lr:g}.keras")
    rec_path = path.with_suffix(".json")
    if path.exists() and rec_path.exists():
        return json.loads(rec_path.read_text())
    say(f"pruning {src.stem} to densities {list(densities)} and fine-tuning {s.prune_epochs} epoch(s)")
    model = load_keras_model(src)
    masks = prune_model(model, densities)
    err_pruned = keras_error(model, data)
    ft = fine_tune_pruned(model, masks, keras_input(model, data.x_train), data.y_train, epochs=s.prune_epochs,
                          batch_size=s.batch_size, learning_rate=s.prune_lr, seed=rec["seed"])
    save_keras_atomic(model, path)
    new = dict(rec, name=path.stem, path=str(path), densities_target=list(densities),
               densities=kernel_densities(model), error_after_pruning=err_pruned,
               fine_tune_iterations=ft.iterations, iterations=rec["iterations"] + ft.iterations,
               test_error=keras_error(model, data),
               nonzero_weights=int(sum(np.count_nonzero(w) for w in model.get_weights())))
    write_json(rec_path, new)
    return new


# ----- zipping ---------------------------------------------------------------------------------

def zip_pair(paths: dict[str, str | Path], datas: dict[str, TaskData], cfg: ZipConfig):
    models = {t: read_model(p) for t, p in paths.items()}
    return zip_networks(models, datas, cfg, progress=False)


def net_errors(net, datas: dict[str, TaskData]) -> dict[str, float]:
    from mtz_mobile.graph.ops import TFOps

    ops = TFOps()
    return {t: error_rate(net.predict(t, d.x_test, ops=ops), d.y_test) for t, d in datas.items()}


def retrain_iterations(plan) -> int:
    per_layer = sum(layer.retrain.get("iterations", 0) for layer in plan.layers)
    return int(per_layer + plan.final_retrain.get("iterations", 0))


def layer_counts(plan) -> list[int]:
    return [layer.n_shared for layer in plan.layers]


def layer_widths(plan) -> list[int]:
    return [min(layer.n_existing, layer.n_new) for layer in plan.layers]


# ----- lenet300 ----------------------------------------------------------------------------------

def exp_lenet300(out: Path, datas: dict[str, TaskData], s: Settings) -> dict:
    data = datas["fine"]
    paths, records = mlp_pair(out, data, s.mlp_epochs, s)
    base = {r["name"]: r["test_error"] for r in records}
    train_iters = records[0]["iterations"]
    two = {"a": data, "b": data}
    rows = []
    md = [f"Reference: errors a {pct(base['a'])}, b {pct(base['b'])}, {train_iters} training iterations each\n",
          "### (1) first hidden layer fully shared, no retraining\n"]
    table = []
    variants = [("MTZ (paper: metric + merge)", dict(method="mtz", compensation="none")),
                ("MTZ + next-layer compensation", dict(method="mtz", compensation="next-layer")),
                ("random sharing (paper's baseline)", dict(method="random", compensation="none")),
                ("random sharing + next-layer compensation", dict(method="random", compensation="next-layer"))]
    for label, kw in variants:
        cfg = ZipConfig(shared=["all", 0], retrain=no_retrain(), seed=s.lenet300_seeds[0],
                        calibration_samples=s.calib_dense, **kw)
        errs = net_errors(zip_pair(paths, two, cfg).network, two)
        inc = (errs["a"] - base["a"] + errs["b"] - base["b"]) / 2
        rows.append({"exp": "layer1", "method": label, "error_a": errs["a"], "error_b": errs["b"],
                     "increase_pp": 100 * inc})
        table.append([label, pct(errs["a"]), pct(errs["b"]), pp(inc)])
        say(f"  lenet300 layer 1, {label}: a {pct(errs['a'])}, b {pct(errs['b'])}")
    md += [markdown_table(["method", "error a", "error b", "mean increase (pp)"], table), ""]

    md.append(f"### (2) both hidden layers fully shared, {s.retrain_mlp} retraining iterations after each layer\n")
    table = []
    for label, comp, method in (("MTZ + compensation", "next-layer", "mtz"), ("MTZ (paper)", "none", "mtz"),
                                ("random + compensation", "next-layer", "random")):
        for seed in s.lenet300_seeds:
            cfg = ZipConfig(shared=["all"], method=method, compensation=comp, seed=seed,
                            calibration_samples=s.calib_dense,
                            retrain=retrain(s, s.retrain_mlp, paper=(label == "MTZ (paper)")))
            result = zip_pair(paths, two, cfg)
            errs = net_errors(result.network, two)
            iters = retrain_iterations(result.plan)
            rows.append({"exp": "full", "method": label, "seed": seed, "error_a": errs["a"], "error_b": errs["b"],
                         "delta_a_pp": 100 * (errs["a"] - base["a"]), "delta_b_pp": 100 * (errs["b"] - base["b"]),
                         "retrain_iterations": iters, "train_iterations": train_iters,
                         "shared_fraction": result.plan.params["shared_fraction"]})
            table.append([label, seed, f"{pct(errs['a'])} ({pp(errs['a'] - base['a'])})",
                          f"{pct(errs['b'])} ({pp(errs['b'] - base['b'])})", iters,
                          f"1/{train_iters / max(iters, 1):.1f}"])
            say(f"  lenet300 full, {label}, seed {seed}: a {pct(errs['a'])}, b {pct(errs['b'])}, {iters} iterations")
    md += [markdown_table(["method", "zip seed", "error a (Δ pp)", "error b (Δ pp)", "retraining iterations",
                           "/ training iterations"], table), ""]
    full = [r for r in rows if r["exp"] == "full" and r["method"] == "MTZ + compensation"]
    md.append(f"MTZ + compensation over zip seeds {s.lenet300_seeds}: median Δa "
              f"{statistics.median(r['delta_a_pp'] for r in full):+.2f} pp, median Δb "
              f"{statistics.median(r['delta_b_pp'] for r in full):+.2f} pp, worst "
              f"{max(max(r['delta_a_pp'], r['delta_b_pp']) for r in full):+.2f} pp\n")
    return {"reference": records, "rows": rows, "markdown": "\n".join(md)}


# ----- fig2 ------------------------------------------------------------------------------------

FIG2_CURVES = [  # (key, label, method, compensation)
    ("mtz", "MTZ (paper's method)", "mtz", "none"),
    ("mtz_comp", "MTZ + next-layer compensation (ours)", "mtz", "next-layer"),
    ("random", "random sharing", "random", "none"),
    ("random_comp", "random sharing + next-layer compensation", "random", "next-layer"),
]


def exp_fig2(out: Path, datas: dict[str, TaskData], s: Settings) -> dict:
    """Panel (a): Ñ_1 shared in layer 1, layer 2 not shared. Panel (b): layer 1 fully shared (by the
    same method), Ñ_2 shared in layer 2. (With layer 1 not shared a layer-2 unit has no shared
    inputs, so sharing it would share its bias only.)"""
    data = datas["fine"]
    paths, records = mlp_pair(out, data, s.mlp_epochs, s)
    base = {r["name"]: r["test_error"] for r in records}
    two = {"a": data, "b": data}
    rows = []
    for panel, counts in (("layer1", s.fig2_layer1), ("layer2", s.fig2_layer2)):
        for key, label, method, comp in FIG2_CURVES:
            for k in counts:
                seeds = s.random_seeds if method == "random" else [s.zip_seed]
                errs_by_seed = []
                for seed in seeds:
                    shared = [k, 0] if panel == "layer1" else ["all", k]
                    cfg = ZipConfig(shared=shared, method=method, compensation=comp, retrain=no_retrain(),
                                    seed=seed, calibration_samples=s.calib_dense)
                    errs_by_seed.append(net_errors(zip_pair(paths, two, cfg).network, two))
                means = [(e["a"] + e["b"]) / 2 for e in errs_by_seed]
                row = {"panel": panel, "curve": key, "label": label, "method": method, "compensation": comp,
                       "layer1_shared": (k if panel == "layer1" else 300), "layer2_shared": (0 if panel == "layer1" else k),
                       "shared": k, "seeds": seeds,
                       "error_a": statistics.mean(e["a"] for e in errs_by_seed),
                       "error_b": statistics.mean(e["b"] for e in errs_by_seed),
                       "error_mean": statistics.mean(means), "error_min": min(means), "error_max": max(means)}
                rows.append(row)
                say(f"  fig2 {panel} {key} k={k}: mean error {pct(row['error_mean'])}"
                    + (f" (range {pct(row['error_min'])}–{pct(row['error_max'])})" if len(seeds) > 1 else ""))
    png = out / "fig2.png"
    plot_fig2(rows, base, png, s)
    md = [f"Reference errors: a {pct(base['a'])}, b {pct(base['b'])} (mean {pct((base['a'] + base['b']) / 2)}). "
          "Mean test error of a and b after sharing, no retraining; random sharing: mean (and range) over zip "
          f"seeds {s.random_seeds}.\n"]
    for panel, counts, title in (("layer1", s.fig2_layer1, "layer 1 (300 units); layer 2 not shared"),
                                 ("layer2", s.fig2_layer2, "layer 2 (100 units); layer 1 fully shared by the same method")):
        table = []
        for k in counts:
            line = [k]
            for c in FIG2_CURVES:
                r = next(r for r in rows if r["panel"] == panel and r["curve"] == c[0] and r["shared"] == k)
                line.append(pct(r["error_mean"]) + (f" ({pct(r['error_min'])}–{pct(r['error_max'])})"
                                                    if len(r["seeds"]) > 1 else ""))
            table.append(line)
        md += [f"#### Shared neurons in {title}\n",
               markdown_table(["shared Ñ"] + [c[1] for c in FIG2_CURVES], table), ""]
    md.append(f"![Fig. 2 analogue]({png.name})\n")
    return {"reference": records, "rows": rows, "markdown": "\n".join(md), "png": str(png)}


def plot_fig2(rows: list[dict], base: dict, path: Path, s: Settings) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FormatStrFormatter, NullFormatter

    styles = {"mtz": ("tab:blue", "-", "o"), "mtz_comp": ("tab:green", "-", "s"), "random": ("tab:red", "-", "^"),
              "random_comp": ("tab:orange", "--", "v")}
    fig, axes = plt.subplots(1, 2, figsize=(10, 4.4))
    ref = 100 * (base["a"] + base["b"]) / 2
    for ax, panel, title in ((axes[0], "layer1", "(a) layer 1 of LeNet-300-100"),
                             (axes[1], "layer2", "(b) layer 2 (layer 1 fully shared)")):
        for key, label, *_ in FIG2_CURVES:
            pts = [r for r in rows if r["panel"] == panel and r["curve"] == key]
            if not pts:
                continue
            color, ls, marker = styles[key]
            x = [r["shared"] for r in pts]
            ax.plot(x, [100 * r["error_mean"] for r in pts], ls, color=color, marker=marker, ms=4, label=label)
            if key.startswith("random") and len(s.random_seeds) > 1:
                ax.fill_between(x, [100 * r["error_min"] for r in pts], [100 * r["error_max"] for r in pts],
                                color=color, alpha=0.15, lw=0)
        ax.axhline(ref, color="gray", lw=0.8, ls=":", label="references (mean)")
        ax.set_yscale("log")
        lo, hi = ax.get_ylim()
        ax.set_yticks([t for t in (5, 10, 12, 15, 20, 30, 40, 50, 60, 70, 80, 90) if lo <= t <= hi])
        ax.yaxis.set_major_formatter(FormatStrFormatter("%g"))
        ax.yaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel("number of shared neurons")
        ax.set_ylabel("mean test error of a and b (%)")
        ax.set_title(title, fontsize=10)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="lower center", ncol=3, fontsize=8, frameon=False)
    fig.suptitle("Fashion-MNIST, two LeNet-300-100, no retraining" + (" (quick smoke run)" if s.quick else ""),
                 fontsize=10)
    fig.tight_layout(rect=(0, 0.1, 1, 1))
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90)
    plt.close(fig)
    write_atomic(path, buf.getvalue())


# ----- table1 ----------------------------------------------------------------------------------

def exp_table1(out: Path, datas: dict[str, TaskData], s: Settings) -> dict:
    data = datas["fine"]
    two = {"a": data, "b": data}
    paths, records = mlp_pair(out, data, s.mlp_epochs, s)
    mlp_recs = [dict(r, kind="lenet300") for r in records]
    lenet5_recs = [reference(out, "lenet5", data, seed, s.lenet5_epochs, s) for seed in (1, 2)]
    rows, table, sparse_table = [], [], []
    for net_name, recs, densities, iters, calib in (
            ("LeNet-300-100", mlp_recs, HAN_LENET_300_100, s.retrain_mlp, s.calib_dense),
            ("LeNet-5", lenet5_recs, HAN_LENET_5, s.retrain_lenet5, s.calib_conv)):
        plain_errors = {}
        for variant, sparse, mask, mult, lr in (
                ("dense", "off", "larger", 1, s.retrain_lr),
                ("sparse", "on", "larger", 1, s.retrain_lr),
                ("sparse, union mask", "on", "union", 1, s.retrain_lr),
                ("sparse, 5× retraining at lr 1e-3", "on", "larger", 5, 1e-3)):
            recs_v = recs if sparse == "off" else [pruned_reference(out, r, densities, data, s) for r in recs]
            p = {"a": recs_v[0]["path"], "b": recs_v[1]["path"]}
            base = {"a": recs_v[0]["test_error"], "b": recs_v[1]["test_error"]}
            common = dict(shared=["all"], sparse=sparse, seed=s.zip_seed, calibration_samples=calib, sparse_mask=mask)
            say(f"  table1 {net_name} {variant}: zipping (no retraining, then {mult * iters} iterations per layer)")
            if (sparse, mask) not in plain_errors:
                plain_errors[sparse, mask] = net_errors(zip_pair(p, two, ZipConfig(retrain=no_retrain(), **common))
                                                        .network, two)
            err0 = plain_errors[sparse, mask]
            settings = RetrainSettings(iterations=mult * iters, learning_rate=lr, batch_size=s.batch_size,
                                       schedule="layer", learning_rate_schedule="constant")   # the paper's
            result = zip_pair(p, two, ZipConfig(retrain=settings, **common))
            errs = net_errors(result.network, two)
            params = result.plan.params
            rit = retrain_iterations(result.plan)
            row = {"network": net_name, "variant": variant, "err_a": base["a"], "err_b": base["b"],
                   "zip_err_a": err0["a"], "zip_err_b": err0["b"], "re_err_a": errs["a"], "re_err_b": errs["b"],
                   "retrain_iterations": rit, "retrain_iterations_per_layer": mult * iters, "retrain_lr": lr,
                   "sparse_mask": mask if sparse == "on" else None,
                   "train_iterations_one_reference": recs_v[0]["iterations"],
                   "layers": [l.name for l in result.plan.layers], "shared_per_layer": layer_counts(result.plan),
                   "sparse_detected": result.plan.settings["sparse_detected"],
                   "params_per_task": params["per_task"], "params_separate_total": params["separate_total"],
                   "params_zipped": params["zipped"], "shared_fraction": params["shared_fraction"],
                   "nonzero_per_task": params["nonzero_per_task"], "nonzero_zipped": params["nonzero_zipped"]}
            if sparse == "on":
                row.update({"densities_a": recs_v[0]["densities"], "densities_b": recs_v[1]["densities"],
                            "nonzero_references": recs_v[0]["nonzero_weights"] + recs_v[1]["nonzero_weights"],
                            "err_a_after_pruning": recs_v[0]["error_after_pruning"],
                            "err_b_after_pruning": recs_v[1]["error_after_pruning"],
                            "fine_tune_iterations": recs_v[0]["fine_tune_iterations"]})
            rows.append(row)
            say(f"  table1 {net_name} {variant}: err a {pct(base['a'])} b {pct(base['b'])}; zipped "
                f"{pct(err0['a'])}/{pct(err0['b'])}; retrained {pct(errs['a'])}/{pct(errs['b'])} ({rit} iterations)")
            table.append([net_name, variant, pct(base["a"]), pct(base["b"]), f"{pct(err0['a'])} / {pct(err0['b'])}",
                          f"{pct(errs['a'])} / {pct(errs['b'])}", rit, row["train_iterations_one_reference"],
                          f"{100 * params['shared_fraction']:.1f} %"])
            if sparse == "on":
                dens = " / ".join(f"{100 * v:.0f}" for v in recs_v[0]["densities"].values())
                sparse_table.append([net_name, variant, dens, num(row["nonzero_references"]),
                                     " / ".join(num(v) for v in params["nonzero_per_task"].values()),
                                     num(params["nonzero_zipped"]), num(params["zipped"])])
    md = ["Every hidden layer shared (Ñ_l = all units/channels); light retraining after each layer. "
          "err_A/err_B: the references; 'zipped': after zipping with no retraining; re-err_C: after zipping "
          f"and retraining (Adam, lr {s.retrain_lr:g} unless the row says otherwise). Training iterations: one "
          "reference (sparse: + masked fine-tuning).\n",
          markdown_table(["network", "", "err_A", "err_B", "zipped, no retraining (A / B)", "re-err_C (A / B)",
                          "retraining iterations", "training iterations (one reference)", "shared params"], table), "",
          "Sparse references and the zipped network. 'sparse': a merged unit keeps the mask of the unit with "
          "more connections (paper §3.6); 'union mask': it keeps both units' connections. Merged weights are "
          "the constrained optimum on the kept connections; masks are kept during retraining.\n",
          markdown_table(["network", "zip", "reference A density per layer (%)", "nonzero weights A+B (references)",
                          "nonzero per task after zipping (A / B)", "nonzero stored (zipped)",
                          "stored weights (zipped)"], sparse_table), ""]
    return {"reference": {"lenet300": mlp_recs, "lenet5": lenet5_recs}, "rows": rows, "markdown": "\n".join(md)}


# ----- table3 ----------------------------------------------------------------------------------

def exp_table3(out: Path, datas: dict[str, TaskData], s: Settings) -> dict:
    """Fine (10 item types) vs coarse (5 groups) LeNet-5 on the same images."""
    fine, coarse = datas["fine"], datas["coarse"]
    recs = {"fine": reference(out, "lenet5", fine, 1, s.lenet5_epochs, s),
            "coarse": reference(out, "lenet5", coarse, 2, s.lenet5_epochs, s)}
    paths = {t: r["path"] for t, r in recs.items()}
    two = {"fine": fine, "coarse": coarse}
    base = {t: keras_error(load_keras_model(paths[t]), two[t]) for t in two}
    it = s.retrain_lenet5
    common = dict(seed=s.zip_seed, calibration_samples=s.calib_conv, validation_split=s.validation_split)
    runs = []

    def run(label, cfg):
        say(f"  table3 {label}")
        result = zip_pair(paths, two, cfg)
        errs = net_errors(result.network, two)
        runs.append((label, cfg, result, errs))
        return result

    run("full zip, no retraining", ZipConfig(shared=["all"], retrain=no_retrain(), **common))
    run("full zip, retrained", ZipConfig(shared=["all"], retrain=retrain(s, it), **common))
    run("full zip, random sharing + compensation, retrained",
        ZipConfig(shared=["all"], method="random", retrain=retrain(s, it), **common))
    adaptive = run(f"adaptive, budget {s.budget_pp} pp, retrained",
                   ZipConfig(max_error_increase=s.budget_pp, retrain=retrain(s, it), **common))
    chosen = layer_counts(adaptive.plan)
    run("adaptive's Ñ_l, no retraining", ZipConfig(shared=chosen, retrain=no_retrain(), **common))
    run("adaptive's Ñ_l, paper's method (no compensation), retrained",
        ZipConfig(shared=chosen, compensation="none", retrain=retrain(s, it, paper=True), **common))

    rows, table = [], []
    widths = layer_widths(runs[0][2].plan)
    names = [l.name for l in runs[0][2].plan.layers]
    for label, cfg, result, errs in runs:
        params = result.plan.params
        search = [l.search for l in result.plan.layers]
        trials = sum(len(x["trials"]) for x in search if x) if any(search) else 0
        row = {"config": label, "shared_per_layer": layer_counts(result.plan), "layer_widths": widths,
               "layers": names, "error_fine": errs["fine"], "error_coarse": errs["coarse"],
               "increase_fine_pp": 100 * (errs["fine"] - base["fine"]),
               "increase_coarse_pp": 100 * (errs["coarse"] - base["coarse"]),
               "retrain_iterations": retrain_iterations(result.plan),
               "search_trials": trials, "search_retrain_iterations": trials * cfg.retrain.iterations,
               "shared_fraction": params["shared_fraction"],
               "shared_fraction_definition": params["shared_fraction_definition"],
               "params_shared": params["shared"], "params_separate_total": params["separate_total"],
               "params_zipped": params["zipped"],
               "search": search if any(search) else None, "validation": result.plan.validation or None}
        rows.append(row)
        table.append([label, " / ".join(str(c) for c in row["shared_per_layer"]), pct(errs["fine"]),
                      pct(errs["coarse"]), f"{pp(errs['fine'] - base['fine'])} / {pp(errs['coarse'] - base['coarse'])}",
                      str(row["retrain_iterations"]) + (f" (+{row['search_retrain_iterations'] - row['retrain_iterations']}"
                                                        " in the search's other trials)" if trials else ""),
                      f"{100 * params['shared_fraction']:.1f} %"])
    md = [f"LeNet-5 (20/50/500) for the 10 item types (fine, seed 1) and a LeNet-5 for the 5 coarse groups "
          f"(coarse, seed 2), same images. Errors on all {len(fine.y_test)} test images; the adaptive search "
          f"validated on {s.validation_split:.0%} of each task's training images, held out of its Hessians and "
          f"retraining. References: fine {pct(base['fine'])}, coarse "
          f"{pct(base['coarse'])}; one reference trained {recs['fine']['iterations']} iterations. Layers "
          f"{', '.join(names)} have {' / '.join(str(w) for w in widths)} units/channels.\n",
          markdown_table(["configuration", "Ñ_l per layer", "error fine", "error coarse", "increase (pp) fine / coarse",
                          "retraining iterations", "shared params"], table), "",
          f"Shared params = {runs[0][2].plan.params['shared_fraction_definition']}.\n"]
    return {"reference": recs, "baseline": base, "rows": rows, "markdown": "\n".join(md)}


# ----- resnet ----------------------------------------------------------------------------------

def exp_resnet(out: Path, datas: dict[str, TaskData], s: Settings) -> dict:
    fine, coarse = datas["fine"], datas["coarse"]
    recs = {"fine": reference(out, "resnet16", fine, 1, s.resnet_epochs, s, n_train=s.resnet_train, permute=False),
            "coarse": reference(out, "resnet16", coarse, 2, s.resnet_epochs, s, n_train=s.resnet_train,
                                permute=False)}
    paths = {t: r["path"] for t, r in recs.items()}
    two = {"fine": fine, "coarse": coarse}
    base = {t: recs[t]["test_error"] for t in two}
    it = s.retrain_resnet
    rows, table = [], []
    for label, shared, iters, paper in (
            ("all layers fully shared, retrained", ["all"], it, False),
            ("all layers fully shared, retrained with the paper's loss (labels only)", ["all"], it, True),
            ("half the channels of every layer shared, retrained", [0.5], it, False),
            ("all layers fully shared, no retraining", ["all"], 0, False)):
        say(f"  resnet {label}")
        t0 = time.perf_counter()
        cfg = ZipConfig(shared=shared, seed=s.zip_seed, calibration_samples=s.calib_resnet,
                        retrain=retrain(s, iters, paper, s.resnet_schedule) if iters else no_retrain())
        result = zip_pair(paths, two, cfg)
        errs = net_errors(result.network, two)
        params = result.plan.params
        row = {"config": label, "shared": shared, "shared_per_layer": layer_counts(result.plan),
               "layer_widths": layer_widths(result.plan), "layers": [l.name for l in result.plan.layers],
               "error_fine": errs["fine"], "error_coarse": errs["coarse"], "ref_error_fine": base["fine"],
               "ref_error_coarse": base["coarse"], "retrain_iterations": retrain_iterations(result.plan),
               "train_iterations_one_reference": recs["fine"]["iterations"],
               "shared_fraction": params["shared_fraction"], "params_shared": params["shared"],
               "params_separate_total": params["separate_total"], "params_zipped": params["zipped"]}
        rows.append(row)
        say(f"  resnet {label}: fine {pct(errs['fine'])}, coarse {pct(errs['coarse'])}, "
            f"{row['retrain_iterations']} iterations, {100 * params['shared_fraction']:.1f} % shared "
            f"({time.perf_counter() - t0:.0f} s)")
        table.append([label, " / ".join(str(c) for c in row["shared_per_layer"]), pct(errs["fine"]),
                      pct(errs["coarse"]), row["retrain_iterations"], f"{100 * params['shared_fraction']:.1f} %",
                      f"{num(params['zipped'])} of {num(params['separate_total'])}"])
    widths = rows[0]["layer_widths"]
    md = [f"ResNet (width 16, one basic block per stage, BatchNorm folded into the convolutions by the reader; "
          f"{num(recs['fine']['params'])} Keras parameters for the fine task) trained {s.resnet_epochs} epoch(s) on "
          f"{recs['fine']['train_images']} images: fine (10 item types, seed 1) {pct(base['fine'])}, coarse "
          f"(5 groups, seed 2) {pct(base['coarse'])}; {recs['fine']['iterations']} training iterations each. "
          f"Channels per zipped layer: {' / '.join(str(w) for w in widths)}. Retraining: {it} iterations "
          f"{'after each zipped layer' if s.resnet_schedule == 'layer' else 'once, after the last layer'}.\n",
          markdown_table(["configuration", "Ñ_l per layer", "error fine", "error coarse", "retraining iterations",
                          "shared params", "stored params (of separate)"], table), ""]
    return {"reference": recs, "rows": rows, "markdown": "\n".join(md)}


# ----- main ------------------------------------------------------------------------------------

EXPERIMENTS = {"lenet300": exp_lenet300, "fig2": exp_fig2, "table1": exp_table1, "table3": exp_table3,
               "resnet": exp_resnet}
ORDER = ["lenet300", "fig2", "table1", "table3", "resnet"]
TITLES = {"lenet300": "LeNet-300-100: zipper core", "fig2": "Fig. 2 analogue: error vs shared neurons",
          "table1": "Table 1 analogue: LeNet-300-100 and LeNet-5, dense and sparse",
          "table3": "Table 2/3 analogue: fine vs coarse task, full and adaptive zip",
          "resnet": "ResNet pair, fine vs coarse task"}


def settings_from(args) -> Settings:
    s = Settings.quick_settings() if args.quick else Settings()
    if args.epochs is not None:
        s.mlp_epochs = args.epochs
    if args.iterations is not None:
        s.retrain_mlp = args.iterations
    if args.lr is not None:
        s.retrain_lr = args.lr
    if args.seeds is not None:
        s.lenet300_seeds = args.seeds
    return s


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--exp", choices=ORDER + ["all"], default="all")
    parser.add_argument("--out", default="results")
    parser.add_argument("--quick", action="store_true", help="smoke run: data slices, 1 epoch, a few iterations")
    parser.add_argument("--epochs", type=int, help="LeNet-300-100 training epochs (default 8)")
    parser.add_argument("--iterations", type=int, help="LeNet-300-100 retraining iterations after each layer (90)")
    parser.add_argument("--lr", type=float, help="retraining learning rate (1e-4)")
    parser.add_argument("--seeds", type=lambda v: [int(x) for x in v.split(",")],
                        help="zip seeds of lenet300's full-sharing runs (0,1,2)")
    parser.add_argument("--in-process", action="store_true",
                        help="with --exp all, run every experiment in this process (the default without --quick "
                             "is one child process per experiment, which bounds memory: each retraining call "
                             "keeps its copy of the training data until the process ends)")
    parser.add_argument("--data-dir")
    args = parser.parse_args(argv)
    s = settings_from(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    names = ORDER if args.exp == "all" else [args.exp]
    timings_path = out / "timings.json"
    t_all = time.perf_counter()
    if args.exp == "all" and not (args.quick or args.in_process):
        base = [a for a in (argv if argv is not None else sys.argv[1:])]
        for name in names:
            child = _replace_exp(base, name)
            proc = subprocess.run([sys.executable, str(Path(__file__).resolve())] + child)
            if proc.returncode != 0:
                say(f"experiment {name} failed (exit status {proc.returncode})")
                return proc.returncode
    else:
        datas = {"fine": load_task_data("fashion-mnist", args.data_dir).head(s.n_train, s.n_test),
                 "coarse": load_task_data("fashion-mnist-coarse", args.data_dir).head(s.n_train, s.n_test)}
        for name in names:
            say(f"\n== {name}: {TITLES[name]}" + (" (quick)" if s.quick else ""))
            t0 = time.perf_counter()
            result = EXPERIMENTS[name](out, datas, s)
            result = {"experiment": name, "title": TITLES[name], "paper": PAPER, "settings": asdict(s), **result}
            write_json(out / f"{name}.json", result)
            write_csv(out / f"{name}.csv", result["rows"])
            write_atomic(out / f"{name}.md", f"## {TITLES[name]}\n\n{result['markdown']}\n")
            say("\n" + result["markdown"])
            timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
            timings[name] = round(time.perf_counter() - t0, 1)
            write_json(timings_path, timings)
            say(f"== {name} done in {timings[name]:.0f} s")
    if args.exp == "all":
        timings = json.loads(timings_path.read_text()) if timings_path.exists() else {}
        timings["all"] = round(time.perf_counter() - t_all, 1)
        write_json(timings_path, timings)
        summary = [f"# MTZ on Fashion-MNIST{' (quick smoke run)' if s.quick else ''}\n"]
        summary += [(out / f"{n}.md").read_text() for n in ORDER]
        write_atomic(out / "summary.md", "\n".join(summary))
        say(f"\nall experiments done in {timings['all']:.0f} s; tables in {out}/summary.md")
    return 0


def _replace_exp(argv: list[str], name: str) -> list[str]:
    """The same command line with --exp NAME (for one child process per experiment)."""
    out, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--exp":
            skip = True
            continue
        if a.startswith("--exp="):
            continue
        out.append(a)
    return out + ["--exp", name]


if __name__ == "__main__":
    status = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Every output is written and synced by now. Skip the interpreter's teardown: with the tf.functions
    # that retraining leaves behind (see --in-process) it takes minutes after a few dozen zips.
    os._exit(status)

#!/usr/bin/env python3
"""Time whole zips of real graphs (no retraining), split by what the time went to.

    python tools/experiments/bench_zip_graphs.py --resnet-pair                  # two build_resnet() on 28×28×1
    python tools/experiments/bench_zip_graphs.py --resnet-pair --calibration 1000 --repeats 3
    python tools/experiments/bench_zip_graphs.py --mobilenet-v2 --calibration 500 --repeats 1
    python tools/experiments/bench_zip_graphs.py --vgg16 --calibration 256 --out results/vgg/zip   # then convert, bench
    (also --lenet300, --lenet5, --wide-mlp: the pairs tools/experiments/cost_curves.py runs)

The split is exclusive (a function's time less the time of the timed functions it calls):
forward passes (the networks' forward, and the activation cache filling), Hessians (im2col and
XᵀX, also the depthwise per-channel ones), factorisations (PairGeometry.from_hessians, LowRankGeometry.from_factors), metric
(all pairs' d), pairing, merge (regroup, merges, depthwise channel merges) and compensation
(next-layer refits); "other" is the rest of the wall time. Models have random weights and
randomised BatchNorm statistics; images are random (the 28×28 pairs read Fashion-MNIST when
it is installed). Peak RSS is the process's high-water mark (VmHWM) at the end.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np

from mtz_mobile.data import TaskData
from mtz_mobile.markdown import markdown_table

CATEGORIES = ["forward", "hessians", "factorisation", "metric", "pairing", "merge", "compensation"]


class SplitTimer:
    """Exclusive wall time per category, of functions wrapped in place (module attributes)."""

    def __init__(self):
        self.totals = {c: 0.0 for c in CATEGORIES}
        self.stack: list[list[float]] = []   # [start, time spent in timed callees]
        self.restore: list[tuple] = []

    def wrap(self, owner, name: str, category: str) -> None:
        if not hasattr(owner, name):
            return
        fn = getattr(owner, name)
        timer = self

        def timed(*args, **kwargs):
            timer.stack.append([time.perf_counter(), 0.0])
            try:
                return fn(*args, **kwargs)
            finally:
                start, inner = timer.stack.pop()
                spent = time.perf_counter() - start
                timer.totals[category] += spent - inner
                if timer.stack:
                    timer.stack[-1][1] += spent

        setattr(owner, name, timed)
        self.restore.append((owner, name, fn))

    def install(self) -> None:
        from mtz_mobile.graph import network
        from mtz_mobile.zipper import calibration, low_rank, mtz_math, step

        self.wrap(network.ZippedNetwork, "forward", "forward")
        try:  # the activation cache's passes, where present
            from mtz_mobile.zipper import activations

            for name in ("forward_nodes", "preactivation"):
                self.wrap(activations, name, "forward")
        except ImportError:
            pass
        self.wrap(calibration, "task_hessian", "hessians")
        self.wrap(step, "channel_hessians", "hessians")
        self.wrap(mtz_math.PairGeometry, "from_hessians", "factorisation")
        self.wrap(mtz_math.PairGeometry, "compare", "metric")
        self.wrap(mtz_math.PairGeometry, "matched", "metric")
        self.wrap(low_rank.LowRankGeometry, "from_factors", "factorisation")   # layers seen by few instances
        self.wrap(low_rank.LowRankGeometry, "compare", "metric")
        self.wrap(low_rank.LowRankGeometry, "matched", "metric")
        self.wrap(low_rank.LowRankComparison, "merged", "merge")
        self.wrap(step, "select_pairs", "pairing")
        self.wrap(step, "random_pairs", "pairing")
        for name in ("regroup", "merge", "merge_channels", "channelwise_merge"):
            self.wrap(step, name, "merge")
        self.wrap(mtz_math.Comparison, "merged", "merge")
        self.wrap(step, "compensate_consumers", "compensation")

    def uninstall(self) -> None:
        for owner, name, fn in reversed(self.restore):
            setattr(owner, name, fn)
        self.restore.clear()


def peak_rss_gb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 2**20
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def randomise(model, seed: int):
    """Random weights (as for a fresh model, seeded) and BatchNorm statistics away from identity."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        weights = layer.get_weights()
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.set_weights([rng.uniform(0.5, 1.5, w.shape) if n in (0, 3) else rng.uniform(-0.2, 0.2, w.shape)
                               for n, w in enumerate(weights)])
        elif weights:
            layer.set_weights([rng.normal(0, 1 / np.sqrt(np.prod(w.shape[:-1]) if w.ndim > 1 else 10), w.shape)
                               for w in weights])
    return model


def _parsed(model, keep_dir: Path | None, name: str):
    """The parsed model; saved first and parsed from the file (in Keras' safe mode) where a zip
    directory is asked for, since it keeps its sources."""
    from mtz_mobile.graph.keras_io import parse_model, read_model, save_keras_atomic

    if keep_dir is None:
        return parse_model(model)
    return read_model(save_keras_atomic(model, keep_dir / f"{name}.keras"))   # with its sha256: convert checks it


def _fashion_images(n: int, seed: int) -> np.ndarray:
    fmnist = Path("/usr/share/datasets/fashion-mnist")
    if fmnist.exists():
        from mtz_mobile.data import load_fashion_mnist_raw

        x = load_fashion_mnist_raw(fmnist)["x_train"][:n].astype(np.float32) / 255.0
        if len(x) == n:
            return x
    return np.random.default_rng(seed).random((n, 28, 28), dtype=np.float32)


def _own_pair(build, images, randomised: bool):
    """A pair of the project's own reference architectures on 28×28 (Fashion-MNIST where installed)."""

    def pair(n: int, seed: int, keep_dir: Path | None = None):
        import keras

        models = {}
        for k, t in enumerate(("a", "b")):
            keras.utils.set_random_seed(seed + k)
            model = build()
            models[t] = _parsed(randomise(model, seed + k) if randomised else model, keep_dir, t)
        return models, images(n, seed)

    return pair


def _application_pair(make, bn_statistics: bool):
    """A pair of Keras application models on random 224×224×3 images, seeded weights (and
    BatchNorm statistics away from identity where the model has them)."""

    def pair(n: int, seed: int, keep_dir: Path | None = None):
        import keras

        models = {}
        for k, t in enumerate(("a", "b")):
            keras.utils.set_random_seed(seed + k)
            model = make()
            if bn_statistics:
                rng = np.random.default_rng(seed + k)
                for layer in model.layers:
                    if isinstance(layer, keras.layers.BatchNormalization):
                        c = layer.moving_mean.shape[0]
                        layer.moving_mean.assign(rng.normal(0, 0.1, c).astype(np.float32))
                        layer.moving_variance.assign(rng.uniform(0.5, 1.5, c).astype(np.float32))
                        layer.gamma.assign(rng.uniform(0.7, 1.3, c).astype(np.float32))
                        layer.beta.assign(rng.normal(0.05, 0.1, c).astype(np.float32))
            models[t] = _parsed(model, keep_dir, t)
            del model
        x = np.random.default_rng(seed).random((n, 224, 224, 3), dtype=np.float32)
        return models, x

    return pair


def _pairs():
    """name → (builder, default calibration images, description)."""
    import keras

    from mtz_mobile.reference import LENET_300_100, build_lenet5, build_mlp, build_resnet

    return {
        "lenet300": (_own_pair(lambda: build_mlp((28, 28), LENET_300_100, 10), _fashion_images, False), 10000,
                     "LeNet-300-100 (28×28)"),
        "lenet5": (_own_pair(lambda: build_lenet5((28, 28), 10), _fashion_images, False), 10000,
                   "LeNet-5 (28×28)"),
        "wide-mlp": (_own_pair(lambda: build_mlp((28, 28), (2048, 2048), 10), _fashion_images, False), 10000,
                     "wide MLPs 784-2048-2048-10"),
        "resnet-pair": (_own_pair(lambda: build_resnet((28, 28), 10), _fashion_images, True), 10000,
                        "ResNets (build_resnet width 16, 28×28×1)"),
        "mobilenet-v2": (_application_pair(lambda: keras.applications.MobileNetV2(
            alpha=1.0, weights=None, input_shape=(224, 224, 3)), True), 500, "MobileNetV2 (224×224×3)"),
        "vgg16": (_application_pair(lambda: keras.applications.VGG16(weights=None, input_shape=(224, 224, 3)), False),
                  256, "VGG-16 (224×224×3, 1000 classes)"),
    }


def _network_of(models):
    from mtz_mobile.graph.network import ZippedNetwork

    return ZippedNetwork.from_models(models)


def one_zip(models, x, args) -> dict:
    from mtz_mobile.zipper import ZipConfig, zip_networks
    from mtz_mobile.zipper.config import RetrainSettings

    y = np.zeros(len(x), np.int64)
    data = {t: TaskData("synthetic", x, y, x[:8], y[:8], [str(c) for c in range(10)]) for t in models}
    config = ZipConfig(retrain=RetrainSettings(iterations=0), calibration_samples=len(x), seed=args.seed,
                       damping=args.damping)
    steps = len(_network_of(models).zippable())
    t_start = time.perf_counter()

    def done(step, net):  # a long zip says where it is
        print(f"  step {step + 1}/{steps} at {time.perf_counter() - t_start:.0f} s, peak RSS so far "
              f"{peak_rss_gb():.2f} GB", file=sys.stderr, flush=True)

    timer = SplitTimer()
    timer.install()
    try:
        t0 = time.perf_counter()
        zip_networks(models, data, config, out_dir=args.out, resume=args.resume, progress=False, on_layer_done=done)
        wall = time.perf_counter() - t0
    finally:
        timer.uninstall()
    row = dict(timer.totals, wall=wall)
    row["other"] = wall - sum(timer.totals.values())
    return row


def main(argv=None) -> int:
    pairs = _pairs()
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    mode = parser.add_mutually_exclusive_group(required=True)
    for name, (_, default_n, what) in pairs.items():
        mode.add_argument(f"--{name}", dest="pair", action="store_const", const=name,
                          help=f"two {what}; default {default_n} calibration images")
    parser.add_argument("--calibration", type=int, help="calibration images per task (default: the pair's)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--damping", type=float, default=1e-4,
                        help="λ relative to mean(diag S); random 224×224 MobileNetV2 weights need more than the default")
    parser.add_argument("--json", help="also write the runs here")
    parser.add_argument("--out", help="also write the zip directory here (with --repeats 1), for convert and bench; "
                        "the models are saved beside it as OUT.sources/{a,b}.keras")
    parser.add_argument("--resume", action="store_true", help="continue the partial zip in --out (its timings then "
                        "cover the remaining steps only)")
    args = parser.parse_args(argv)
    if args.out and args.repeats != 1:
        parser.error("--out takes --repeats 1")
    build, default_n, what = pairs[args.pair]
    n = args.calibration or default_n
    keep_dir = None
    if args.out:
        keep_dir = Path(args.out + ".sources")
        keep_dir.mkdir(parents=True, exist_ok=True)
    models, x = build(n, args.seed, keep_dir)
    params = _network_of(models).param_counts()["per_task"]
    runs = []
    for rep in range(args.repeats):
        runs.append(one_zip(models, x, args))
        print(f"  run {rep + 1}/{args.repeats}: {runs[-1]['wall']:.1f} s", file=sys.stderr, flush=True)
    keys = ["wall"] + CATEGORIES + ["other"]
    med = {k: statistics.median(r[k] for r in runs) for k in keys}
    rss = peak_rss_gb()
    print(f"\ntwo {what}, {n} calibration images per task, no retraining, median of {args.repeats}; "
          f"peak RSS {rss:.2f} GB")
    print(markdown_table(["wall s"] + [f"{k} s" for k in keys[1:]], [[f"{med[k]:.1f}" for k in keys]]))
    if args.json:
        Path(args.json).write_text(json.dumps({"pair": args.pair, "what": what, "params_per_task": params,
                                               "runs": runs, "median": med, "peak_rss_gb": rss,
                                               "calibration": n}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

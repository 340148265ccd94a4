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
it is installed). Peak RSS is the process's high-water mark (VmHWM) at the end. Each category's
process CPU time (all threads) is kept beside its wall time, and on JAX the XLA compilations' time
(part of the categories that triggered them). A forward pass's results are waited for before its
clock stops: JAX dispatches asynchronously, and its forward time would otherwise be charged to
whatever first reads the values (the Hessians, the compensation).

    python tools/experiments/bench_zip_graphs.py --resnet-pair --calibration 200 --compare 3   # both backends

``--compare N`` runs the zip N times under each backend (tensorflow, jax), alternating, each in its
own process with the same niceness as this one, and prints every run with the load average at its
start, the medians and JAX's wall time over TensorFlow's.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
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
        self.cpu = {c: 0.0 for c in CATEGORIES}
        self.stack: list[list[float]] = []   # [start, cpu start, wall and cpu spent in timed callees]
        self.restore: list[tuple] = []

    def wrap(self, owner, name: str, category: str) -> None:
        if not hasattr(owner, name):
            return
        fn = getattr(owner, name)
        timer = self
        wait = _ready if category == "forward" else (lambda out: out)

        def timed(*args, **kwargs):
            timer.stack.append([time.perf_counter(), time.process_time(), 0.0, 0.0])
            try:
                return wait(fn(*args, **kwargs))
            finally:
                start, cpu_start, inner, inner_cpu = timer.stack.pop()
                spent, cpu = time.perf_counter() - start, time.process_time() - cpu_start
                timer.totals[category] += spent - inner
                timer.cpu[category] += cpu - inner_cpu
                if timer.stack:
                    timer.stack[-1][2] += spent
                    timer.stack[-1][3] += cpu

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


def _ready(out):
    """``out`` once computed: JAX's arrays are waited for (its ops return before they have run)."""
    if "jax" in sys.modules:
        import jax

        return jax.block_until_ready(out)
    return out


class CompileClock:
    """Seconds XLA spent compiling (JAX's own duration events), from when it is made."""

    def __init__(self):
        self.seconds = 0.0
        if os.environ.get("KERAS_BACKEND") == "jax":
            import jax.monitoring

            jax.monitoring.register_event_duration_secs_listener(self._event)

    def _event(self, event: str, secs: float, **_):
        if event.startswith("/jax/core/compile/"):
            self.seconds += secs


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
    compiled = args.compile_clock.seconds
    try:
        t0, c0 = time.perf_counter(), time.process_time()
        zip_networks(models, data, config, out_dir=args.out, resume=args.resume, progress=False, on_layer_done=done)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        timer.uninstall()
    row = dict(timer.totals, wall=wall, cpu=cpu, compile=args.compile_clock.seconds - compiled,
               cpu_by_category=timer.cpu, load=os.getloadavg()[0])
    row["other"] = wall - sum(timer.totals.values())
    return row


def _parser(pairs) -> argparse.ArgumentParser:
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
    parser.add_argument("--compare", type=int, metavar="N", help="N zips under each backend (tensorflow, jax), "
                        "alternating, each in its own process: medians and JAX's time over TensorFlow's")
    return parser


def compare(argv: list[str], n: int) -> int:
    """Both backends side by side: alternate subprocesses (same niceness), then medians and the ratio."""
    base, skip, record = [], False, None
    for a, b in zip(argv, argv[1:] + [None]):   # this command less --compare N and --json PATH
        if not skip and not a.startswith(("--compare", "--json")):
            base.append(a)
        skip = a in ("--compare", "--json")
        record = b if a == "--json" else record
    walls: dict[str, list[float]] = {"tensorflow": [], "jax": []}
    rows, everything = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(n):
            for backend in walls:
                out = Path(tmp) / f"{backend}{rep}.json"
                env = dict(os.environ, KERAS_BACKEND=backend, TF_CPP_MIN_LOG_LEVEL="3")
                load = os.getloadavg()[0]
                subprocess.run([sys.executable, __file__, *base, "--repeats", "1", "--json", str(out)], env=env,
                               check=True, stdout=subprocess.DEVNULL)
                run = dict(json.loads(out.read_text())["runs"][0], backend=backend, load_at_start=load)
                walls[backend].append(run["wall"])
                everything.append(run)
                rows.append([f"{rep + 1}", backend, f"{load:.1f}", f"{run['wall']:.1f}", f"{run['cpu']:.1f}",
                             f"{run['compile']:.1f}"] + [f"{run[c]:.1f}" for c in CATEGORIES])
                print(f"  {backend} run {rep + 1}/{n}: {run['wall']:.1f} s (load {load:.1f})", file=sys.stderr,
                      flush=True)
    print(markdown_table(["run", "backend", "load", "wall s", "cpu s", "compile s"] + [f"{c} s" for c in CATEGORIES],
                         rows))
    med = {b: statistics.median(w) for b, w in walls.items()}
    print(f"\nmedian wall: tensorflow {med['tensorflow']:.1f} s, jax {med['jax']:.1f} s; "
          f"jax / tensorflow = {med['jax'] / med['tensorflow']:.2f}")
    if record:
        Path(record).write_text(json.dumps({"runs": everything, "median_wall": med}, indent=1) + "\n")
    return 0


def main(argv=None) -> int:
    pairs = _pairs()
    argv = sys.argv[1:] if argv is None else list(argv)
    args = _parser(pairs).parse_args(argv)
    if args.compare:
        return compare(argv, args.compare)
    if args.out and args.repeats != 1:
        _parser(pairs).error("--out takes --repeats 1")
    build, default_n, what = pairs[args.pair]
    n = args.calibration or default_n
    keep_dir = None
    if args.out:
        keep_dir = Path(args.out + ".sources")
        keep_dir.mkdir(parents=True, exist_ok=True)
    args.compile_clock = CompileClock()
    models, x = build(n, args.seed, keep_dir)
    params = _network_of(models).param_counts()["per_task"]
    runs = []
    for rep in range(args.repeats):
        runs.append(one_zip(models, x, args))
        print(f"  run {rep + 1}/{args.repeats}: {runs[-1]['wall']:.1f} s", file=sys.stderr, flush=True)
    keys = ["wall", "cpu", "compile"] + CATEGORIES + ["other"]
    med = {k: statistics.median(r[k] for r in runs) for k in keys}
    rss = peak_rss_gb()
    print(f"\ntwo {what}, {n} calibration images per task, no retraining, median of {args.repeats}; "
          f"peak RSS {rss:.2f} GB; load {os.getloadavg()[0]:.1f}")
    print(markdown_table([f"{k} s" for k in keys], [[f"{med[k]:.1f}" for k in keys]]))
    if args.json:
        Path(args.json).write_text(json.dumps({"pair": args.pair, "what": what, "params_per_task": params,
                                               "runs": runs, "median": med, "peak_rss_gb": rss,
                                               "calibration": n}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

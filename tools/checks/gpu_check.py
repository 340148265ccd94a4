#!/usr/bin/env python3
"""The zipper on Keras' JAX backend, without TensorFlow: three zips, timed per phase, with the GPU's
peak memory and the zips' accuracy, written to OUT (gpu_check.json, gpu_check.md).

    (a) mobilenet: two MobileNetV2-1.0 at 224×224×3 trained briefly here on Fashion-MNIST fine/coarse
        (28×28 upsampled 8×, 3 channels), every layer but the heads shared, 2,000 retraining steps
    (b) vgg16: two VGG-16 at 224×224×3, random weights (as bench_zip_graphs.py --vgg16), no retraining
    (c) lenet5: the fine/coarse LeNet-5 point that certified 49.6 % shared (RESULTS: 20 % hold-out,
        α 0.9, 675 steps once at the end, lr 1e-3 cosine), references trained here the same way

On the GPU machine (Python 3.12, JAX with CUDA, no TensorFlow, no Keras), from the repository root,
carrying build/gpu_wheels and build/fashion-mnist (tools/checks/gpu_check.sh prepares and runs it):

    pip install --no-index --no-deps --target /tmp/site build/gpu_wheels/*.whl
    PYTHONPATH=/tmp/site:. python tools/checks/gpu_check.py --data-dir build/fashion-mnist --out $OUT

Here, on the CPU at small sizes (end to end, minutes): ``python tools/checks/gpu_check.py --small --out DIR``.
Each zip runs in its own process (a clean peak-memory figure; one failure leaves the others'),
under a time limit; TensorFlow is made unimportable, and a process that imports it anyway fails.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
WORKLOADS = ("lenet5", "vgg16", "mobilenet")
# full size (GPU) and small size (this CPU): what each zip is given
SIZES = {
    "full": {"mobilenet": dict(side=224, train=6000, test=2000, epochs=2, calibration=500, steps=2000, batch=32),
             "vgg16": dict(side=224, calibration=128),
             "lenet5": dict(train=None, max_epochs=40, calibration=2000, steps=675)},
    "small": {"mobilenet": dict(side=32, train=600, test=300, epochs=1, calibration=64, steps=20, batch=16),
              "vgg16": dict(side=32, calibration=4),
              "lenet5": dict(train=6000, max_epochs=2, calibration=300, steps=20)},
}


def forbid_tensorflow() -> list[str]:
    """Make ``import tensorflow`` fail, as on a machine without it; returns the list of who tried
    (Keras 3 probes for it, optionally, while serialising a layer's config)."""
    import importlib.abc
    import traceback

    attempts: list[str] = []

    class NoTensorFlow(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "tensorflow":
                frames = [f for f in traceback.extract_stack() if "importlib" not in f.filename]
                attempts.append(f"{frames[-2].filename}:{frames[-2].lineno}")
                raise ImportError("TensorFlow is not installed here")
            return None

    sys.meta_path.insert(0, NoTensorFlow())
    return attempts


def gpu_peak_bytes() -> int | None:
    import jax

    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def timed_zip(zip_call) -> dict:
    """Run ``zip_call`` under bench_zip_graphs' exclusive per-phase timer, retraining as its own phase."""
    sys.path[:0] = [str(ROOT / "tools" / "experiments")]
    from bench_zip_graphs import SplitTimer

    from mtz_mobile.zipper import retrain_jax

    timer = SplitTimer()
    timer.totals["retraining"] = 0.0   # the steps (and their compilation); soft targets count as forward
    timer.install()
    timer.wrap(retrain_jax, "retrain_jax", "retraining")
    try:
        t0 = time.perf_counter()
        result = zip_call()
        wall = time.perf_counter() - t0
    finally:
        timer.uninstall()
    phases = {k: round(v, 2) for k, v in timer.totals.items()}
    phases["other"] = round(wall - sum(timer.totals.values()), 2)
    return {"wall_s": round(wall, 2), "phases_s": phases, "result": result}


def fashion(spec: str, data_dir, train: int | None, test: int | None = None):
    from mtz_mobile.data import load_task_data

    return load_task_data(spec, data_dir).head(train, test)


def upsampled(data, side: int):
    """28×28 images as side×side×3 (nearest neighbour, an integer factor): no TensorFlow resize."""
    import numpy as np
    from dataclasses import replace

    f = side // 28

    def up(x):
        x = np.repeat(np.repeat(x, f, axis=1), f, axis=2)
        x = np.pad(x, [(0, 0), (0, side - x.shape[1]), (0, side - x.shape[2])])
        return np.repeat(x[..., None], 3, axis=-1).astype(np.float32)

    return replace(data, x_train=up(data.x_train), x_test=up(data.x_test), spec=f"{data.spec}@{side}x{side}x3")


def errors(net, datas: dict, ops) -> dict:
    from mtz_mobile.data import error_rate

    return {t: round(100 * error_rate(net.predict(t, d.x_test, batch=256, ops=ops), d.y_test), 2)
            for t, d in datas.items()}


def train_keras(model, data, epochs: int, batch: int, seed: int, path: Path):
    """Adam 1e-3 for ``epochs`` on the data (no early stopping), saved; returns its test error (%)."""
    import keras

    from mtz_mobile.graph.keras_io import save_keras_atomic
    from mtz_mobile.reference import test_error

    keras.utils.set_random_seed(seed)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(data.x_train, data.y_train, batch_size=batch, epochs=epochs, shuffle=True, verbose=0)
    save_keras_atomic(model, path)
    return round(100 * test_error(model, data.x_test, data.y_test), 2)


def zip_options(**extra) -> dict:
    return dict(progress=False, backend="jax", **extra)


def run_mobilenet(size: dict, data_dir, out: Path, note) -> dict:
    """(a): references trained here, then the zip with one retraining at the end (MobileNetV2's recipe)."""
    import keras

    from mtz_mobile.api import zip_models
    from mtz_mobile.graph.keras_ops import KerasOps
    from mtz_mobile.reference import BATCHNORM_MOMENTUM

    side = size["side"]
    datas = {t: upsampled(fashion(spec, data_dir, size["train"], size["test"]), side)
             for t, spec in (("fine", "fashion-mnist"), ("coarse", "fashion-mnist-coarse"))}
    t0, refs = time.perf_counter(), {}
    for seed, (t, d) in enumerate(datas.items(), 1):
        keras.utils.set_random_seed(seed)
        model = keras.applications.MobileNetV2(alpha=1.0, weights=None, input_shape=(side, side, 3),
                                               classes=d.num_classes)
        for layer in model.layers:
            if isinstance(layer, keras.layers.BatchNormalization):
                layer.momentum = BATCHNORM_MOMENTUM
        refs[t] = train_keras(model, d, size["epochs"], 64, seed, out / f"{t}.keras")
    note(references_test_error_pct=refs, references_train_s=round(time.perf_counter() - t0, 1))
    options = zip_options(names=list(datas), calibration_samples=size["calibration"], damping=1e-2,
                          retrain_iterations=size["steps"], retrain_schedule="end", retrain_learning_rate=1e-3,
                          retrain_learning_rate_schedule="cosine", retrain_batch_size=size["batch"],
                          expected_errors=[refs[t] for t in datas])   # the preflight's yardstick (--small: chance)
    zipped = timed_zip(lambda: zip_models([out / f"{t}.keras" for t in datas], None, data=datas, **options))
    result = zipped.pop("result")
    retraining = zipped["phases_s"]["retraining"]
    return dict(zipped, retrain_steps=size["steps"], retrain_batch_per_task=size["batch"],
                retrain_steps_per_s=round(size["steps"] / retraining, 2) if retraining else None,
                zipped_test_error_pct=errors(result.network, datas, KerasOps()),
                params=result.plan.params, retrain=result.plan.final_retrain)


def run_vgg16(size: dict, data_dir, out: Path, note) -> dict:
    """(b): two random VGG-16 (bench_zip_graphs' pair), every hidden layer shared, no retraining."""
    import keras
    import numpy as np

    sys.path[:0] = [str(ROOT / "tools" / "experiments")]
    from bench_zip_graphs import _application_pair

    from mtz_mobile.data import TaskData
    from mtz_mobile.graph.keras_ops import KerasOps
    from mtz_mobile.graph.network import ZippedNetwork
    from mtz_mobile.zipper import ZipConfig, zip_networks
    from mtz_mobile.zipper.config import RetrainSettings

    side, n = size["side"], size["calibration"]
    build = _application_pair(lambda: keras.applications.VGG16(weights=None, input_shape=(side, side, 3)), False)
    models, x = build(n, 0, None)
    y = np.zeros(len(x), np.int64)
    data = {t: TaskData("synthetic", x, y, x[:8], y[:8], [str(c) for c in range(10)]) for t in models}
    config = ZipConfig(retrain=RetrainSettings(iterations=0), calibration_samples=n, seed=0, backend="jax")
    original = ZippedNetwork.from_models(models)
    zipped = timed_zip(lambda: zip_networks(models, data, config, progress=False))
    net, ops = zipped.pop("result").network, KerasOps()
    agree = {t: round(float(np.mean(np.argmax(net.predict(t, x, batch=32, ops=ops), -1)
                                    == np.argmax(original.predict(t, x, batch=32, ops=ops), -1))), 4)
             for t in models}
    return dict(zipped, calibration_images=n, top1_agreement_with_original=agree, params=net.param_counts())


def run_lenet5(size: dict, data_dir, out: Path, note) -> dict:
    """(c): LeNet-5 references early-stopped on a 20 % hold-out (patience 3), then the recipe's point."""
    import keras
    import numpy as np

    from mtz_mobile.api import zip_models
    from mtz_mobile.graph.keras_io import save_keras_atomic
    from mtz_mobile.graph.keras_ops import KerasOps
    from mtz_mobile.reference import build_lenet5, fit_early_stopping, permute_hidden_units, test_error

    datas = {t: fashion(spec, data_dir, size["train"]).holdout(0.2)
             for t, spec in (("fine", "fashion-mnist"), ("coarse", "fashion-mnist-coarse"))}
    refs, t0 = {}, time.perf_counter()
    for seed, (t, d) in enumerate(datas.items(), 1):   # frontier.py's seeds: fine 1, coarse 2
        keras.utils.set_random_seed(seed)
        model = build_lenet5(d.x_train.shape[1:], d.num_classes)
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      metrics=["sparse_categorical_accuracy"])
        run = fit_early_stopping(model, d, size["max_epochs"], 128, 3, 0)
        permute_hidden_units(model, np.random.default_rng(seed + 10_000))
        save_keras_atomic(model, out / f"{t}.keras")
        refs[t] = dict(run, test_error_pct=round(100 * test_error(model, d.x_test, d.y_test), 2))
    note(references=refs, references_train_s=round(time.perf_counter() - t0, 1))
    options = zip_options(names=list(datas), alpha=0.9, calibration_samples=size["calibration"],
                          retrain_iterations=size["steps"], retrain_schedule="end", retrain_learning_rate=1e-3,
                          retrain_learning_rate_schedule="cosine", validation_split=0.2, seed=0,
                          expected_errors=[refs[t]["test_error_pct"] for t in datas])
    zipped = timed_zip(lambda: zip_models([out / f"{t}.keras" for t in datas], None, data=datas, **options))
    result = zipped.pop("result")
    p = result.plan.params
    test = errors(result.network, datas, KerasOps())
    return dict(zipped, shared_pct=round(100 * (1 - p["zipped"] / p["separate_total"]), 1), params=p,
                zipped_test_error_pct=test,
                test_increase_pp={t: round(test[t] - refs[t]["test_error_pct"], 2) for t in datas},
                validation=result.plan.validation)


RUNNERS = {"mobilenet": run_mobilenet, "vgg16": run_vgg16, "lenet5": run_lenet5}


def one_workload(name: str, size: dict, data_dir, out: Path) -> int:
    """In a child process: one zip, its figures to OUT/NAME.json (rewritten as they come)."""
    attempts = forbid_tensorflow()
    os.environ["KERAS_BACKEND"] = "jax"
    import jax

    record = {"workload": name, "size": size, "device": str(jax.devices()[0]), "jax": jax.__version__}
    path = out / f"{name}.json"

    def note(**figures):
        record.update(figures)
        path.write_text(json.dumps(record, indent=1, default=str) + "\n")

    note(status="running")
    t0 = time.perf_counter()
    work = out / f"{name}.models"
    work.mkdir(parents=True, exist_ok=True)
    note(**RUNNERS[name](size, data_dir, work, note))
    import keras

    note(status="done", process_s=round(time.perf_counter() - t0, 1), keras=keras.__version__,
         gpu_peak_bytes=gpu_peak_bytes(), tensorflow_import_attempts=attempts,
         tensorflow_loaded="tensorflow" in sys.modules)
    return 1 if "tensorflow" in sys.modules else 0


LIMITS_S = {"full": {"lenet5": 100, "vgg16": 150, "mobilenet": 200},   # 450 s: one 8-minute command
            "small": {"lenet5": 1200, "vgg16": 1200, "mobilenet": 1200}}   # a shared 2-core CPU


def summary(records: dict) -> str:
    lines = ["| zip | status | wall s | phases s | GPU peak GiB | accuracy |", "|---|---|---|---|---|---|"]
    for name, r in records.items():
        peak = r.get("gpu_peak_bytes")
        accuracy = {k: r[k] for k in ("zipped_test_error_pct", "test_increase_pp", "top1_agreement_with_original",
                                      "shared_pct", "retrain_steps_per_s") if k in r}
        phases = ", ".join(f"{k} {v}" for k, v in r.get("phases_s", {}).items() if v >= 0.05)
        lines.append(f"| {name} | {r.get('status')} | {r.get('wall_s', '–')} | {phases} | "
                     f"{'–' if peak is None else round(peak / 2**30, 2)} | {json.dumps(accuracy)} |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "gpu_check_out")))
    p.add_argument("--data-dir", help="Fashion-MNIST's *-idx?-ubyte.gz (default: Debian's package)")
    p.add_argument("--small", action="store_true", help="small sizes, for a CPU")
    p.add_argument("--only", nargs="+", choices=WORKLOADS, default=list(WORKLOADS))
    p.add_argument("--workload", choices=WORKLOADS, help=argparse.SUPPRESS)   # the child's
    args = p.parse_args(argv)
    scale = "small" if args.small else "full"
    args.out.mkdir(parents=True, exist_ok=True)
    if args.workload:
        return one_workload(args.workload, SIZES[scale][args.workload], args.data_dir, args.out)
    env = dict(os.environ, KERAS_BACKEND="jax", XLA_PYTHON_CLIENT_PREALLOCATE="false",
               PYTHONPATH=os.pathsep.join(filter(None, [os.environ.get("PYTHONPATH"), str(ROOT)])))
    records, failed = {}, 0
    for name in args.only:
        cmd = [sys.executable, __file__, "--workload", name, "--out", str(args.out)] + (["--small"] if args.small else [])
        cmd += ["--data-dir", args.data_dir] if args.data_dir else []
        t0 = time.perf_counter()
        with open(args.out / f"{name}.log", "w") as log:
            try:
                rc = subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                    timeout=LIMITS_S[scale][name]).returncode
            except subprocess.TimeoutExpired:
                rc = "timeout"
        path = args.out / f"{name}.json"
        records[name] = json.loads(path.read_text()) if path.exists() else {"status": "no output"}
        if rc != 0:
            records[name]["status"] = f"failed ({rc}), see {name}.log"
            failed += 1
        print(f"{name}: {records[name]['status']} in {time.perf_counter() - t0:.0f} s", flush=True)
    (args.out / "gpu_check.json").write_text(json.dumps(records, indent=1, default=str) + "\n")
    (args.out / "gpu_check.md").write_text(summary(records))
    print(summary(records))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

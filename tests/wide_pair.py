"""The wide pair docs/RESULTS.md measures memory on: shared by tests/test_bench.py and
tools/experiments/bench_memory_floor.py (which runs it in a child process)."""

from __future__ import annotations

from pathlib import Path


def build_wide(out: Path, data=None):
    """Two random 784-2048-2048-10 MLPs (non-zero biases: the converter drops a zero one), fully
    zipped without retraining, converted with the joint signature and baselines; the Conversion.
    tests/test_bench.py's wide_pair fixture and tools/experiments/bench_memory_floor.py build it here."""
    import keras
    import numpy as np

    from converters import convert_zip
    from mtz_mobile.data import load_task_data
    from mtz_mobile.graph.keras_io import read_model
    from mtz_mobile.reference import build_mlp
    from mtz_mobile.zipper import ZipConfig, zip_networks
    from mtz_mobile.zipper.config import RetrainSettings

    data = data if data is not None else load_task_data("fashion-mnist").head(4000, 2000)
    out.mkdir(parents=True, exist_ok=True)
    models = {}
    for task, seed in (("a", 1), ("b", 2)):
        keras.utils.set_random_seed(seed)
        model = build_mlp(data.x_train.shape[1:], (2048, 2048), data.num_classes)
        rng = np.random.default_rng(seed)
        for layer in model.layers[1:]:
            kernel, bias = layer.get_weights()
            layer.set_weights([kernel, rng.normal(0, 0.1, bias.shape).astype(np.float32)])
        model.save(out / f"{task}.keras")
        models[task] = read_model(out / f"{task}.keras")
    cfg = ZipConfig(shared=["all"], method="random", compensation="none", calibration_samples=64,
                    retrain=RetrainSettings(iterations=0))
    zip_networks(models, {"a": data, "b": data}, cfg, out / "zip", progress=False)
    return convert_zip(out / "zip", out / "model.tflite", joint=True, baselines=True)

"""Reference models to zip: two LeNet-300-100 trained with different seeds, hidden units then
randomly permuted (paper §4.1) so that a zipper cannot succeed by pairing unit i with unit i."""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from .data import TaskData
from .errors import MTZError

LENET_300_100 = (300, 100)


@dataclass
class ReferenceRecord:
    name: str
    path: str
    data: str
    seed: int
    hidden: list[int]
    epochs: int
    batch_size: int
    iterations: int
    test_error: float
    permuted: bool


def build_mlp(input_shape, hidden, num_classes: int):
    import keras

    layers = [keras.Input(shape=tuple(input_shape)), keras.layers.Flatten()]
    layers += [keras.layers.Dense(h, activation="relu") for h in hidden]
    layers += [keras.layers.Dense(num_classes, activation="softmax")]
    return keras.Sequential(layers)


def permute_hidden_units(model, rng: np.random.Generator) -> None:
    """Reorder every hidden Dense layer's units (and the next layer's rows): same function."""
    import keras

    dense = [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]
    for layer, nxt in zip(dense[:-1], dense[1:]):
        perm = rng.permutation(layer.units)
        kernel, bias = layer.get_weights()
        layer.set_weights([kernel[:, perm], bias[perm]])
        k2, b2 = nxt.get_weights()
        nxt.set_weights([k2[perm], b2])


def test_error(model, x: np.ndarray, y: np.ndarray) -> float:
    pred = np.argmax(model.predict(x, batch_size=4096, verbose=0), axis=1)
    return float(np.mean(pred != y))


def train_reference(data: TaskData, out_path: str | os.PathLike, seed: int, epochs: int = 8,
                    batch_size: int = 128, hidden=LENET_300_100, permute: bool = True,
                    verbose: int = 1) -> ReferenceRecord:
    """Train one network with Adam, permute its hidden units, save it atomically as .keras."""
    import keras
    import tensorflow as tf

    if epochs <= 0 or batch_size <= 0:
        raise MTZError("epochs and batch size must be positive")
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    model = build_mlp(data.x_train.shape[1:], hidden, data.num_classes)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
    model.fit(data.x_train, data.y_train, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose)
    if permute:
        permute_hidden_units(model, np.random.default_rng(seed + 10_000))
    out_path = Path(out_path)
    tmp = out_path.with_name(out_path.stem + ".tmp.keras")
    model.save(tmp)
    os.replace(tmp, out_path)
    return ReferenceRecord(out_path.stem, str(out_path), data.spec, seed, list(hidden), epochs, batch_size,
                           epochs * math.ceil(len(data.x_train) / batch_size),
                           test_error(model, data.x_test, data.y_test), permute)


def train_reference_pair(datas: list[TaskData], out_dir: str | os.PathLike, seeds=(1, 2), names=("a", "b"),
                         epochs: int = 8, batch_size: int = 128, hidden=LENET_300_100, verbose: int = 1,
                         overwrite: bool = False) -> list[ReferenceRecord]:
    """Train one reference model per task into ``out_dir`` (written under a temporary name)."""
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise MTZError(f"{out_dir} exists: pass --overwrite or choose another --out")
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    records = []
    for data, seed, name in zip(datas, seeds, names):
        rec = train_reference(data, partial / f"{name}.keras", seed, epochs, batch_size, hidden, verbose=verbose)
        rec.path = str(out_dir / f"{name}.keras")
        records.append(rec)
    (partial / "reference.json").write_text(json.dumps([asdict(r) for r in records], indent=1) + "\n")
    from .plan import publish_dir

    publish_dir(partial, out_dir, overwrite)
    return records

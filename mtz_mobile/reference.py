"""Reference models to zip: two LeNet-300-100 trained with different seeds, hidden units then
randomly permuted (paper §4.1) so that a zipper cannot succeed by pairing unit i with unit i;
LeNet-5 and a small ResNet for the convolutional experiments; and the networks phones run:
Keras' MobileNetV2, MobileNetV3Small and EfficientNetB0, trained from scratch (weights=None).

Pixels: every architecture reads TaskData images as they are, float32 in [0, 1] (``data``), so
one preprocessing rule holds for every task. MobileNetV2 has no preprocessing of its own;
MobileNetV3Small is built with ``include_preprocessing=False`` (its Rescaling expects 0–255);
EfficientNetB0, which has no such switch, is cut below its Rescaling(1/255) + Normalization
stem (that Normalization is never adapted, the identity, with weights=None).

The application models need at least 32×32×3 input (``MIN_INPUT``); ``train_reference`` fits
smaller or grey data to it (zero-padding, centred, grey repeated to 3 channels) and records
the spec that loads the fitted arrays, e.g. ``fashion-mnist@32x32x3``: zip and evaluate them with
that spec. Their units are not permuted after training (as for the ResNet): a residual stream,
depthwise convolution or squeeze-excite gate would need one permutation shared across layers."""

from __future__ import annotations

import json
import math
import os
import shutil
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np

from .data import TaskData, adapt_task_data, check_validation_split, error_rate, parse_spec
from .errors import MTZError
from .fileio import publish_dir
from .graph.keras_io import save_keras_atomic

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
    arch: str = "lenet300"
    # early stopping; None in reference.json files written before it existed, which so still load
    epochs_run: int | None = None         # epochs actually trained (with early stopping ``epochs`` is the maximum)
    best_epoch: int | None = None         # 1-based epoch whose weights were restored and saved
    validation_error: float | None = None  # of the saved (restored) model on the validation images
    validation_images: int | None = None
    validation_source: str | None = None   # TaskData.validation_source: held-out training data or its own


def build_mlp(input_shape, hidden, num_classes: int):
    import keras

    layers = [keras.Input(shape=tuple(input_shape)), keras.layers.Flatten()]
    layers += [keras.layers.Dense(h, activation="relu") for h in hidden]
    layers += [keras.layers.Dense(num_classes, activation="softmax")]
    return keras.Sequential(layers)


def build_lenet5(input_shape, num_classes: int, widths=(20, 50, 500)):
    """LeNet-5 as in Caffe and the paper's Table 1 (431K parameters at 28×28)."""
    import keras

    shape = tuple(input_shape) + ((1,) if len(input_shape) == 2 else ())
    c1, c2, f1 = widths
    return keras.Sequential([
        keras.Input(shape=shape), keras.layers.Conv2D(c1, 5, activation="relu"), keras.layers.MaxPooling2D(2),
        keras.layers.Conv2D(c2, 5, activation="relu"), keras.layers.MaxPooling2D(2), keras.layers.Flatten(),
        keras.layers.Dense(f1, activation="relu"), keras.layers.Dense(num_classes, activation="softmax")])


def build_resnet(input_shape, num_classes: int, width: int = 16, blocks: int = 1):
    """A small ResNet: stem, three stages (the 2nd and 3rd open with a strided projection
    shortcut), ``blocks`` basic blocks each, BatchNorm after every convolution, GAP, Dense."""
    import keras
    from keras import layers

    shape = tuple(input_shape) + ((1,) if len(input_shape) == 2 else ())
    inp = keras.Input(shape=shape)

    def conv_bn(x, filters, kernel, stride=1, relu=True):
        x = layers.Conv2D(filters, kernel, strides=stride, padding="same", use_bias=False)(x)
        x = layers.BatchNormalization()(x)
        return layers.ReLU()(x) if relu else x

    x = conv_bn(inp, width, 3)
    for stage in range(3):
        filters = width * 2 ** stage
        for block in range(blocks):
            stride = 2 if stage > 0 and block == 0 else 1
            shortcut = x if stride == 1 else conv_bn(x, filters, 1, stride, relu=False)
            y = conv_bn(x, filters, 3, stride)
            y = conv_bn(y, filters, 3, relu=False)
            x = layers.ReLU()(layers.Add()([shortcut, y]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(num_classes, activation="softmax")(x))


def permute_hidden_units(model, rng: np.random.Generator) -> None:
    """Reorder every hidden unit and channel of a Sequential chain (and the rows that read
    them, inside every position after a Flatten): the same function, other unit numbers."""
    import keras

    weighted = (keras.layers.Dense, keras.layers.Conv2D)
    chain = [layer for layer in model.layers if isinstance(layer, weighted)]
    positions = 1
    prev = None
    for layer in model.layers:
        if isinstance(layer, keras.layers.Flatten) and prev is not None:
            positions = int(np.prod(layer.input.shape[1:-1]))
        if not isinstance(layer, weighted):
            continue
        kernel, bias = layer.get_weights()
        if prev is not None:
            if isinstance(layer, keras.layers.Conv2D):
                kernel = kernel[:, :, prev, :]
            else:
                kernel = kernel.reshape(positions, -1, kernel.shape[-1])[:, prev, :].reshape(kernel.shape)
            positions = 1
        if layer is not chain[-1]:
            prev = rng.permutation(kernel.shape[-1])
            kernel, bias = kernel[..., prev], bias[prev]
        layer.set_weights([kernel, bias])


def test_error(model, x: np.ndarray, y: np.ndarray) -> float:
    return error_rate(model.predict(x, batch_size=4096, verbose=0), y)


# every name train-reference --arch accepts; "mlp" is the old name of "lenet300"
ARCHITECTURES = ("lenet300", "mlp", "lenet5", "resnet", "mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0")
ALIASES = {"mlp": "lenet300"}
APPLICATIONS = ("mobilenet_v2", "mobilenet_v3_small", "efficientnet_b0")
MIN_INPUT = {name: (32, 32, 3) for name in APPLICATIONS}  # Keras refuses below 32×32; 3 as on a camera
MOBILENET_V2_ALPHA = 0.35   # the narrowest width Keras offers: 0.4 M parameters at 10 classes
MOBILENET_V3_ALPHA = 0.75   # the narrower of the two widths Keras has ImageNet weights for


def canonical_arch(arch: str) -> str:
    if arch not in ARCHITECTURES:
        raise MTZError(f"unknown architecture {arch!r}: use one of {', '.join(ARCHITECTURES)}")
    return ALIASES.get(arch, arch)


BATCHNORM_MOMENTUM = 0.99   # Keras' own default for the layer
# A short epoch leaves 0.99's moving statistics behind the batch statistics the weights are fitted
# to while they still move fast: MobileNetV3Small on 6,000 images (47 steps an epoch) and MobileNetV2
# on 16,000 (126) answered one class at inference after 6 and 4 epochs; at 0.9 both trained
# normally (tools/experiments/v3_deploy.py, regimes.py). Full Fashion-MNIST (422-469) keeps 0.99.
SHORT_EPOCH_STEPS, SHORT_EPOCH_MOMENTUM = 300, 0.9


def batchnorm_momentum(steps_per_epoch: int) -> float:
    return SHORT_EPOCH_MOMENTUM if steps_per_epoch < SHORT_EPOCH_STEPS else BATCHNORM_MOMENTUM


def build_application(arch: str, input_shape, num_classes: int, momentum: float = BATCHNORM_MOMENTUM):
    """One of Keras' mobile networks, untrained, reading [0, 1] pixels (see the module docstring)."""
    import keras

    shape = tuple(int(d) for d in input_shape)
    if len(shape) != 3 or shape[0] < MIN_INPUT[arch][0] or shape[1] < MIN_INPUT[arch][1] or shape[2] != 3:
        raise MTZError(f"{arch} needs images of at least {'x'.join(map(str, MIN_INPUT[arch]))} with 3 channels, "
                       f"not {shape}: load the data as SPEC@32x32x3 (e.g. fashion-mnist@32x32x3)")
    common = {"weights": None, "input_shape": shape, "classes": num_classes}
    if arch == "mobilenet_v2":
        model = keras.applications.MobileNetV2(alpha=MOBILENET_V2_ALPHA, **common)
    elif arch == "mobilenet_v3_small":
        model = keras.applications.MobileNetV3Small(alpha=MOBILENET_V3_ALPHA, include_preprocessing=False, **common)
    else:
        full = keras.applications.EfficientNetB0(**common)
        stem = next(layer for layer in full.layers if isinstance(layer, keras.layers.Normalization))
        model = keras.Model(stem.output, full.output, name=full.name)
    # The applications' BatchNorm momentum (0.999, made for ImageNet-length training) leaves the
    # moving statistics far from the batch statistics after a few thousand steps: measured on
    # MobileNetV2 after 1407 steps, 85 % accuracy in training mode, chance (9 %) at inference.
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            layer.momentum = momentum
    return model


def build_reference(arch: str, input_shape, num_classes: int, hidden=LENET_300_100,
                    momentum: float = BATCHNORM_MOMENTUM):
    """``momentum``: of the BatchNorm layers of Keras' applications (the others keep their own)."""
    arch = canonical_arch(arch)
    if arch == "lenet300":
        return build_mlp(input_shape, hidden, num_classes)
    if arch == "lenet5":
        return build_lenet5(input_shape, num_classes)
    if arch == "resnet":
        return build_resnet(input_shape, num_classes)
    return build_application(arch, input_shape, num_classes, momentum)


def fit_for_arch(data: TaskData, arch: str) -> TaskData:
    """``data`` as ``arch`` needs it: zero-padded and made 3-channel up to MIN_INPUT where smaller,
    with the spec that reloads it; unchanged for the architectures that take any input."""
    need = MIN_INPUT.get(canonical_arch(arch))
    shape = data.x_train.shape[1:]
    if need is None or (len(shape) == 3 and shape[0] >= need[0] and shape[1] >= need[1] and shape[2] == need[2]):
        return data
    if len(shape) not in (2, 3):
        raise MTZError(f"{arch} needs images, not samples of shape {shape}: give image data (H, W) or (H, W, C)")
    target = (max(shape[0], need[0]), max(shape[1], need[1]), need[2])
    if parse_spec(data.spec).shape is not None:
        suggested = str(replace(parse_spec(data.spec), shape=target))
        raise MTZError(f"{arch} needs at least {'x'.join(map(str, need))} input but {data.spec!r} gives "
                       f"{'x'.join(map(str, shape))}: use --data {suggested}")
    return adapt_task_data(data, target)


def check_early_stopping(early_stopping: int | None, validation_split: float) -> None:
    """Refuse patience and split values that cannot mean anything, before any training starts."""
    if early_stopping is not None and (isinstance(early_stopping, bool) or not isinstance(early_stopping, int)
                                       or early_stopping < 1):
        raise MTZError(f"early-stopping patience {early_stopping!r} is not a whole number >= 1: give the epochs "
                       "without improvement to wait, e.g. --early-stopping 3, or leave it out for fixed epochs")
    check_validation_split(validation_split)


def fit_early_stopping(model, data: TaskData, epochs: int, batch_size: int, patience: int, verbose: int) -> dict:
    """Fit on ``data``'s (reduced) training set for at most ``epochs``, stopping after ``patience``
    epochs without a lower validation error and restoring the best epoch's weights. The error rate,
    not the loss: a reference is compared by its errors, and the loss keeps moving after they settle."""
    import keras

    stop = keras.callbacks.EarlyStopping(monitor="val_sparse_categorical_accuracy", mode="max", patience=patience,
                                         restore_best_weights=True)
    history = model.fit(data.x_train, data.y_train, batch_size=batch_size, epochs=epochs, shuffle=True,
                        verbose=verbose, validation_data=data.validation, callbacks=[stop])
    accuracy = history.history["val_sparse_categorical_accuracy"]
    # the first of the best epochs: EarlyStopping counts only a strict improvement as one
    return {"epochs_run": len(accuracy), "best_epoch": int(np.argmax(accuracy)) + 1}


def train_reference(data: TaskData, out_path: str | os.PathLike, seed: int, epochs: int = 8,
                    batch_size: int = 128, hidden=LENET_300_100, permute: bool = True,
                    verbose: int = 1, arch: str = "lenet300", early_stopping: int | None = None,
                    validation_split: float = 0.1) -> ReferenceRecord:
    """Train one network with Adam, permute its hidden units (LeNets only), save it atomically.
    The record's ``data`` is the spec of the arrays it was trained on (fitted for ``arch``).
    With ``early_stopping`` (a patience), ``epochs`` is the maximum and the model is trained on the
    training data less a validation part (``TaskData.holdout(validation_split)``, or the
    data's own validation set); the test set only gives the final ``test_error``."""
    import keras
    import tensorflow as tf

    if epochs <= 0 or batch_size <= 0:
        raise MTZError("epochs and batch size must be positive")
    check_early_stopping(early_stopping, validation_split)
    arch = canonical_arch(arch)
    data = fit_for_arch(data, arch)
    if early_stopping is not None:
        data = data.holdout(validation_split)
    keras.utils.set_random_seed(seed)
    tf.config.experimental.enable_op_determinism()
    model = build_reference(arch, data.x_train.shape[1:], data.num_classes, hidden,
                            batchnorm_momentum(math.ceil(len(data.x_train) / batch_size)))
    # a residual stream, depthwise channels or SE gate would need one permutation shared across layers
    permute = permute and arch in ("lenet300", "lenet5")
    if early_stopping is None:
        # exactly the fixed-epoch run of earlier versions, so that cached references keep their meaning
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy")
        model.fit(data.x_train, data.y_train, batch_size=batch_size, epochs=epochs, shuffle=True, verbose=verbose)
        run = {"epochs_run": epochs}
    else:
        model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy",
                      metrics=["sparse_categorical_accuracy"])
        run = fit_early_stopping(model, data, epochs, batch_size, early_stopping, verbose)
    if permute:
        permute_hidden_units(model, np.random.default_rng(seed + 10_000))
    out_path = save_keras_atomic(model, out_path)
    if early_stopping is not None:
        # measured on the saved model, so that a reader can check it against data.holdout(split)
        run.update(validation_error=test_error(model, *data.validation), validation_images=len(data.x_val),
                   validation_source=data.validation_source)
    return ReferenceRecord(out_path.stem, str(out_path), data.spec, seed, list(hidden) if arch == "lenet300" else [],
                           epochs, batch_size, run["epochs_run"] * math.ceil(len(data.x_train) / batch_size),
                           test_error(model, data.x_test, data.y_test), permute, arch, **run)


def train_reference_pair(datas: list[TaskData], out_dir: str | os.PathLike, seeds=(1, 2), names=("a", "b"),
                         epochs: int = 8, batch_size: int = 128, hidden=LENET_300_100, verbose: int = 1,
                         overwrite: bool = False, arch: str = "lenet300", early_stopping: int | None = None,
                         validation_split: float = 0.1) -> list[ReferenceRecord]:
    """Train one reference model per task into ``out_dir`` (written under a temporary name);
    ``early_stopping`` and ``validation_split`` as in ``train_reference``."""
    check_early_stopping(early_stopping, validation_split)
    out_dir = Path(out_dir)
    if out_dir.exists() and not overwrite:
        raise MTZError(f"{out_dir} exists: pass --overwrite or choose another --out")
    fitted: dict[int, TaskData] = {}  # load_specs shares one TaskData between tasks: fit it once
    for data in datas:
        if id(data) not in fitted:
            fitted[id(data)] = fit_for_arch(data, arch)
    datas = [fitted[id(data)] for data in datas]
    partial = out_dir.with_name(out_dir.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    records = []
    for data, seed, name in zip(datas, seeds, names):
        rec = train_reference(data, partial / f"{name}.keras", seed, epochs, batch_size, hidden, verbose=verbose,
                              arch=arch, early_stopping=early_stopping, validation_split=validation_split)
        rec.path = str(out_dir / f"{name}.keras")
        records.append(rec)
    (partial / "reference.json").write_text(json.dumps([asdict(r) for r in records], indent=1) + "\n")
    publish_dir(partial, out_dir, overwrite)
    return records

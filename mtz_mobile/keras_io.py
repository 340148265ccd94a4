"""Reading trained Keras models (safe mode) into the plain layer lists the zipper works on."""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .errors import MTZError
from .network import ACTIVATIONS

SUPPORTED = "Dense, Dropout, Flatten, Activation, InputLayer"


@dataclass
class DenseChain:
    """A model reduced to its input shape and its Dense layers, in order."""

    path: str
    sha256: str
    input_shape: tuple[int, ...]
    layers: list[tuple[np.ndarray, np.ndarray, str]]  # (kernel, bias, activation)
    layer_names: list[str]


def sha256_of(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_keras_model(path: str | os.PathLike):
    """keras.saving.load_model in safe mode (no arbitrary code from the file)."""
    import keras

    path = Path(path)
    if not path.exists():
        raise MTZError(f"model file {path} does not exist: give the path of a .keras file")
    if path.suffix != ".keras":
        raise MTZError(f"{path} is not a .keras file: save the model with model.save('name.keras')")
    try:
        return keras.saving.load_model(path, compile=False, safe_mode=True)
    except Exception as exc:
        raise MTZError(f"cannot load {path} as a Keras model ({type(exc).__name__}: "
                       f"{str(exc).splitlines()[0] if str(exc) else ''}): re-save it with Keras 3") from exc


def _activation_name(layer) -> str:
    act = layer.get_config().get("activation", "linear")
    if isinstance(act, dict):
        act = act.get("config", {}).get("name", act.get("class_name", "?"))
    return str(act)


def dense_chain(model, path: str = "<memory>", sha256: str = "") -> DenseChain:
    """Reduce a Sequential/functional chain of Dense layers to kernels, biases and activations."""
    layers: list[tuple[np.ndarray, np.ndarray, str]] = []
    names: list[str] = []
    for layer in model.layers:
        kind = type(layer).__name__
        if kind in ("InputLayer", "Dropout"):
            continue
        if kind == "Flatten":
            if layers:
                raise MTZError(f"{path}: Flatten after a Dense layer ({layer.name}) is not a chain the zipper reads")
            continue
        if kind == "Activation":
            act = _activation_name(layer)
            if not layers or layers[-1][2] != "linear":
                raise MTZError(f"{path}: Activation layer {layer.name} must follow a Dense layer without activation")
            k, b, _ = layers[-1]
            layers[-1] = (k, b, act)
            continue
        if kind != "Dense":
            raise MTZError(f"{path}: unsupported layer {layer.name!r} ({kind}); the dense zipper handles {SUPPORTED}")
        kernel = np.asarray(layer.kernel.numpy())
        bias = np.asarray(layer.bias.numpy()) if layer.use_bias else np.zeros(kernel.shape[1], kernel.dtype)
        act = _activation_name(layer)
        if act not in ACTIVATIONS:
            raise MTZError(f"{path}: activation {act!r} of layer {layer.name} is not supported; "
                           f"use one of {', '.join(ACTIVATIONS)}")
        if not (np.all(np.isfinite(kernel)) and np.all(np.isfinite(bias))):
            raise MTZError(f"{path}: layer {layer.name} has NaN or infinite weights: retrain or repair the model")
        layers.append((kernel, bias, act))
        names.append(layer.name)
    if len(layers) < 2:
        raise MTZError(f"{path}: needs at least one hidden Dense layer and an output layer, found {len(layers)}")
    input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    if int(np.prod(input_shape)) != layers[0][0].shape[0]:
        raise MTZError(f"{path}: input of {input_shape} does not feed the first Dense layer directly")
    return DenseChain(path, sha256, input_shape, layers, names)


def read_dense_chain(path: str | os.PathLike) -> DenseChain:
    return dense_chain(load_keras_model(path), str(path), sha256_of(path))

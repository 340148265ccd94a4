"""Which reader a model file takes, by its suffix: .keras (Keras 3, safe mode) or .onnx (what
torch.onnx.export writes). Every place that opens a user's model goes through here."""

from __future__ import annotations

import os
from pathlib import Path

from mtz_mobile.errors import MTZError

from .keras_io import load_keras_model, read_model as read_keras
from .onnx_io import OnnxPredictor, read_onnx_model

FORMATS = {".keras": "keras", ".onnx": "onnx"}
# the layout each format's models take their input in (the zipped file always takes NHWC)
SOURCE_LAYOUTS = {"keras": "NHWC", "onnx": "NCHW"}


def model_format(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    if suffix not in FORMATS:
        raise MTZError(f"{path} is neither a .keras nor a .onnx file: save the model with model.save('name.keras') "
                       "or export it with torch.onnx.export(model, x, 'name.onnx')")
    return FORMATS[suffix]


def source_name(task: str, path: str | os.PathLike) -> str:
    """The name a task's model is kept under in a zip directory's sources/ (a model parsed in
    memory, with no file, is named as a Keras one, as before ONNX was read)."""
    return f"{task}.onnx" if Path(path).suffix.lower() == ".onnx" else f"{task}.keras"


def read_model(path: str | os.PathLike):
    """The file as a keras_io.ParsedModel."""
    if model_format(path) == "onnx":
        return read_onnx_model(path)
    return read_keras(path)


def load_original(path: str | os.PathLike):
    """Something with Keras' ``predict(x, batch_size=, verbose=)`` computing the original model on
    samples in the data specs' layout (NHWC): the Keras model, or the ONNX model in onnxruntime."""
    if model_format(path) == "onnx":
        return OnnxPredictor(path)
    return load_keras_model(path)

"""One Keras layer → one ParsedNode (keras_io.parse_model walks the graph and folds).

1-D layers map onto the 2-D ones with height 1: an (L, C) output is recorded as
(1, L, C), a Conv1D kernel (k, Cin, Cout) as a conv2d kernel (1, k, Cin, Cout), strides,
dilations and pool sizes as [1, s].
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mtz_mobile.errors import MTZError

from .ops import ACTIVATIONS

ACTIVATION_ALIASES = {"swish": "silu", "hard_swish": "hard_silu"}
ACTIVATION_NAMES = tuple(ACTIVATIONS) + tuple(ACTIVATION_ALIASES)
LINEAR_OPS = ("dense", "conv2d", "depthwise")
ONE_D_KINDS = ("Conv1D", "DepthwiseConv1D", "MaxPooling1D", "AveragePooling1D", "GlobalAveragePooling1D",
               "ZeroPadding1D", "Cropping1D", "SeparableConv1D")
SUPPORTED = ("Dense, Conv1D/2D, DepthwiseConv1D/2D and SeparableConv1D/2D (depth_multiplier 1), Max/AveragePooling1D/2D, "
             "GlobalAveragePooling1D/2D, Flatten, Reshape (of 1-sized axes), ZeroPadding1D/2D, Cropping1D/2D, Add, "
             "Multiply (squeeze-and-excite), BatchNormalization, Activation, ReLU, Dropout, Rescaling and "
             "Normalization (right after the input), InputLayer")


@dataclass
class ParsedNode:
    name: str
    op: str                      # input | dense | conv2d | depthwise | a pass op of network.PASS_OPS
    inputs: list[int]
    attrs: dict = field(default_factory=dict)
    kernel: np.ndarray | None = None
    bias: np.ndarray | None = None
    activation: str = "linear"   # fused activation of a weight node
    out_shape: tuple[int, ...] = ()   # per-sample output shape in this model (1-D nets: (1, L, C))


def activation_name(layer, path) -> str:
    if type(layer).__name__ == "ReLU":
        cfg = layer.get_config()
        if not cfg.get("negative_slope") and not cfg.get("threshold") and cfg.get("max_value") in (None, 6.0):
            return "relu" if cfg.get("max_value") is None else "relu6"
        raise MTZError(f"{path}: ReLU layer {layer.name} with a slope, threshold or cap other than 6 is not supported")
    act = layer.get_config().get("activation", "linear")
    if isinstance(act, dict):
        act = act.get("config", {}).get("name", act.get("class_name", "?"))
    act = ACTIVATION_ALIASES.get(str(act), str(act))
    if act not in ACTIVATIONS:
        raise MTZError(f"{path}: activation {act!r} of layer {layer.name} is not supported; "
                       f"use one of {', '.join(ACTIVATION_NAMES)}")
    return act


def check_finite(path, layer, *arrays) -> None:
    for a in arrays:
        if not np.all(np.isfinite(a)):
            raise MTZError(f"{path}: layer {layer.name} has NaN or infinite weights: retrain or repair the model")


def _weights(layer, path, kernel):
    bias = np.asarray(layer.bias.numpy()) if layer.use_bias else np.zeros(kernel.shape[-1], kernel.dtype)
    check_finite(path, layer, kernel, bias)
    return kernel, bias


def _pair(value, one_d: bool) -> list[int]:
    value = [int(v) for v in (value if isinstance(value, (list, tuple)) else [value])]
    return [1] + value if one_d else value


def _check_channels_last(layer, path) -> None:
    if layer.get_config().get("data_format", "channels_last") != "channels_last":
        raise MTZError(f"{path}: {layer.name} is channels_first: re-save the model channels_last")


def _conv_node(layer, kind: str, inputs, path, shape) -> ParsedNode:
    cfg = layer.get_config()
    one_d = kind.endswith("1D")
    _check_channels_last(layer, path)
    if cfg["padding"] not in ("valid", "same"):
        raise MTZError(f"{path}: {layer.name} uses padding {cfg['padding']!r}: use 'valid' or 'same' "
                       "(pad causally with a ZeroPadding1D before it)")
    if kind.startswith("Depthwise"):
        if cfg.get("depth_multiplier", 1) != 1:
            raise MTZError(f"{path}: {kind} layer {layer.name!r} has depth_multiplier {cfg['depth_multiplier']}: "
                           "only 1 is supported; follow it with a 1×1 Conv2D to widen instead")
        kernel = np.asarray(layer.kernel.numpy())[..., 0]
        op = "depthwise"
    else:
        if cfg.get("groups", 1) != 1:
            raise MTZError(f"{path}: grouped convolution {layer.name} is not supported: use groups=1")
        kernel = np.asarray(layer.kernel.numpy())
        op = "conv2d"
    kernel, bias = _weights(layer, path, kernel[None] if one_d else kernel)
    attrs = {"kernel_size": list(kernel.shape[:2]), "strides": _pair(cfg["strides"], one_d), "padding": cfg["padding"],
             "dilation": _pair(cfg["dilation_rate"], one_d)}
    return ParsedNode(layer.name, op, inputs, attrs, kernel, bias, activation_name(layer, path), shape)


def separable_nodes(layer, inputs, path, shape, dw_shape) -> tuple[ParsedNode, ParsedNode]:
    """SeparableConv1D/2D = a depthwise node (its channels follow its input's pairing) and a
    pointwise 1×1 conv2d (free pairing) reading it; the bias and activation belong to the latter."""
    cfg = layer.get_config()
    one_d = type(layer).__name__.endswith("1D")
    _check_channels_last(layer, path)
    if cfg["padding"] not in ("valid", "same"):
        raise MTZError(f"{path}: {layer.name} uses padding {cfg['padding']!r}: use 'valid' or 'same'")
    if cfg.get("depth_multiplier", 1) != 1:
        raise MTZError(f"{path}: separable layer {layer.name!r} has depth_multiplier {cfg['depth_multiplier']}: "
                       "only 1 is supported")
    depthwise = np.asarray(layer.depthwise_kernel.numpy())[..., 0]
    pointwise = np.asarray(layer.pointwise_kernel.numpy())
    if one_d:
        depthwise, pointwise = depthwise[None], pointwise[None]
    check_finite(path, layer, depthwise)
    attrs = {"kernel_size": list(depthwise.shape[:2]), "strides": _pair(cfg["strides"], one_d),
             "padding": cfg["padding"], "dilation": _pair(cfg["dilation_rate"], one_d)}
    dw = ParsedNode(f"{layer.name}_depthwise", "depthwise", inputs, attrs, depthwise,
                    np.zeros(depthwise.shape[-1], depthwise.dtype), "linear", dw_shape)
    kernel, bias = _weights(layer, path, pointwise)
    pw_attrs = {"kernel_size": [1, 1], "strides": [1, 1], "padding": "valid", "dilation": [1, 1]}
    return dw, ParsedNode(layer.name, "conv2d", [], pw_attrs, kernel, bias, activation_name(layer, path), shape)


def _reshape_node(layer, inputs, path, shape, in_shape) -> ParsedNode:
    # only 1-sized axes may come or go: then the channel axis keeps its values and order
    if in_shape[-1] != shape[-1] or int(np.prod(in_shape[:-1])) != 1 or int(np.prod(shape[:-1])) != 1:
        raise MTZError(f"{path}: Reshape layer {layer.name!r} changes {tuple(in_shape)} into {tuple(shape)}; only "
                       "adding or removing 1-sized axes before the channels is supported: use Flatten instead")
    return ParsedNode(layer.name, "reshape", inputs, {"shape": list(shape)}, out_shape=shape)


def _border_node(layer, kind: str, inputs, path, shape) -> ParsedNode:
    """ZeroPadding / Cropping 1D/2D as [[top, bottom], [left, right]]."""
    _check_channels_last(layer, path)
    cfg = layer.get_config()
    amount = cfg["padding" if kind.startswith("Zero") else "cropping"]
    sides = [[0, 0], [int(v) for v in amount]] if kind.endswith("1D") else [[int(v) for v in a] for a in amount]
    op, key = ("zeropad", "pads") if kind.startswith("Zero") else ("crop", "crops")
    return ParsedNode(layer.name, op, inputs, {key: sides}, out_shape=shape)


def _multiply_node(layer, inputs, path, shape, in_shapes) -> ParsedNode:
    if len(inputs) != 2:
        raise MTZError(f"{path}: Multiply layer {layer.name!r} has {len(inputs)} inputs: only a map times a "
                       "per-channel gate (squeeze-and-excite) is supported")
    is_gate = [int(np.prod(s[:-1])) == 1 for s in in_shapes]
    return ParsedNode(layer.name, "multiply", inputs, {"map": 1 if is_gate[0] and not is_gate[1] else 0},
                      out_shape=shape)


def layer_node(layer, inputs: list[int], in_shapes: list[tuple], path: str, one_d: bool) -> ParsedNode:
    kind = type(layer).__name__
    shape = tuple(int(d) for d in layer.output.shape[1:])
    if one_d and len(shape) == 2:
        shape = (1,) + shape
    if kind == "Dense":
        kernel, bias = _weights(layer, path, np.asarray(layer.kernel.numpy()))
        return ParsedNode(layer.name, "dense", inputs, {}, kernel, bias, activation_name(layer, path), shape)
    if kind in ("Conv2D", "Conv1D", "DepthwiseConv2D", "DepthwiseConv1D"):
        return _conv_node(layer, kind, inputs, path, shape)
    if kind in ("MaxPooling2D", "AveragePooling2D", "MaxPooling1D", "AveragePooling1D"):
        _check_channels_last(layer, path)
        cfg = layer.get_config()
        attrs = {"pool_size": _pair(cfg["pool_size"], one_d),
                 "strides": _pair(cfg["strides"] or cfg["pool_size"], one_d), "padding": cfg["padding"]}
        return ParsedNode(layer.name, "maxpool" if kind.startswith("Max") else "avgpool", inputs, attrs,
                          out_shape=shape)
    if kind in ("GlobalAveragePooling2D", "GlobalAveragePooling1D"):
        _check_channels_last(layer, path)
        return ParsedNode(layer.name, "gap", inputs, {"keepdims": bool(layer.get_config().get("keepdims"))},
                          out_shape=shape)
    if kind in ("Flatten", "Add"):
        return ParsedNode(layer.name, kind.lower(), inputs, out_shape=shape)
    if kind == "Multiply":
        return _multiply_node(layer, inputs, path, shape, in_shapes)
    if kind == "Reshape":
        return _reshape_node(layer, inputs, path, shape, in_shapes[0])
    if kind in ("ZeroPadding2D", "ZeroPadding1D", "Cropping2D", "Cropping1D"):
        return _border_node(layer, kind, inputs, path, shape)
    if kind in ("Activation", "ReLU"):
        return ParsedNode(layer.name, "activation", inputs, {"activation": activation_name(layer, path)},
                          out_shape=shape)
    raise MTZError(f"{path}: unsupported layer {layer.name!r} ({kind}); the zipper handles {SUPPORTED}")


def fold_batchnorm(node: ParsedNode, layer, path: str) -> None:
    """conv/dense/depthwise → BN becomes one layer: equal at inference. Output channels are the
    kernel's last axis for all three (a depthwise kernel is (kh, kw, C))."""
    cfg = layer.get_config()
    rank = len(layer.output.shape) - 1
    if cfg.get("axis") not in (-1, [-1], rank, [rank]):
        raise MTZError(f"{path}: BatchNormalization {layer.name} normalises another axis than channels")
    gamma = np.asarray(layer.gamma.numpy()) if layer.scale else np.ones_like(node.bias)
    beta = np.asarray(layer.beta.numpy()) if layer.center else np.zeros_like(node.bias)
    mean, var = np.asarray(layer.moving_mean.numpy()), np.asarray(layer.moving_variance.numpy())
    scale = gamma / np.sqrt(var + cfg["epsilon"])
    node.kernel = node.kernel * scale
    node.bias = (node.bias - mean) * scale + beta
    check_finite(path, layer, node.kernel, node.bias)


def preprocessing_affine(layer, path: str) -> tuple[np.ndarray, np.ndarray]:
    """Rescaling or Normalization as x·scale + offset, per channel or scalar (1-d arrays)."""
    import keras

    kind = type(layer).__name__
    if kind == "Rescaling":
        scale, offset = np.asarray(layer.scale, np.float64), np.asarray(layer.offset, np.float64)
    else:
        cfg = layer.get_config()
        if cfg.get("invert"):
            raise MTZError(f"{path}: Normalization {layer.name!r} inverts: only forward normalisation is supported")
        mean = np.asarray(keras.ops.convert_to_numpy(layer.mean), np.float64)
        var = np.asarray(keras.ops.convert_to_numpy(layer.variance), np.float64)
        if int(np.prod(mean.shape[:-1])) != 1:
            raise MTZError(f"{path}: Normalization {layer.name!r} normalises another axis than channels: "
                           "use axis=-1")
        # Keras: (x - mean) / max(sqrt(var), epsilon)
        scale = 1.0 / np.maximum(np.sqrt(var), keras.backend.epsilon())
        offset = -mean * scale
    scale, offset = scale.reshape(-1), offset.reshape(-1)
    if scale.size > 1 and offset.size == 1:
        offset = np.full_like(scale, offset[0])
    if offset.size > 1 and scale.size == 1:
        scale = np.full_like(offset, scale[0])
    check_finite(path, layer, scale, offset)
    return scale, offset

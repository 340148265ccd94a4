"""One ONNX node's arithmetic in the network representation's terms (onnx_io walks the graph).

ONNX (as torch.onnx.export writes it) is NCHW with PyTorch's symmetric, explicit padding; the
representation is NHWC with TensorFlow's "valid"/"same". Kernels are transposed here, and a
padding that is neither becomes a zero-padding node before a "valid" layer (exact for
convolutions; for max pooling only on non-negative inputs, which onnx_io checks).
"""

from __future__ import annotations

import numpy as np

from mtz_mobile.errors import MTZError

from .ops import same_padding

# ONNX op type → the representation's activation name (fused into the weight node before it)
ACTIVATION_OPS = {"Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "HardSwish": "hard_silu"}
# x · act(x), written as two nodes by exporters (torch's SiLU is Sigmoid then Mul)
GATED_SELF = {"Sigmoid": "silu", "HardSigmoid": "hard_silu"}
PASS_THROUGH = ("Dropout", "Identity")
SUPPORTED_OPS = ("Conv (groups 1 or depthwise), Gemm, MatMul, Add (residual, or a bias after MatMul), "
                 "BatchNormalization (after Conv/Gemm), Relu, Clip(0, 6), HardSwish, HardSigmoid, Sigmoid, Tanh, "
                 "Softmax, Mul (squeeze-and-excite gate, x·sigmoid(x)), GlobalAveragePool, ReduceMean over H and W, "
                 "AveragePool, MaxPool, Flatten, Reshape/Squeeze to (N, features), Dropout, Identity, Constant, and "
                 "Sub/Div/Mul/Add by per-channel constants right after the input (normalisation)")


def attributes(node) -> dict:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def label(node) -> str:
    return f"{node.op_type} node {node.name or node.output[0]!r}"


def conv_kernel(node, weight: np.ndarray, channels_in: int, path: str) -> tuple[str, np.ndarray]:
    """("conv2d", (kh, kw, Cin, Cout)) or ("depthwise", (kh, kw, C)) from an ONNX (Cout, Cin/g, kh, kw)."""
    groups = int(attributes(node).get("group", 1))
    if weight.ndim != 4:
        raise MTZError(f"{path}: {label(node)} is a {weight.ndim - 2}-d convolution: only 2-d Conv is supported")
    if groups == 1:
        return "conv2d", np.ascontiguousarray(weight.transpose(2, 3, 1, 0))
    if groups == channels_in == weight.shape[0] and weight.shape[1] == 1:
        return "depthwise", np.ascontiguousarray(weight[:, 0].transpose(1, 2, 0))
    raise MTZError(f"{path}: {label(node)} has group={groups} on {channels_in} channels with {weight.shape[0]} "
                   "outputs: only group=1 and depthwise (group = channels = outputs) are supported")


def window(node, kernel_hw, in_hw, path: str) -> dict:
    """Strides, dilations and padding of a Conv or pooling node: {"strides", "dilation", "padding",
    "explicit"} where "explicit" is [[top, bottom], [left, right]] for a zero-padding node before a
    "valid" layer, or None."""
    a = attributes(node)
    strides = [int(s) for s in a.get("strides", [1, 1])]
    dilation = [int(d) for d in a.get("dilations", [1, 1])]
    auto_pad = a.get("auto_pad", b"NOTSET")
    auto_pad = auto_pad.decode() if isinstance(auto_pad, bytes) else str(auto_pad)
    if len(strides) != 2 or len(dilation) != 2:
        raise MTZError(f"{path}: {label(node)} is not 2-d: only 2-d convolution and pooling are supported")
    settings = {"strides": strides, "dilation": dilation, "padding": "valid", "explicit": None}
    if auto_pad == "VALID":
        return settings
    if auto_pad == "SAME_UPPER":   # the larger half after, as TensorFlow's "same"
        return dict(settings, padding="same")
    if auto_pad not in ("NOTSET", ""):
        raise MTZError(f"{path}: {label(node)} uses auto_pad={auto_pad}: export with explicit pads")
    top, left, bottom, right = (int(p) for p in a.get("pads", [0, 0, 0, 0]))
    if not (top or left or bottom or right):
        return settings
    same = [same_padding(n, k, s, d) for n, k, s, d in zip(in_hw, kernel_hw, strides, dilation)]
    if same == [(top, bottom), (left, right)]:
        return dict(settings, padding="same")
    return dict(settings, explicit=[[top, bottom], [left, right]])


def pool_settings(node, in_hw, path: str) -> tuple[dict, list[int]]:
    a = attributes(node)
    kernel = [int(k) for k in a.get("kernel_shape", [])]
    if len(kernel) != 2:
        raise MTZError(f"{path}: {label(node)} has kernel_shape {kernel}: only 2-d pooling is supported")
    if any(int(d) != 1 for d in a.get("dilations", [1, 1])) or int(a.get("storage_order", 0)) or len(node.output) > 1:
        raise MTZError(f"{path}: {label(node)} uses dilations, storage_order or an indices output: not supported")
    settings = window(node, kernel, in_hw, path)
    if int(a.get("ceil_mode", 0)):
        pads = settings["explicit"] or [[0, 0], [0, 0]]
        floor_size = [(n + sum(p) - k) // s + 1 for n, p, k, s in zip(in_hw, pads, kernel, settings["strides"])]
        ceil_size = [-(-(n + sum(p) - k) // s) + 1 for n, p, k, s in zip(in_hw, pads, kernel, settings["strides"])]
        if floor_size != ceil_size or settings["padding"] == "same":
            raise MTZError(f"{path}: {label(node)} uses ceil_mode=1 where it changes the output size: export "
                           "with ceil_mode=False")
    return settings, kernel


def gemm_weights(node, b: np.ndarray, c: np.ndarray | None, path: str) -> tuple[np.ndarray, np.ndarray]:
    """A Gemm's kernel (in, out) and bias (out,): alpha·A·op(B) + beta·C."""
    a = attributes(node)
    if int(a.get("transA", 0)):
        raise MTZError(f"{path}: {label(node)} transposes its input (transA=1): not supported")
    if b.ndim != 2:
        raise MTZError(f"{path}: {label(node)} has {b.ndim}-d weights: only (in, out) matrices")
    kernel = (b.T if int(a.get("transB", 0)) else b) * float(a.get("alpha", 1.0))
    units = kernel.shape[1]
    bias = np.zeros(units, np.float32) if c is None else np.broadcast_to(
        np.asarray(c, np.float32) * float(a.get("beta", 1.0)), (1, units)).reshape(units)
    return np.asarray(kernel, np.float32), np.asarray(bias, np.float32)


def nchw_rows_to_nhwc(kernel: np.ndarray, hwc: tuple[int, int, int]) -> np.ndarray:
    """A Dense kernel after a flatten of an NCHW map (row c·H·W + p) re-ordered for the NHWC flatten
    the representation runs (row p·C + c)."""
    h, w, c = hwc
    return np.ascontiguousarray(kernel.reshape(c, h * w, -1).transpose(1, 0, 2).reshape(h * w * c, -1))


def batchnorm_fold(kernel: np.ndarray, bias: np.ndarray, stats: list[np.ndarray], epsilon: float):
    """conv/dense/depthwise then BatchNormalization as one layer (output channels on the kernel's
    last axis for all three); ``stats`` = (scale, B, mean, var) in ONNX's order."""
    gamma, beta, mean, var = (np.asarray(s, np.float64) for s in stats)
    scale = gamma / np.sqrt(var + epsilon)
    return (kernel * scale).astype(np.float32), ((bias - mean) * scale + beta).astype(np.float32)


def clip_activation(node, bounds: list, path: str) -> str:
    """Clip(0, 6) is relu6 (torch's ReLU6), Clip(0, +inf) relu."""
    low, high = (None if b is None else float(np.asarray(b).reshape(-1)[0]) for b in bounds)
    if low == 0.0 and high == 6.0:
        return "relu6"
    if low == 0.0 and (high is None or np.isinf(high)):
        return "relu"
    raise MTZError(f"{path}: {label(node)} clips to [{low}, {high}]: only Clip(0, 6) (ReLU6) is supported")


def hard_sigmoid_activation(node, path: str) -> str:
    a = attributes(node)
    if abs(float(a.get("alpha", 0.2)) - 1 / 6) < 1e-6 and abs(float(a.get("beta", 0.5)) - 0.5) < 1e-6:
        return "hard_sigmoid"   # torch's Hardsigmoid: clip(x/6 + 1/2, 0, 1) = relu6(x + 3)/6
    raise MTZError(f"{path}: {label(node)} has alpha {a.get('alpha', 0.2)}, beta {a.get('beta', 0.5)}: only "
                   "alpha=1/6, beta=0.5 (torch.nn.Hardsigmoid) is supported")

"""The few operations a zipped network's forward pass needs, for numpy and for TensorFlow.

The numpy ops are the reference (plain loops over kernel positions); the TensorFlow ops are
what calibration and retraining run. Both follow TensorFlow's conventions: NHWC, SAME padding
split with the smaller half before.
"""

from __future__ import annotations

import math

import numpy as np

from mtz_mobile.errors import MTZError


def canonical_shape(shape, layout: str | None = None) -> tuple[int, ...]:
    """A per-sample shape as the network sees it: (H, W) images get one channel; a 1-D net's
    (L, C) sequence (``layout`` "1d", which the shape alone cannot tell from an image) becomes a
    (1, L, C) map, so 1-D layers run as 2-D ones of height 1."""
    if layout == "1d":
        return (1,) + tuple(shape) if len(shape) == 2 else tuple(shape)
    return tuple(shape) + ((1,) if len(shape) == 2 else ())


def conv_output_size(size: int, k: int, s: int, d: int, padding: str) -> int:
    if padding == "same":
        return math.ceil(size / s)
    return (size - (k - 1) * d - 1) // s + 1


def same_padding(size: int, k: int, s: int, d: int) -> tuple[int, int]:
    out = conv_output_size(size, k, s, d, "same")
    total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
    return total // 2, total - total // 2


def patch_rows(x: np.ndarray, attrs, rows: np.ndarray) -> np.ndarray:
    """Rows ``rows`` of the im2col matrix of x, (n, kh·kw·C) in TensorFlow's ``extract_patches``
    order (kernel position major, channel minor), a row per output position (image, y, x) in
    C order: the same values as ``patches(x).reshape(-1, kh·kw·C)[rows]``, without building the
    other rows — the zipper keeps a small random subset of a wide map's positions."""
    kh, kw = attrs["kernel_size"]
    sh, sw = attrs["strides"]
    dh, dw = attrs.get("dilation", [1, 1])
    n, h, w, c = x.shape
    oh = conv_output_size(h, kh, sh, dh, attrs["padding"])
    ow = conv_output_size(w, kw, sw, dw, attrs["padding"])
    if attrs["padding"] == "same":
        (pt, pb), (pl, pr) = same_padding(h, kh, sh, dh), same_padding(w, kw, sw, dw)
        if pt or pb or pl or pr:
            x = np.pad(x, [(0, 0), (pt, pb), (pl, pr), (0, 0)])
    b, y, z = np.unravel_index(np.asarray(rows, np.int64), (n, oh, ow))
    out = np.empty((len(b), kh, kw, c), x.dtype)
    for i in range(kh):
        for j in range(kw):
            out[:, i, j] = x[b, y * sh + i * dh, z * sw + j * dw]
    return out.reshape(len(b), kh * kw * c)


def canonical(x, task_shape):
    """Samples in the task's canonical shape (see canonical_shape; callers pass it resolved)."""
    return x.reshape((len(x),) + tuple(task_shape))


def pad_to(x: np.ndarray, joint_shape) -> np.ndarray:
    """Zero-pad after the data (bottom/right, extra channels, vector tail): the joint input."""
    pads = [(0, 0)] + [(0, j - n) for n, j in zip(x.shape[1:], joint_shape)]
    if any(p[1] < 0 for p in pads):
        raise MTZError(f"input of shape {x.shape[1:]} is larger than the joint input {tuple(joint_shape)}")
    return np.pad(x, pads) if any(p[1] for p in pads) else x


def _sigmoid(z):
    return 0.5 * (1.0 + np.tanh(0.5 * z))  # no overflow warning for large |z|, equal to 1/(1+e^-z)


def _hard_sigmoid(z):
    return np.clip(z + 3.0, 0.0, 6.0) / 6.0  # Keras 3: relu6(x + 3) / 6


def _gelu(z):
    from scipy.special import erf

    return 0.5 * z * (1.0 + erf(z / np.sqrt(2.0)).astype(z.dtype))  # Keras' default approximate=False


# Keras names (aliases resolved by keras_io: swish → silu, hard_swish → hard_silu)
ACTIVATIONS = {
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "relu6": lambda z: np.clip(z, 0.0, 6.0),
    "tanh": np.tanh,
    "sigmoid": _sigmoid,
    "hard_sigmoid": _hard_sigmoid,
    "hard_silu": lambda z: z * _hard_sigmoid(z),
    "silu": lambda z: z * _sigmoid(z),
    "gelu": _gelu,
    "softmax": lambda z: (lambda e: e / e.sum(axis=-1, keepdims=True))(np.exp(z - z.max(axis=-1, keepdims=True))),
}


class NumpyOps:
    def prepare_input(self, x, task_shape, joint_shape):
        return pad_to(canonical(np.asarray(x, np.float32), task_shape), joint_shape)

    def dense(self, x, w):
        return x @ w.astype(x.dtype, copy=False)

    def _windows(self, x, kh, kw, attrs, fill=0.0):
        """Yield (i, j, slice of x) for every kernel position: (n, oh, ow, C) each."""
        sh, sw = attrs["strides"]
        dh, dw = attrs.get("dilation", [1, 1])
        n, h, w, c = x.shape
        if attrs["padding"] == "same":
            (pt, pb), (pl, pr) = same_padding(h, kh, sh, dh), same_padding(w, kw, sw, dw)
            x = np.pad(x, [(0, 0), (pt, pb), (pl, pr), (0, 0)], constant_values=fill)
        oh = conv_output_size(h, kh, sh, dh, attrs["padding"])
        ow = conv_output_size(w, kw, sw, dw, attrs["padding"])
        for i in range(kh):
            for j in range(kw):
                yield i, j, x[:, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw, :]

    def conv(self, x, w, attrs):
        w = w.astype(x.dtype, copy=False)
        out = None
        for i, j, window in self._windows(x, w.shape[0], w.shape[1], attrs):
            y = window @ w[i, j]
            out = y if out is None else out + y
        return out

    def depthwise(self, x, w, attrs):
        """Channel c of the output reads channel c of x only; w is (kh, kw, C)."""
        w = w.reshape(w.shape[:3]).astype(x.dtype, copy=False)
        out = None
        for i, j, window in self._windows(x, w.shape[0], w.shape[1], attrs):
            y = window * w[i, j]
            out = y if out is None else out + y
        return out

    def patches(self, x, attrs):
        kh, kw = attrs["kernel_size"]
        parts = [window for _, _, window in self._windows(x, kh, kw, attrs)]
        return np.stack(parts, axis=3).reshape(parts[0].shape[:3] + (-1,))

    def pool(self, kind, x, attrs):
        ph, pw = attrs["pool_size"]
        settings = dict(attrs, dilation=[1, 1])
        if kind == "maxpool":
            out = None
            for _, _, window in self._windows(x, ph, pw, settings, fill=-np.inf):
                out = window if out is None else np.maximum(out, window)
            return out
        total = count = None
        ones = np.ones_like(x[:1])
        for (_, _, wv), (_, _, wc) in zip(self._windows(x, ph, pw, settings), self._windows(ones, ph, pw, settings)):
            total = wv if total is None else total + wv
            count = wc if count is None else count + wc
        return total / count  # TensorFlow averages over the window's real (unpadded) inputs

    def channel_grams(self, patches):
        """Σ_n p̃ p̃ᵀ for each channel c: ``patches`` (n, k, C) → (C, k+1, k+1), p̃ = (patches[n, :, c], 1)."""
        p = np.ones((patches.shape[2], len(patches), patches.shape[1] + 1), np.float32)
        p[:, :, :-1] = np.transpose(patches, (2, 0, 1))
        return p.transpose(0, 2, 1) @ p

    def gap(self, x, keepdims=False):
        return x.mean(axis=(1, 2), keepdims=keepdims)

    def flatten(self, x):
        return x.reshape(len(x), -1)

    def reshape(self, x, shape):
        return x.reshape((len(x),) + tuple(shape))

    def zeropad(self, x, pads):
        return np.pad(x, [(0, 0), tuple(pads[0]), tuple(pads[1]), (0, 0)])

    def crop(self, x, crops):
        (t, b), (l, r) = crops
        return x[:, t:x.shape[1] - b, l:x.shape[2] - r, :]

    def rescale(self, x, scale, offset):
        return x * np.asarray(scale, x.dtype) + np.asarray(offset, x.dtype)

    def multiply(self, x, gate):
        return x * gate

    def activation(self, name, z):
        return ACTIVATIONS[name](z)

    def concat(self, parts):
        return np.concatenate(parts, axis=-1)


class TFOps:
    def __init__(self):
        import tensorflow as tf

        self.tf = tf
        hard_sigmoid = lambda z: tf.nn.relu6(z + 3.0) / 6.0  # noqa: E731 — Keras 3's definition
        self.acts = {"linear": tf.identity, "relu": tf.nn.relu, "relu6": tf.nn.relu6, "tanh": tf.tanh,
                     "sigmoid": tf.sigmoid, "hard_sigmoid": hard_sigmoid, "hard_silu": lambda z: z * hard_sigmoid(z),
                     "silu": tf.nn.silu, "gelu": lambda z: tf.nn.gelu(z, approximate=False),
                     "softmax": tf.nn.softmax}

    def prepare_input(self, x, task_shape, joint_shape):
        tf = self.tf
        shape = list(task_shape)
        x = tf.reshape(tf.cast(x, tf.float32), [-1, *shape])
        pads = [[0, 0]] + [[0, j - n] for n, j in zip(shape, joint_shape)]
        return tf.pad(x, pads) if any(p[1] for p in pads) else x

    def dense(self, x, w):
        return self.tf.matmul(x, self.tf.cast(w, self.tf.float32))

    def conv(self, x, w, attrs):
        return self.tf.nn.conv2d(x, self.tf.cast(w, self.tf.float32), strides=[1, *attrs["strides"], 1],
                                 padding=attrs["padding"].upper(), dilations=[1, *attrs.get("dilation", [1, 1]), 1])

    def depthwise(self, x, w, attrs):
        """w is (kh, kw, C) (a block) or (kh, kw, C, 1) (the converter's stored operand)."""
        tf = self.tf
        w = tf.cast(w, tf.float32)
        if len(w.shape) == 3:
            w = w[..., None]
        sh, sw = attrs["strides"]
        if w.shape[0] == 1 and x.shape[1] == 1:
            # TF's depthwise kernel wants equal strides; on a height-1 map (a 1-D net) the height
            # stride changes nothing, so use the width's
            sh = sw
        return tf.nn.depthwise_conv2d(x, w, strides=[1, sh, sw, 1], padding=attrs["padding"].upper(),
                                      dilations=attrs.get("dilation", [1, 1]))

    def patches(self, x, attrs):
        kh, kw = attrs["kernel_size"]
        return self.tf.image.extract_patches(x, sizes=[1, kh, kw, 1], strides=[1, *attrs["strides"], 1],
                                             rates=[1, *attrs.get("dilation", [1, 1]), 1],
                                             padding=attrs["padding"].upper())

    def pool(self, kind, x, attrs):
        fn = self.tf.nn.max_pool2d if kind == "maxpool" else self.tf.nn.avg_pool2d
        return fn(x, ksize=attrs["pool_size"], strides=attrs["strides"], padding=attrs["padding"].upper())

    def channel_grams(self, patches):
        tf = self.tf  # one batched matmul over channels: twice numpy's speed on these k+1-wide products
        p = tf.transpose(tf.convert_to_tensor(patches, tf.float32), [2, 1, 0])        # (C, k, n)
        p = tf.concat([p, tf.ones([p.shape[0], 1, p.shape[2]], tf.float32)], axis=1)  # (C, k+1, n)
        return tf.linalg.matmul(p, p, transpose_b=True).numpy()

    def gap(self, x, keepdims=False):
        return self.tf.reduce_mean(x, axis=[1, 2], keepdims=keepdims)

    def flatten(self, x):
        return self.tf.reshape(x, [self.tf.shape(x)[0], -1])

    def reshape(self, x, shape):
        return self.tf.reshape(x, [-1, *shape])

    def zeropad(self, x, pads):
        return self.tf.pad(x, [[0, 0], list(pads[0]), list(pads[1]), [0, 0]])

    def crop(self, x, crops):
        (t, b), (l, r) = crops
        return x[:, t:x.shape[1] - b, l:x.shape[2] - r, :]

    def rescale(self, x, scale, offset):
        tf = self.tf
        return x * tf.constant(np.asarray(scale, np.float32)) + tf.constant(np.asarray(offset, np.float32))

    def multiply(self, x, gate):
        return x * gate

    def activation(self, name, z):
        return self.acts[name](z)

    def concat(self, parts):
        return self.tf.concat(parts, axis=-1)


NUMPY_OPS = NumpyOps()

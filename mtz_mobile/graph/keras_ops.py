"""The forward pass's operations in Keras 3's backend-neutral ops (``keras.ops``): what the zipper
runs on JAX (or any Keras backend) instead of TensorFlow's own ops (ops.TFOps).

The conventions are TensorFlow's, which ops.NumpyOps spells out the slow way: NHWC, SAME padding
split with the smaller half before, an average pool dividing by the window's real (unpadded)
inputs, patches in ``extract_patches`` order (kernel position major, channel minor). Patches are
gathered by strided slices, not by Keras' ``extract_patches`` (a convolution with a k²C-wide
identity kernel: k²C times the work). Every function here traces under ``jax.jit``: no value
leaves the backend.

Run eagerly on JAX (the zipper's calibration passes), each distinct primitive (a cast, a slice at
given offsets, a pad, even ``jnp.asarray`` of a numpy array) is compiled by XLA once per shape
before it runs: a ResNet pair's zip compiled 88 programs, 36 of them the patches' slices. So the
patches are one jitted function per convolution's settings (pad, k² slices and the concatenation
fused: one compilation per shape, one output written), and numpy operands (weights, cached maps)
are cast on the host and handed over by ``jax.device_put``, which compiles nothing. On JAX's CPU
device the patches of a numpy map (the Hessians' and compensation's, which go straight back to
numpy) are numpy's own copies: the same values, for 0.45 s of CPU per 1000×28×28×16 map against
XLA's 0.73 s (TensorFlow's extract_patches: 0.32 s).
"""

from __future__ import annotations

import numpy as np

from .ops import NUMPY_OPS, conv_output_size, same_padding


class KerasOps:
    def __init__(self):
        import keras

        self.k = keras.ops
        o = keras.ops
        self._jit, self._put, self._host_patches = _jit_and_put(keras.config.backend())
        self.acts = {"linear": lambda z: z, "relu": o.relu, "relu6": o.relu6, "tanh": o.tanh, "sigmoid": o.sigmoid,
                     "hard_sigmoid": o.hard_sigmoid, "hard_silu": o.hard_silu, "silu": o.silu,
                     "gelu": lambda z: o.gelu(z, approximate=False), "softmax": o.softmax}

    def prepare_input(self, x, task_shape, joint_shape):
        o = self.k
        shape = list(task_shape)
        x = o.reshape(self._f32(x), [-1, *shape])
        pads = [[0, 0]] + [[0, j - n] for n, j in zip(shape, joint_shape)]
        return o.pad(x, pads) if any(p[1] for p in pads) else x

    def dense(self, x, w):
        return self.k.matmul(self._f32(x), self._f32(w))

    def conv(self, x, w, attrs):
        return self.k.conv(self._f32(x), self._f32(w), strides=tuple(attrs["strides"]), padding=attrs["padding"],
                           dilation_rate=tuple(attrs.get("dilation", [1, 1])))

    def depthwise(self, x, w, attrs):
        """w is (kh, kw, C) (a block) or (kh, kw, C, 1) (the converter's stored operand)."""
        w = self._f32(w)
        if len(w.shape) == 3:
            w = self.k.expand_dims(w, -1)
        return self.k.depthwise_conv(self._f32(x), w, strides=tuple(attrs["strides"]), padding=attrs["padding"],
                                     dilation_rate=tuple(attrs.get("dilation", [1, 1])))

    def _windows(self, x, kh, kw, attrs):
        """(n, oh, ow, C) slices of x, one per kernel position in row-major order (as NumpyOps')."""
        sh, sw = attrs["strides"]
        dh, dw = attrs.get("dilation", [1, 1])
        _, h, w, _ = x.shape
        if attrs["padding"] == "same":
            (pt, pb), (pl, pr) = same_padding(h, kh, sh, dh), same_padding(w, kw, sw, dw)
            if pt or pb or pl or pr:
                x = self.k.pad(x, [[0, 0], [pt, pb], [pl, pr], [0, 0]])
        oh = conv_output_size(h, kh, sh, dh, attrs["padding"])
        ow = conv_output_size(w, kw, sw, dw, attrs["padding"])
        return [x[:, i * dh:i * dh + sh * (oh - 1) + 1:sh, j * dw:j * dw + sw * (ow - 1) + 1:sw, :]
                for i in range(kh) for j in range(kw)]

    def _f32(self, a):
        """float32 ``a``: a numpy array cast on the host and put on the device (no XLA compilation per
        shape), a tensor cast by the backend."""
        if isinstance(a, (np.ndarray, np.generic)):
            return self._put(np.asarray(a, np.float32))
        return self.k.cast(a, "float32")

    def patches(self, x, attrs):
        if self._host_patches and isinstance(x, np.ndarray):
            return NUMPY_OPS.patches(np.asarray(x, np.float32), attrs)
        key = (tuple(attrs["kernel_size"]), tuple(attrs["strides"]), tuple(attrs.get("dilation", [1, 1])),
               attrs["padding"])
        if key not in _PATCH_FNS:   # shared by every KerasOps: compiled once per process and shape
            fixed = dict(kernel_size=key[0], strides=key[1], dilation=key[2], padding=key[3])
            _PATCH_FNS[key] = self._jit(lambda v: self._patches(v, fixed))
        return _PATCH_FNS[key](x)

    def _patches(self, x, attrs):
        kh, kw = attrs["kernel_size"]
        parts = self._windows(x, kh, kw, attrs)
        return parts[0] if len(parts) == 1 else self.k.concatenate(parts, axis=-1)

    def pool(self, kind, x, attrs):
        fn = self.k.max_pool if kind == "maxpool" else self.k.average_pool
        return fn(self._f32(x), pool_size=tuple(attrs["pool_size"]), strides=tuple(attrs["strides"]),
                  padding=attrs["padding"])

    def channel_grams(self, patches):
        o = self.k  # one batched product over channels, as TFOps'
        p = o.transpose(o.convert_to_tensor(np.asarray(patches, np.float32)), [2, 1, 0])   # (C, k, n)
        p = o.concatenate([p, o.ones((p.shape[0], 1, p.shape[2]), "float32")], axis=1)     # (C, k+1, n)
        return np.asarray(o.matmul(p, o.transpose(p, [0, 2, 1])))

    def gap(self, x, keepdims=False):
        return self.k.mean(x, axis=(1, 2), keepdims=keepdims)

    def flatten(self, x):
        return self.k.reshape(x, [-1, int(np.prod(x.shape[1:]))])

    def reshape(self, x, shape):
        return self.k.reshape(x, [-1, *shape])

    def zeropad(self, x, pads):
        return self.k.pad(x, [[0, 0], list(pads[0]), list(pads[1]), [0, 0]])

    def crop(self, x, crops):
        (t, b), (l, r) = crops
        return x[:, t:x.shape[1] - b, l:x.shape[2] - r, :]

    def rescale(self, x, scale, offset):
        return x * np.asarray(scale, np.float32) + np.asarray(offset, np.float32)

    def multiply(self, x, gate):
        return x * gate

    def activation(self, name, z):
        return self.acts[name](z)

    def concat(self, parts):
        return self.k.concatenate(parts, axis=-1)


_PATCH_FNS: dict = {}


def _jit_and_put(backend: str):
    """How to compile a function of tensors, how to hand the backend a numpy array, and whether a
    numpy map's patches are cheaper on the host: on JAX ``jax.jit`` (one compilation per input
    shape), ``jax.device_put``, and where JAX runs on the CPU yes; elsewhere as they are, no."""
    if backend != "jax":
        return (lambda fn: fn), (lambda a: a), False
    import jax

    return jax.jit, jax.device_put, jax.default_backend() == "cpu"

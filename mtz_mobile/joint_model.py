"""The zipped network as one TensorFlow module: every weight block is one variable, used by
every task whose path contains it, so a gradient step on either task updates a shared block
for both — the joint model of Algorithm 1's light retraining."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .network import ZippedNetwork, bias_key, kernel_key

TF_ACTIVATIONS = {
    "linear": tf.identity,
    "relu": tf.nn.relu,
    "relu6": tf.nn.relu6,
    "tanh": tf.tanh,
    "sigmoid": tf.sigmoid,
    "softmax": tf.nn.softmax,
}


def _var_name(key: str) -> str:
    return key.replace("/", "_").replace("-", "_")


class JointModel(tf.Module):
    """Per-task forward passes over shared variables. Build it inside a strategy's scope to
    get mirrored variables."""

    def __init__(self, net: ZippedNetwork, name: str = "mtz_joint"):
        super().__init__(name=name)
        self.net = net
        self.blocks: dict[str, tf.Variable] = {}
        for key, arr in net.arrays(np.float32).items():
            self.blocks[key] = tf.Variable(arr, name=_var_name(key))

    def logits(self, task: str, x: tf.Tensor) -> tf.Tensor:
        """Task ``task``'s output before its final activation, in the task's own unit order."""
        net = self.net
        x = tf.reshape(tf.cast(x, tf.float32), [tf.shape(x)[0], -1])
        acts = {g: x for g, grp in enumerate(net.input_groups) if task in grp.owners}
        last = len(net.layers) - 1
        for l, layer in enumerate(net.layers):
            new = {}
            for go in layer.groups_of(task):
                z = self.blocks[bias_key(layer.name, go)]
                for (gi, g2) in sorted(layer.kernels):
                    if g2 == go and gi in acts:
                        z = z + tf.matmul(acts[gi], self.blocks[kernel_key(layer.name, gi, go)])
                new[go] = z if l == last else TF_ACTIVATIONS[layer.activations[task]](z)
            acts = new
        return tf.concat([acts[g] for g in sorted(acts)], axis=1) if len(acts) > 1 else acts[next(iter(acts))]

    def __call__(self, task: str, x: tf.Tensor) -> tf.Tensor:
        return TF_ACTIVATIONS[self.net.layers[-1].activations[task]](self.logits(task, x))

    def write_back(self) -> None:
        """Copy the variables' values into the plain network's arrays."""
        for layer in self.net.layers:
            for gi, go in layer.kernels:
                layer.kernels[(gi, go)] = self.blocks[kernel_key(layer.name, gi, go)].numpy().astype(np.float64)
            for go in layer.biases:
                layer.biases[go] = self.blocks[bias_key(layer.name, go)].numpy().astype(np.float64)

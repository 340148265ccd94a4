"""The zipped network as one TensorFlow module: every weight block is one variable, used by
every task whose path contains it, so a gradient step on either task updates a shared block
for both — the joint model of Algorithm 1's light retraining."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .network import BLOCK_DTYPE, ZippedNetwork, bias_key, kernel_key
from .ops import TFOps


def _var_name(key: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in key)


class JointModel(tf.Module):
    """Per-task forward passes over shared variables. Build it inside a strategy's scope to
    get mirrored variables."""

    def __init__(self, net: ZippedNetwork, name: str = "mtz_joint"):
        super().__init__(name=name)
        self.net = net
        self.ops = TFOps()
        self.blocks: dict[str, tf.Variable] = {
            key: tf.Variable(arr, name=_var_name(key)) for key, arr in net.arrays(np.float32).items()}

    def _params(self, kind: str, i: int, key):
        node = self.net.nodes[i]
        name = kernel_key(node.name, *key) if kind == "kernel" else bias_key(node.name, *key)
        return self.blocks[name]

    def logits(self, task: str, x) -> tf.Tensor:
        """Task ``task``'s output before its final activation, in the task's own unit order."""
        values = self.net.forward(task, x, ops=self.ops, params=self._params, preactivation=True)
        return self.net.task_view(self.net.output, values[-1], task, ops=self.ops)

    def __call__(self, task: str, x) -> tf.Tensor:
        act = self.net.nodes[self.net.output].activations[task]
        return self.ops.activation(act, self.logits(task, x))

    def write_back(self) -> None:
        """Copy the variables' values into the plain network's arrays."""
        for node in self.net.nodes:
            for key in node.kernels:
                node.kernels[key] = self.blocks[kernel_key(node.name, *key)].numpy().astype(BLOCK_DTYPE)
            for key in node.biases:
                node.biases[key] = self.blocks[bias_key(node.name, *key)].numpy().astype(BLOCK_DTYPE)

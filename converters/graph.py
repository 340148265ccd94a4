"""The TensorFlow graph the converter lowers: one tf.function per task (and optionally "all").

Each weight block is one tf.Variable, so every signature that uses a shared block reads the
same variable and the TFLite converter keeps it as one constant. Blocks that feed the same
output group and belong to the same tasks are concatenated (in numpy, once) into one operand;
blocks of different owners never are, because a constant that mixes a shared block with a task's
own weights would be stored once per task. The shared block's op carries the output group's
bias; the task-specific partial products carry none, so XNNPACK's weight cache (keyed by
weight *and* bias buffer) packs a shared block once for every task.

Dense kernels are stored as (out, in) and multiplied with ``transpose_b`` — the layout of
TFLite's FULLY_CONNECTED — so the converter needs no transposed copy of a shared constant.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from mtz_mobile.joint_model import TF_ACTIVATIONS
from mtz_mobile.network import ZippedNetwork, block_owners

from .names import INPUT_NAME, JOINT_KEY, OUTPUT_NAME


@dataclass(frozen=True)
class Operand:
    """One constant operand: the blocks from ``in_groups`` into ``out_group`` of layer ``layer``."""

    layer: int
    out_group: int
    in_groups: tuple[int, ...]
    owners: tuple[str, ...]
    carries_bias: bool

    @property
    def name(self) -> str:
        ins = "_".join(map(str, self.in_groups))
        return f"l{self.layer}_g{self.out_group}_from{ins}_{'_'.join(self.owners)}"


def layer_operands(net: ZippedNetwork, l: int, task: str, go: int) -> list[Operand]:
    """The operands task ``task`` uses to compute output group ``go`` of layer ``l``."""
    layer = net.layers[l]
    ins = net.input_groups_of_layer(l)
    by_owner: dict[tuple[str, ...], list[int]] = {}
    for gi, grp in enumerate(ins):
        if task in grp.owners and (gi, go) in layer.kernels:
            by_owner.setdefault(block_owners(grp, layer.groups[go]), []).append(gi)
    bias_owners = layer.groups[go].owners
    return [Operand(l, go, tuple(gis), owners, owners == bias_owners) for owners, gis in sorted(by_owner.items())]


def bias_name(l: int, go: int) -> str:
    return f"l{l}_g{go}_bias"


class TaskGraph(tf.Module):
    """Per-task serving functions over one set of variables."""

    def __init__(self, net: ZippedNetwork, joint: bool = False):
        super().__init__(name="mtz")
        self.net = net
        # variables live in dicts with string keys (what tf.Module can track); the operand
        # descriptions in a tuple beside them
        operands = []
        self.kernels: dict[str, tf.Variable] = {}
        self.biases: dict[str, tf.Variable] = {}
        for l, layer in enumerate(net.layers):
            for go, grp in enumerate(layer.groups):
                ops = sorted({op for t in grp.owners for op in layer_operands(net, l, t, go)}, key=lambda o: o.name)
                for op in ops:
                    kernel = np.concatenate([layer.kernels[(gi, go)] for gi in op.in_groups], axis=0)
                    self.kernels[op.name] = tf.Variable(kernel.T.astype(np.float32), name=op.name)
                    operands.append(op)
                # the bias rides on the operand of the same owners, else it is added on its own
                self.biases[bias_name(l, go)] = tf.Variable(layer.biases[go].astype(np.float32),
                                                            name=bias_name(l, go))
        self.operands = tuple(operands)
        self.functions = {}
        for task in net.tasks:
            self.functions[task] = self._task_function(task)
        if joint:
            self.functions[JOINT_KEY] = self._joint_function()
        for key, fn in self.functions.items():
            setattr(self, f"serve_{key}", fn)

    # one input per signature; tasks of one input domain share the joint signature's input
    def input_spec(self, task: str) -> tf.TensorSpec:
        return tf.TensorSpec([1, *self.net.input_shape], tf.float32, name=INPUT_NAME)

    def _group_value(self, task: str, l: int, go: int, acts: dict, memo: dict, keys: dict):
        """Output group ``go`` of layer ``l`` for ``task``; computed once per distinct key."""
        operands = layer_operands(self.net, l, task, go)
        key = ("L", l, go, tuple((op, tuple(keys[gi] for gi in op.in_groups)) for op in operands))
        if key not in memo:
            z = None
            for op in operands:
                x = acts[op.in_groups[0]] if len(op.in_groups) == 1 else tf.concat(
                    [acts[gi] for gi in op.in_groups], axis=-1)
                y = tf.matmul(x, self.kernels[op.name], transpose_b=True)
                if op.carries_bias:
                    y = tf.nn.bias_add(y, self.biases[bias_name(l, go)])
                z = y if z is None else z + y
            if not any(op.carries_bias for op in operands):
                bias = self.biases[bias_name(l, go)]
                z = bias if z is None else z + bias
            memo[key] = (z, key)
        return memo[key]

    def _task_output(self, task: str, x, memo: dict):
        net = self.net
        acts = {g: tf.reshape(x, [1, -1]) for g, grp in enumerate(net.input_groups) if task in grp.owners}
        keys = {g: ("input", g) for g in acts}
        last = len(net.layers) - 1
        for l, layer in enumerate(net.layers):
            new_acts, new_keys = {}, {}
            for go in layer.groups_of(task):
                z, key = self._group_value(task, l, go, acts, memo, keys)
                act_key = ("act", key, layer.activations[task])
                if act_key not in memo:
                    memo[act_key] = TF_ACTIVATIONS[layer.activations[task]](z)
                new_acts[go], new_keys[go] = memo[act_key], act_key
            acts, keys = new_acts, new_keys
        outs = [acts[g] for g in sorted(acts)]
        return outs[0] if len(outs) == 1 else tf.concat(outs, axis=-1)

    def _task_function(self, task: str):
        @tf.function(input_signature=[self.input_spec(task)])
        def serve(input):  # noqa: A002 — the signature's input name
            return {OUTPUT_NAME: self._task_output(task, input, {})}

        return serve

    def _joint_function(self):
        @tf.function(input_signature=[self.input_spec(self.net.tasks[0])])
        def serve(input):  # noqa: A002
            memo: dict = {}
            return {task: self._task_output(task, input, memo) for task in self.net.tasks}

        return serve

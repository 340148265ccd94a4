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
A depthwise group's operand is its one block as (kh, kw, C, 1): one DEPTHWISE_CONV_2D per
group and owner set (a group's input is the group itself, so there is nothing to concatenate),
whose filter TFLite stores as (1, kh, kw, C) with the same bytes (see ``tflite_layout``).

No constant may sit between a weighted op and its bias where the converter can fold it: the
converter adds a constant that follows a convolution or FULLY_CONNECTED into that op's bias, and
then the file holds ``bias + c``, not the block the zip shares (see ``ConverterOps``).
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType

import numpy as np
import tensorflow as tf

from mtz_mobile.graph.network import ZippedNetwork
from mtz_mobile.graph.ops import TFOps

from mtz_mobile.contract import INPUT_NAME, JOINT_KEY, OUTPUT_NAME


class ConverterOps(TFOps):
    """The TensorFlow ops, with hard_sigmoid written so that the converter cannot fold its +3.

    Keras' ``relu6(z + 3) / 6`` right after a convolution (a squeeze-and-excite gate) is folded by
    the converter into the convolution's bias: the file then stores ``bias + 3``, which is not the
    shared block, and a task whose layer ends otherwise (a per-task output activation) or whose +3
    lands in another partial product's bias would store a different constant. Proving sharing of
    the folded buffer instead would make the proof trust a rewrite it cannot see in the file, and
    hold only when every owner folds identically. ``clip(z, -3, 3) / 6 + 0.5`` is the same function
    and starts with a clip, which nothing folds into a bias: the bias stays the zip's own block,
    stored once and found by its exact bytes. (hard_silu keeps Keras' form: its z has two uses,
    so nothing folds, and the converter recognises it as one HARD_SWISH.)
    """

    def __init__(self, guard_preprocessing: bool = False):
        super().__init__()
        self.guard_preprocessing = guard_preprocessing

    def activation(self, name, z):
        if name == "hard_sigmoid":
            return self.tf.clip_by_value(z, -3.0, 3.0) * (1.0 / 6.0) + 0.5
        return super().activation(name, z)

    def rescale(self, x, scale, offset):
        """A task's Rescaling/Normalization. The converter folds a constant multiply (and, before a
        VALID convolution, an add) into the following layer's kernel and bias: harmless for a task's
        own first layer, but a shared one would then hold kernel × the task's scale, not the
        shared block (stored once per task where scales differ). A MAXIMUM with the lowest float
        changes no value and is nothing the converter folds through: one elementwise op on the
        input, only where the first layer shares a block."""
        y = super().rescale(x, scale, offset)
        return self.tf.maximum(y, np.finfo(np.float32).min) if self.guard_preprocessing else y


def _first_layer_shares(net: ZippedNetwork) -> bool:
    """Whether a weight node reading the (preprocessed) input holds a block of two or more tasks."""
    first = [j for j in net.weight_nodes() if net.source(net.nodes[j].inputs[0]) == 0]
    return any(len(key[-1]) > 1 for j in first for key in (*net.nodes[j].kernels, *net.nodes[j].biases))


@dataclass(frozen=True)
class Operand:
    """The blocks from ``in_groups`` into group ``out_group`` of node ``node`` owned by ``owners``."""

    node: int
    out_group: int
    in_groups: tuple[int, ...]
    owners: tuple[str, ...]
    carries_bias: bool

    @property
    def name(self) -> str:
        return f"n{self.node}_g{self.out_group}_from{'_'.join(map(str, self.in_groups))}_{'_'.join(self.owners)}"


def tflite_layout(op: str, values: np.ndarray) -> np.ndarray:
    """A stored kernel operand as the .tflite holds it: CONV_2D filters are (out, kh, kw, in),
    DEPTHWISE_CONV_2D filters (1, kh, kw, C); dense operands are already (out, in)."""
    return values.transpose(3, 0, 1, 2) if op in ("conv2d", "depthwise") else values


def bias_name(node: int, go: int, owners: tuple[str, ...]) -> str:
    return f"n{node}_g{go}_bias_{'_'.join(owners)}"


def node_operands(net: ZippedNetwork, i: int, task: str, go: int) -> tuple[list[Operand], list[tuple]]:
    """The operands and the loose biases (those no operand of the same owners carries) that
    task ``task`` uses to compute group ``go`` of node ``i``."""
    node = net.nodes[i]
    by_owner: dict[tuple[str, ...], list[int]] = {}
    for gi, g2, owners in sorted(node.kernels):
        if g2 == go and task in owners:
            by_owner.setdefault(owners, []).append(gi)
    bias_owners = [o for g2, o in node.biases if g2 == go and task in o]
    operands = [Operand(i, go, tuple(gis), owners, owners in bias_owners) for owners, gis in sorted(by_owner.items())]
    loose = [(i, go, o) for o in sorted(bias_owners) if o not in by_owner]
    return operands, loose


class TaskGraph(tf.Module):
    """Per-task serving functions over one set of variables."""

    def __init__(self, net: ZippedNetwork, joint: bool = False):
        super().__init__(name="mtz")
        self.net = net
        self.ops = ConverterOps(guard_preprocessing=_first_layer_shares(net))
        # variables in dicts with string keys (what tf.Module can track); operand descriptions beside
        operands = {}
        self.kernels: dict[str, tf.Variable] = {}
        self.biases: dict[str, tf.Variable] = {}
        for i, node in enumerate(net.nodes):
            for go, grp in enumerate(node.groups if node.is_weight else []):
                for t in grp.owners:
                    ops, _ = node_operands(net, i, t, go)
                    for op in ops:
                        operands[op.name] = op
        for name in sorted(operands):
            op = operands[name]
            node = net.nodes[op.node]
            blocks = [node.kernels[(gi, op.out_group, op.owners)] for gi in op.in_groups]
            if node.op == "dense":
                stored = np.concatenate(blocks, axis=0).T
            elif node.op == "depthwise":
                stored = blocks[0][..., None]
            else:
                stored = np.concatenate(blocks, axis=2)
            self.kernels[name] = tf.Variable(stored.astype(np.float32), name=name)
        for i, node in enumerate(net.nodes):
            for (go, owners), b in node.biases.items():
                self.biases[bias_name(i, go, owners)] = tf.Variable(b.astype(np.float32), name=bias_name(i, go, owners))
        self.operands = tuple(operands[n] for n in sorted(operands))
        functions = {task: self._task_function(task) for task in net.tasks}
        if joint:
            functions[JOINT_KEY] = self._joint_function()
        # read-only and untracked: saving would otherwise list each tf.function's concrete functions
        # and trace every task a second time (the signatures are the concrete functions themselves)
        self.functions = MappingProxyType(functions)

    def _weighted(self, i: int, go: int, task: str, src: dict):
        node = self.net.nodes[i]
        operands, loose = node_operands(self.net, i, task, go)
        z = None
        for op in operands:
            x = src[op.in_groups[0]] if len(op.in_groups) == 1 else tf.concat([src[g] for g in op.in_groups], -1)
            w = self.kernels[op.name]
            if node.op == "dense":
                y = tf.matmul(x, w, transpose_b=True)
            elif node.op == "depthwise":
                y = self.ops.depthwise(x, w, node.attrs)
            else:
                y = self.ops.conv(x, w, node.attrs)
            if op.carries_bias:
                y = tf.nn.bias_add(y, self.biases[bias_name(i, go, op.owners)])
            z = y if z is None else z + y
        for _, _, owners in loose:
            b = self.biases[bias_name(i, go, owners)]
            z = b if z is None else z + b
        return z

    def _task_output(self, task: str, x, memo: dict | None):
        values = self.net.forward(task, x, ops=self.ops, weighted=self._weighted, memo=memo)
        return self.net.task_view(self.net.output, values[-1], task, ops=self.ops)

    def input_spec(self, task: str) -> tf.TensorSpec:
        return tf.TensorSpec([1, *self.net.task_input_shapes[task]], tf.float32, name=INPUT_NAME)

    def _task_function(self, task: str):
        @tf.function(input_signature=[self.input_spec(task)], autograph=False)
        def serve(input):  # noqa: A002 — the signature's input name
            return {OUTPUT_NAME: self._task_output(task, input, None)}

        return serve

    def _joint_function(self):
        @tf.function(input_signature=[self.input_spec(self.net.tasks[0])], autograph=False)
        def serve(input):  # noqa: A002
            memo: dict = {}
            return {task: self._task_output(task, input, memo) for task in self.net.tasks}

        return serve

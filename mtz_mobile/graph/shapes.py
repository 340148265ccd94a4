"""Per-sample shapes of a zipped network's nodes, and the block shapes its groups imply."""

from __future__ import annotations

import numpy as np

from mtz_mobile.errors import MTZError

from .keys import bias_key, kernel_key
from .ops import canonical_shape, conv_output_size


def infer_shapes(net, input_shape: tuple[int, ...]) -> None:
    """Per-sample output shapes of every node on the joint input (channels filled per node)."""
    for i, node in enumerate(net.nodes):
        if node.op == "input":
            node.shape = canonical_shape(input_shape, net.layout)
        else:
            node.shape = _node_shape(node, net.nodes[net.pass_input(i)].shape)


def _node_shape(node, src: tuple[int, ...]) -> tuple[int, ...]:
    a = node.attrs
    if node.op == "dense":
        return (sum(g.size for g in node.groups),)
    if node.op in ("conv2d", "depthwise"):
        h, w = (conv_output_size(n, k, s, d, a["padding"])
                for n, k, s, d in zip(src[:2], a["kernel_size"], a["strides"], a["dilation"]))
        return (h, w, sum(g.size for g in node.groups) if node.op == "conv2d" else src[-1])
    if node.op in ("maxpool", "avgpool"):
        h, w = (conv_output_size(n, k, s, 1, a["padding"]) for n, k, s in zip(src[:2], a["pool_size"], a["strides"]))
        return (h, w, src[-1])
    if node.op == "gap":
        return (1, 1, src[-1]) if a.get("keepdims") else (src[-1],)
    if node.op == "flatten":
        return (int(np.prod(src)),)
    if node.op == "reshape":
        return tuple(a["shape"][:-1]) + (src[-1],)
    if node.op in ("zeropad", "crop"):
        sign = 1 if node.op == "zeropad" else -1
        (t, b), (l, r) = a["pads" if node.op == "zeropad" else "crops"]
        return (src[0] + sign * (t + b), src[1] + sign * (l + r), src[2])
    return tuple(src)


def check_shapes(net) -> None:
    """Every block's shape must follow from the group sizes it connects."""
    for i, node in enumerate(net.nodes):
        if not node.is_weight:
            continue
        ins = net.input_groups(i)
        if node.inherits and [g.to_json() for g in ins] != [g.to_json() for g in node.groups]:
            raise MTZError(f"depthwise layer {node.name} is grouped unlike its input: the plan is inconsistent, "
                           "zip again")
        factor = net.row_factor(i)
        for (gi, go, owners), k in node.kernels.items():
            if node.op == "dense":
                expected, got = (factor * ins[gi].size, node.groups[go].size), k.shape
            elif node.op == "depthwise":
                expected = tuple(node.attrs["kernel_size"]) + (node.groups[go].size,)
                got = k.shape if gi == go else (-1,)
            else:
                expected, got = (ins[gi].size, node.groups[go].size), k.shape[-2:]
            if tuple(got) != expected or not set(owners) <= set(ins[gi].owners) & set(node.groups[go].owners):

                raise MTZError(f"block {kernel_key(node.name, gi, go, owners)} has shape {k.shape}, its groups "
                               f"imply {expected}: the weights and the plan disagree, zip again")
        for (go, owners), b in node.biases.items():
            if b.shape != (node.groups[go].size,):

                raise MTZError(f"bias {bias_key(node.name, go, owners)} has shape {b.shape}, expected "
                               f"({node.groups[go].size},): the weights and the plan disagree, zip again")

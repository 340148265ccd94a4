"""Share a network's hidden layers among two tasks, with given weights: the first k layers of a
chain network (``trunk_nodes`` + ``share_trunk``), or every hidden layer of any graph the zipper
reads — residual streams, depthwise layers, squeeze-and-excite gates — whose head is its last
Dense layer (``share_whole_trunk``)."""

from __future__ import annotations

import numpy as np

from mtz_mobile.errors import MTZError
from mtz_mobile.graph.keras_io import ParsedModel
from mtz_mobile.graph.network import BLOCK_DTYPE, Group, ZippedNetwork
from mtz_mobile.zipper.surgery import NewGroup, merge, regroup


def trunk_nodes(net: ZippedNetwork, layers: int | None) -> list[int]:
    """The first ``layers`` hidden weight nodes (None: all), refused where sharing them whole is
    not a plain regrouping (a residual stream, a depthwise layer, unequal widths)."""
    hidden = net.zippable()
    layers = len(hidden) if layers is None else layers
    if not 1 <= layers <= len(hidden):
        raise MTZError(f"the trunk is 1 to {len(hidden)} hidden layers of this network, not {layers}")
    for i in hidden[:layers]:
        node = net.nodes[i]
        if node.inherits or net.stream_of(i) != {i}:
            raise MTZError(f"layer {node.name} is depthwise or in a residual stream: a partial trunk is the first "
                           "layers of a chain network (MLPs, LeNet-5); share every hidden layer instead")
        if len({g.size for g in node.groups}) != 1 or len(node.groups) != len(net.tasks):
            raise MTZError(f"layer {node.name} has unequal widths per task: a shared trunk needs equal ones")
    return hidden[:layers]


def share_trunk(net: ZippedNetwork, nodes: list[int], source: ParsedModel) -> None:
    """Make every node in ``nodes`` (in order) one group used by all tasks, unit j of each task
    paired with unit j of the others, holding ``source``'s weights (a model of the same graph)."""
    tasks = tuple(net.tasks)
    for i in nodes:
        node = net.nodes[i]
        groups = {g.owners[0]: n for n, g in enumerate(node.groups)}
        width = node.groups[0].size
        regroup(net, i, [NewGroup(tasks, {t: (groups[t], np.arange(width)) for t in tasks})])
        inputs = [gi for gi, g in enumerate(net.input_groups(i)) if set(g.owners) == set(tasks)]
        if len(inputs) != 1 or len(net.input_groups(i)) != 1:
            raise MTZError(f"internal: layer {node.name}'s input is not one group shared by every task")
        kernel, bias = np.asarray(source.nodes[i].kernel), np.asarray(source.nodes[i].bias)
        if kernel.shape[-1] != width:
            raise MTZError(f"the trunk's source has {kernel.shape[-1]} units in {node.name}, the models {width}")
        merge(net, i, 0, inputs, np.vstack([kernel.reshape(-1, width), bias[None, :]]))


def check_head(net: ZippedNetwork) -> None:
    """Refuse a network whose output is not a Dense layer reading one trunk every task can share."""
    head = net.nodes[net.output]
    if head.op != "dense":
        raise MTZError(f"the model's last layer {head.name} is a {head.op} layer: the baselines keep each task's "
                       "head, which must be the last Dense layer (put the classifier last)")
    if len(set(map(tuple, net.task_input_shapes.values()))) != 1:
        raise MTZError(f"the models read inputs of different shapes {sorted(set(net.task_input_shapes.values()))}: "
                       "one trunk needs one input shape (fit the data to one shape)")


def share_whole_trunk(net: ZippedNetwork, source: ParsedModel) -> None:
    """Every hidden layer of ``net`` (an unzipped network) one group used by all tasks, unit j of
    each task paired with unit j of the others — so every residual stream, depthwise layer and
    gate keeps its channel order — holding ``source``'s weights (a model of the same graph, its
    head aside); each task keeps its own head, now reading the shared trunk."""
    check_head(net)
    tasks = tuple(net.tasks)
    if len(source.nodes) != len(net.nodes) or any(
            s.op != n.op for s, n in zip(source.nodes[:-1], net.nodes[:-1])):
        raise MTZError(f"the trunk's source {source.path} is not the models' graph: give a model of the same "
                       "architecture (its head may differ)")
    for i in net.zippable():
        node, src = net.nodes[i], source.nodes[i]
        widths = {g.size for g in node.groups} | {int(np.shape(src.kernel)[-1])}
        if len(widths) != 1:
            raise MTZError(f"layer {node.name} has unequal widths in the models or the trunk's source: a shared "
                           "trunk needs one architecture")
        width = widths.pop()
        node.groups = [Group(tasks, {t: list(range(width)) for t in tasks})]
        # every weight node's input is the raw input or one shared group: input group 0
        node.kernels = {(0, 0, tasks): np.asarray(src.kernel, BLOCK_DTYPE)}
        node.biases = {(0, tasks): np.asarray(src.bias, BLOCK_DTYPE)}
    head = net.nodes[net.output]
    head.kernels = {(0, go, owners): k for (_, go, owners), k in head.kernels.items()}
    net.check_shapes()

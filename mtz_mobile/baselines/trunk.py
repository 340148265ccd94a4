"""Share a chain network's first k hidden layers among two tasks, with given weights."""

from __future__ import annotations

import numpy as np

from mtz_mobile.errors import MTZError
from mtz_mobile.graph.keras_io import ParsedModel
from mtz_mobile.graph.network import ZippedNetwork
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
            raise MTZError(f"layer {node.name} is depthwise or in a residual stream: the baselines share whole "
                           "layers of chain networks (MLPs, LeNet-5) only")
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

"""Restructuring a zipped network in place: regroup a node's units, merge a group's blocks.

Zipping a layer is two steps. ``regroup`` re-splits the node's output units into new groups —
for the paper's two tasks: [shared pairs, A's rest, B's rest] — moving every block's columns
and every consumer's rows along, but computing nothing: each task still has its own weights,
so each task's function is unchanged. ``merge`` then replaces a shared group's per-task blocks
from the inputs all its owners share (and its per-task biases) by one block, the merged
weights w̃. Members of one residual stream are regrouped together (their channels must keep
one order for the Add) and merged one by one as the zipper reaches them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mtz_mobile.errors import MTZError
from mtz_mobile.graph.network import BLOCK_DTYPE, Group, Owners, ZippedNetwork


@dataclass
class NewGroup:
    owners: Owners
    sources: dict[str, tuple[int, np.ndarray]]   # task → (old group, positions in it)


def _take_cols(arr: np.ndarray, pos: np.ndarray) -> np.ndarray:
    return np.take(arr, pos, axis=-1)


def _take_rows(arr: np.ndarray, pos: np.ndarray, old_size: int, factor: int, conv: bool) -> np.ndarray:
    if conv:
        return np.take(arr, pos, axis=-2)
    if factor == 1:
        return np.take(arr, pos, axis=0)
    # Flatten folds P positions × |group| channels, position-major: pick channels in every position
    blocks = arr.reshape(factor, old_size, arr.shape[-1])
    return np.take(blocks, pos, axis=1).reshape(factor * len(pos), arr.shape[-1])


def _source_of(new: NewGroup, tasks) -> tuple[int, tuple[int, ...]] | None:
    """The one (old group, positions) the given tasks of a new group come from, or None."""
    found = {(new.sources[t][0], tuple(new.sources[t][1].tolist())) for t in tasks}
    if len(found) > 1:
        raise MTZError("internal: tasks sharing a block come from different old groups")
    return next(iter(found)) if found else None


def regroup(net: ZippedNetwork, i: int, new_groups: list[NewGroup]) -> None:
    """Re-split the output groups of node i and of every node in its stream (see module doc)."""
    members = sorted(net.stream_of(i))
    if 0 in members:
        raise MTZError(f"layer {net.nodes[i].name} adds into the raw input: a residual stream on the input "
                       "cannot be zipped")
    old_groups = net.nodes[i].groups
    for m in members:
        node = net.nodes[m]
        if [(g.owners, g.units) for g in node.groups] != [(g.owners, g.units) for g in old_groups]:
            raise MTZError(f"internal: stream members {net.nodes[i].name} and {node.name} are grouped differently")
        groups = []
        for new in new_groups:
            groups.append(Group(new.owners, {t: [old_groups[g].units[t][p] for p in pos]
                                             for t, (g, pos) in new.sources.items()}))
        kernels, biases = {}, {}
        for go_new, new in enumerate(new_groups):
            for (gi, go, owners), k in node.kernels.items():
                tasks = [t for t in owners if t in new.owners]
                src = _source_of(new, tasks)
                if src and src[0] == go:
                    # a depthwise kernel reads its own channels: its input group moves with its output
                    key = (go_new if node.inherits else gi, go_new, tuple(tasks))
                    kernels[key] = _take_cols(k, np.array(src[1], np.int64))
            for (go, owners), b in node.biases.items():
                tasks = [t for t in owners if t in new.owners]
                src = _source_of(new, tasks)
                if src and src[0] == go:
                    biases[(go_new, tuple(tasks))] = b[np.array(src[1], np.int64)]
        node.groups, node.kernels, node.biases = groups, kernels, biases
    for j in net.consumers(set(members)):
        node = net.nodes[j]
        factor = net.row_factor(j)
        kernels = {}
        for (gi, go, owners), k in node.kernels.items():
            for gi_new, new in enumerate(new_groups):
                tasks = [t for t in owners if t in new.owners]
                src = _source_of(new, tasks)
                if src and src[0] == gi:
                    kernels[(gi_new, go, tuple(tasks))] = _take_rows(
                        k, np.array(src[1], np.int64), old_groups[gi].size, factor, node.op == "conv2d")
        node.kernels = kernels


def merge(net: ZippedNetwork, i: int, go: int, shared_inputs: list[int], merged: np.ndarray,
          mask: np.ndarray | None = None, task: str | None = None) -> None:
    """Replace group go's per-task blocks from ``shared_inputs`` (and its biases) by ``merged``.

    ``merged`` holds the new incoming weights over the shared input rows (input groups in the
    given order, conv rows as (kh, kw, channels) flattened) with the bias as the last row.
    ``mask`` (same shape, without the bias row) zeroes pruned connections. With ``task``, only
    that task's own blocks of the group are replaced (a compensation refit of a group whose
    pairing its residual stream decided, before the group is merged).
    """
    node = net.nodes[i]
    owners = node.groups[go].owners if task is None else (task,)
    replaced = (lambda key_owners: True) if task is None else (lambda key_owners: key_owners == owners)
    ins = net.input_groups(i)
    factor = net.row_factor(i)
    weights = merged[:-1] if mask is None else merged[:-1] * mask
    if node.op == "conv2d":
        kh, kw = node.attrs["kernel_size"]
        weights = weights.reshape(kh, kw, -1, weights.shape[-1])
        sizes = [ins[gi].size for gi in shared_inputs]
        axis = 2
    else:
        sizes = [factor * ins[gi].size for gi in shared_inputs]
        axis = 0
    bounds = np.cumsum([0] + sizes)
    for n, gi in enumerate(shared_inputs):
        for key in [k for k in node.kernels if k[0] == gi and k[1] == go and replaced(k[2])]:
            del node.kernels[key]
        node.kernels[(gi, go, owners)] = np.take(weights, np.arange(bounds[n], bounds[n + 1]), axis=axis).astype(
            BLOCK_DTYPE)
    for key in [k for k in node.biases if k[0] == go and replaced(k[1])]:
        del node.biases[key]
    node.biases[(go, owners)] = merged[-1].astype(BLOCK_DTYPE)


def incoming_weights(net: ZippedNetwork, i: int, go: int, owners, inputs: list[int]) -> np.ndarray:
    """The incoming weights of group go owned by ``owners`` over input groups ``inputs``, bias last."""
    node = net.nodes[i]
    n_out = node.groups[go].size
    parts = []
    for gi in inputs:
        key = (gi, go, tuple(owners))
        if key not in node.kernels:
            raise MTZError(f"internal: {node.name} has no block {key}")
        k = node.kernels[key]
        parts.append(k)
    if node.op == "conv2d":
        w = np.concatenate(parts, axis=2).reshape(-1, n_out) if parts else np.zeros((0, n_out))
    else:
        w = np.concatenate(parts, axis=0) if parts else np.zeros((0, n_out))
    return np.vstack([w, node.biases[(go, tuple(owners))][None, :]])


def channel_weights(net: ZippedNetwork, i: int, go: int, owners) -> np.ndarray:
    """Depthwise node i's kernel of group go owned by ``owners`` as (k²+1, C): channel c's taps
    in column c, bias last (the layout ``random_merge`` and ``merge_channels`` use)."""
    node = net.nodes[i]
    key = (go, go, tuple(owners))
    if key not in node.kernels:
        raise MTZError(f"internal: {node.name} has no block {key}")
    kernel = node.kernels[key]
    return np.vstack([kernel.reshape(-1, kernel.shape[-1]), node.biases[(go, tuple(owners))][None, :]])


def merge_channels(net: ZippedNetwork, i: int, go: int, merged: np.ndarray) -> None:
    """Replace depthwise group go's per-task kernels and biases by one, ``merged`` (k²+1, C)."""
    node = net.nodes[i]
    owners = node.groups[go].owners
    for key in [k for k in node.kernels if k[1] == go]:
        del node.kernels[key]
    for key in [k for k in node.biases if k[0] == go]:
        del node.biases[key]
    kh, kw = node.attrs["kernel_size"]
    node.kernels[(go, go, owners)] = merged[:-1].reshape(kh, kw, -1).astype(BLOCK_DTYPE)
    node.biases[(go, owners)] = merged[-1].astype(BLOCK_DTYPE)

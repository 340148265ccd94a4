"""The activation cache behind calibration's forward passes.

Every value the zipper reads from a forward pass over the calibration images (a layer's input
for its Hessians, a consumer's input and the original model's pre-activation for compensation)
is kept here, batch by batch, under a key that names what it was computed from: the task, the
node, and a digest of every weight block, group and setting upstream of it. A network that
changed upstream of a node therefore misses, and one that did not (the original model, or the
zipped network between a step's merge and the next step's Hessians) hits, whatever object holds
it. A miss is computed from the nearest cached nodes upstream (usually the layer just before),
not from the images, so a zip costs about one forward pass per task and network instead of one
per layer and consumer. Values are computed with the same ops in the same batches as
``ZippedNetwork.forward`` computes them, so they equal its values to the last bit.

Memory is bounded: entries live in least-recently-used order within ``budget`` bytes, and a
value too large to keep (a wide map at full resolution) is streamed, batch by batch, from the
cached nodes before it. Blocks are replaced, never written in place, by every part of the zipper
(surgery, compensation, the joint model), which is what lets an array's digest be remembered
for as long as the array lives.
"""

from __future__ import annotations

import hashlib
import weakref
from collections import OrderedDict

import numpy as np

from mtz_mobile.backend import host_array
from mtz_mobile.graph.execute import forward_nodes, preactivation
from mtz_mobile.graph.network import ZippedNetwork
from mtz_mobile.graph.ops import canonical_shape

DEFAULT_BUDGET = 3 << 30        # bytes of cached values (float32)
BATCH_BYTES = 256 << 20         # a batch's largest map stays under this (at most BATCH images)
BATCH = 1000


def batch_size(net: ZippedNetwork, budget: int = BATCH_BYTES) -> int:
    """Images per batch: BATCH (as the zipper always used), fewer where one map would be large."""
    widest = max(int(np.prod(node.shape)) for node in net.nodes) * 4
    return int(max(1, min(BATCH, budget // max(widest, 1))))


class ActivationCache:
    """Node values of each task over its calibration images, keyed by what they depend on."""

    def __init__(self, x: dict[str, np.ndarray], ops, batch: int = BATCH, budget: int = DEFAULT_BUDGET):
        self.x, self.ops, self.batch, self.budget = x, ops, batch, budget
        self.entries: OrderedDict = OrderedDict()   # key -> list of per-batch values
        self.sizes: dict = {}
        self._arrays: dict[int, tuple] = {}        # id -> (weak reference, digest)

    # ----- keys --------------------------------------------------------------------------------
    def _array_digest(self, arr: np.ndarray) -> bytes:
        known = self._arrays.get(id(arr))
        if known is not None and known[0]() is arr:
            return known[1]
        a = np.ascontiguousarray(arr)
        digest = hashlib.sha1(memoryview(a).cast("B")).digest() + repr((a.shape, a.dtype.str)).encode()
        self._arrays[id(arr)] = (weakref.ref(arr), digest)
        if len(self._arrays) > 4 * (len(self.entries) + 64) + 4096:
            self._arrays = {k: v for k, v in self._arrays.items() if v[0]() is not None}
        return digest

    def digests(self, net: ZippedNetwork, task: str, k: int, memo: dict) -> bytes:
        """What node k's values for the task depend on: its own settings and blocks, and its inputs'."""
        stack = [k]
        while stack:  # iterative: a deep net's recursion would exceed Python's limit
            n = stack[-1]
            todo = [j for j in net.nodes[n].inputs if j not in memo]
            if todo:
                stack += todo
                continue
            stack.pop()
            if n not in memo:
                memo[n] = self._own_digest(net, task, n, [memo[j] for j in net.nodes[n].inputs])
        return memo[k]

    def _own_digest(self, net: ZippedNetwork, task: str, n: int, inputs: list[bytes]) -> bytes:
        node = net.nodes[n]
        h = hashlib.sha1(repr((n, node.op, node.inputs, node.shape, sorted(node.attrs.items(), key=str))).encode())
        if node.op == "input":
            h.update(repr(canonical_shape(net.task_input_shapes[task], net.layout)).encode())
        if node.is_weight:
            h.update(repr((node.activations[task],
                           [(g.owners, g.units.get(task)) for g in node.groups])).encode())
            for key in sorted(node.kernels):
                if task in key[2]:
                    h.update(repr(key).encode() + self._array_digest(node.kernels[key]))
            for key in sorted(node.biases):
                if task in key[1]:
                    h.update(repr(key).encode() + self._array_digest(node.biases[key]))
        for d in inputs:
            h.update(d)
        return h.digest()

    # ----- entries -----------------------------------------------------------------------------
    def _get(self, key):
        if key in self.entries:
            self.entries.move_to_end(key)
            return self.entries[key]
        return None

    def _put(self, key, batches: list) -> None:
        size = sum(v.nbytes for b in batches for v in b.values())
        self._evict_to(self.budget - size)
        self.entries[key] = batches
        self.sizes[key] = size

    def make_room(self, nbytes: int) -> None:
        """Evict the least recently used values so that the cache and ``nbytes`` of other memory fit
        the budget, keeping at least an eighth of it (the values the next pass reads were used
        last): a wide layer's Hessians and factor are several GB (VGG-16's fc6: 10 GB)."""
        self._evict_to(max(self.budget - nbytes, self.budget // 8))

    def _evict_to(self, limit: int) -> None:
        while self.entries and sum(self.sizes.values()) > limit:
            old, _ = self.entries.popitem(last=False)
            del self.sizes[old]

    def _fits(self, net: ZippedNetwork, task: str, k: int) -> bool:
        """Whether node k's values over all images may be kept (at most a third of the budget)."""
        return 4 * len(self.x[task]) * int(np.prod(net.nodes[k].shape)) <= self.budget // 3

    def _cut(self, net: ZippedNetwork, task: str, k: int, memo: dict) -> dict[int, list]:
        """Cached nodes (and their batches) from which node k can be computed: upstream of k, the
        nearest ones whose values are current; the input node is computed from the images."""
        found, seen, stack = {}, set(), [k]
        while stack:
            n = stack.pop()
            if n in seen:
                continue
            seen.add(n)
            hit = self._get(("value", task, n, self.digests(net, task, n, memo)))
            if hit is not None and n != k:
                found[n] = hit
            elif net.nodes[n].op != "input":
                stack += net.nodes[n].inputs
        return found

    def values(self, net: ZippedNetwork, task: str, k: int):
        """Node k's values, batch by batch ({group: float32 array} each), for the task's images."""
        memo: dict = {}
        key = ("value", task, k, self.digests(net, task, k, memo))
        hit = self._get(key)
        if hit is not None:
            yield from hit
            return
        cut = self._cut(net, task, k, memo)
        keep = self._fits(net, task, k)
        x = self.x[task]

        def batches():
            for b, s in enumerate(range(0, len(x), self.batch)):
                known = {n: values[b] for n, values in cut.items()}
                value = forward_nodes(net, task, x[s:s + self.batch], known, [k], self.ops)[k]
                yield {g: host_array(v) for g, v in value.items()}

        yield from self._kept(key, keep, batches())

    def preactivations(self, net: ZippedNetwork, task: str, j: int):
        """Weight node j's pre-activations in the task's unit order, batch by batch (2-D for dense,
        4-D for conv: what ``net.task_view`` gives)."""
        memo: dict = {}
        key = ("pre", task, j, self.digests(net, task, j, memo))
        hit = self._get(key)
        if hit is not None:
            yield from hit
            return
        keep = self._fits(net, task, j)
        batches = ({0: host_array(net.task_view(j, preactivation(net, task, j, src, self.ops), task, ops=self.ops))}
                   for src in self.values(net, task, net.nodes[j].inputs[0]))
        yield from self._kept(key, keep, batches)

    def _kept(self, key, keep: bool, batches):
        """Pass the batches on; when they fit the budget, store them first (a later hit replays them)."""
        if not keep:
            yield from batches
            return
        out = list(batches)
        self._put(key, out)
        yield from out

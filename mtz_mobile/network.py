"""The zipped network as plain data: groups of units owned by sets of tasks, and weight blocks.

Every layer's units are split into *groups*. A group's ``owners`` are the tasks whose path
contains its units; ``units[t]`` names, for each owner, which unit of task t's original layer
each member came from. A task's view of a layer is the concatenation, in group order, of the
groups it owns. A weight block connects an input group to an output group and belongs to the
intersection of their owners (DESIGN.md §2, §7); a bias belongs to its output group.

For two tasks after zipping layer l the groups are [shared, A-only, B-only] and the blocks are
the paper's W̃ (shared→shared), W̃_A (A-only→shared), Ŵ_A (shared and A-only→A-only), and B's.
An unzipped network is the special case where every hidden layer has one group per task.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from .errors import MTZError

ACTIVATIONS = {
    "linear": lambda z: z,
    "relu": lambda z: np.maximum(z, 0.0),
    "relu6": lambda z: np.clip(z, 0.0, 6.0),
    "tanh": np.tanh,
    "sigmoid": lambda z: 1.0 / (1.0 + np.exp(-z)),
    "softmax": lambda z: _softmax(z),
}


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


@dataclass
class Group:
    owners: tuple[str, ...]
    units: dict[str, list[int]]

    @property
    def size(self) -> int:
        return len(next(iter(self.units.values())))

    def to_json(self) -> dict:
        return {"owners": list(self.owners), "units": {t: list(map(int, u)) for t, u in self.units.items()}}

    @classmethod
    def from_json(cls, obj: dict) -> "Group":
        return cls(tuple(obj["owners"]), {t: list(u) for t, u in obj["units"].items()})


@dataclass
class Layer:
    name: str
    kind: str
    activations: dict[str, str]  # per task: hidden layers agree; output layers may differ
    groups: list[Group]
    kernels: dict[tuple[int, int], np.ndarray] = field(default_factory=dict)
    biases: dict[int, np.ndarray] = field(default_factory=dict)

    def groups_of(self, task: str) -> list[int]:
        return [g for g, grp in enumerate(self.groups) if task in grp.owners]

    def width(self, task: str) -> int:
        return sum(self.groups[g].size for g in self.groups_of(task))


def block_owners(in_group: Group, out_group: Group) -> tuple[str, ...]:
    return tuple(t for t in out_group.owners if t in in_group.owners)


@dataclass
class ZippedNetwork:
    """Tasks, the input's groups, and the layers (hidden layers then each task's output layer)."""

    tasks: list[str]
    input_shape: tuple[int, ...]
    input_groups: list[Group]
    layers: list[Layer]

    # ----- construction -------------------------------------------------------------------
    @classmethod
    def from_dense_chains(cls, chains: dict[str, list[tuple[np.ndarray, np.ndarray, str]]],
                          input_shape: tuple[int, ...]) -> "ZippedNetwork":
        """An unzipped network: each task's chain of (kernel, bias, activation), one group per task."""
        tasks = list(chains)
        depth = len(next(iter(chains.values())))
        n_in = int(np.prod(input_shape))
        inputs = [Group(tuple(tasks), {t: list(range(n_in)) for t in tasks})]
        layers = []
        for l in range(depth):
            groups = [Group((t,), {t: list(range(chains[t][l][0].shape[1]))}) for t in tasks]
            name = f"hidden{l + 1}" if l < depth - 1 else "output"
            layer = Layer(name, "dense", {t: chains[t][l][2] for t in tasks}, groups)
            for g, t in enumerate(tasks):
                kernel, bias, _ = chains[t][l]
                gi = 0 if l == 0 else g
                layer.kernels[(gi, g)] = np.asarray(kernel, np.float64)
                layer.biases[g] = np.asarray(bias, np.float64)
            layers.append(layer)
        return cls(tasks, tuple(input_shape), inputs, layers)

    def copy(self) -> "ZippedNetwork":
        return copy.deepcopy(self)

    # ----- structure ----------------------------------------------------------------------
    def input_groups_of_layer(self, l: int) -> list[Group]:
        return self.input_groups if l == 0 else self.layers[l - 1].groups


    def block_owner_sets(self):
        """Yield (layer index, key, owners, array) for every kernel block and bias."""
        for l, layer in enumerate(self.layers):
            ins = self.input_groups_of_layer(l)
            for (gi, go), k in layer.kernels.items():
                yield l, ("kernel", gi, go), block_owners(ins[gi], layer.groups[go]), k
            for go, b in layer.biases.items():
                yield l, ("bias", go), layer.groups[go].owners, b

    def param_counts(self) -> dict:
        """Parameters per task (what its own path uses), stored in all, and stored once for several tasks."""
        per_task = {t: 0 for t in self.tasks}
        stored = shared = saved = 0
        for _, _, owners, arr in self.block_owner_sets():
            stored += arr.size
            for t in owners:
                per_task[t] += arr.size
            if len(owners) > 1:
                shared += arr.size
                saved += (len(owners) - 1) * arr.size
        total = sum(per_task.values())
        return {
            "per_task": per_task,
            "separate_total": total,
            "zipped": stored,
            "shared": shared,
            "saved": saved,
            "shared_fraction": shared / total if total else 0.0,
            "shared_fraction_definition": "parameters stored once and used by two or more tasks / "
                                          "sum of the separate models' parameters",
        }

    # ----- evaluation ---------------------------------------------------------------------
    def forward(self, task: str, x: np.ndarray, upto: int | None = None, preactivation: bool = False,
                dtype=np.float32) -> list[dict[int, np.ndarray]]:
        """Task ``task``'s activations, group by group, for layers 0..upto (inclusive).

        Returns one dict per layer (index -1 = input) mapping group index to activations.
        With ``preactivation`` the last layer's values are before its activation.
        """
        if task not in self.tasks:
            raise MTZError(f"unknown task {task!r}: this network has {', '.join(self.tasks)}")
        last = len(self.layers) - 1 if upto is None else upto
        x = np.asarray(x, dtype).reshape(len(x), -1)
        acts = {g: x for g, grp in enumerate(self.input_groups) if task in grp.owners}
        out = [acts]
        for l in range(last + 1):
            layer = self.layers[l]
            new = {}
            for go in layer.groups_of(task):
                z = np.broadcast_to(layer.biases[go].astype(dtype), (len(x), layer.groups[go].size)).copy()
                for (gi, g2), k in layer.kernels.items():
                    if g2 == go and gi in acts:
                        z += acts[gi] @ k.astype(dtype)
                if not (preactivation and l == last):
                    z = ACTIVATIONS[layer.activations[task]](z)
                new[go] = z
            acts = new
            out.append(acts)
        return out

    def task_view(self, l: int, acts: dict[int, np.ndarray], task: str) -> np.ndarray:
        """Concatenate a layer's group activations in the task's unit order (group order)."""
        groups = self.input_groups if l < 0 else self.layers[l].groups
        return np.concatenate([acts[g] for g, grp in enumerate(groups) if task in grp.owners], axis=1)

    def predict(self, task: str, x: np.ndarray, batch: int = 8192) -> np.ndarray:
        outs = []
        for s in range(0, len(x), batch):
            acts = self.forward(task, x[s:s + batch])[-1]
            outs.append(self.task_view(len(self.layers) - 1, acts, task))
        return np.concatenate(outs)

    def original_unit_order(self, l: int, task: str) -> np.ndarray:
        """For task t's view of layer l: which original unit sits at each position."""
        groups = self.input_groups if l < 0 else self.layers[l].groups
        return np.array([u for grp in groups if task in grp.owners for u in grp.units[task]], np.int64)

    # ----- serialisation ------------------------------------------------------------------
    def structure(self) -> dict:
        layers = []
        for layer in self.layers:
            layers.append({"name": layer.name, "kind": layer.kind, "activations": dict(layer.activations),
                           "groups": [g.to_json() for g in layer.groups],
                           "kernels": [[gi, go] for gi, go in sorted(layer.kernels)],
                           "biases": sorted(layer.biases)})
        return {"tasks": list(self.tasks), "input_shape": list(self.input_shape),
                "input_groups": [g.to_json() for g in self.input_groups], "layers": layers}

    def arrays(self, dtype=np.float32) -> dict[str, np.ndarray]:
        out = {}
        for layer in self.layers:
            for (gi, go), k in layer.kernels.items():
                out[kernel_key(layer.name, gi, go)] = k.astype(dtype)
            for go, b in layer.biases.items():
                out[bias_key(layer.name, go)] = b.astype(dtype)
        return out

    @classmethod
    def from_structure(cls, structure: dict, arrays) -> "ZippedNetwork":
        layers = []
        for entry in structure["layers"]:
            layer = Layer(entry["name"], entry["kind"], dict(entry["activations"]),
                          [Group.from_json(g) for g in entry["groups"]])
            for gi, go in entry["kernels"]:
                layer.kernels[(gi, go)] = np.asarray(arrays[kernel_key(layer.name, gi, go)], np.float64)
            for go in entry["biases"]:
                layer.biases[go] = np.asarray(arrays[bias_key(layer.name, go)], np.float64)
            layers.append(layer)
        net = cls(list(structure["tasks"]), tuple(structure["input_shape"]),
                  [Group.from_json(g) for g in structure["input_groups"]], layers)
        net.check_shapes()
        return net

    def check_shapes(self) -> None:
        """Every block's shape must follow from the group sizes it connects."""
        for l, layer in enumerate(self.layers):
            ins = self.input_groups_of_layer(l)
            for (gi, go), k in layer.kernels.items():
                expected = (ins[gi].size, layer.groups[go].size)
                if k.shape[-2:] != expected:
                    raise MTZError(f"block {kernel_key(layer.name, gi, go)} has shape {k.shape} but its groups "
                                   f"imply {expected}: the weights and the plan disagree, zip again")
            for go, b in layer.biases.items():
                if b.shape != (layer.groups[go].size,):
                    raise MTZError(f"bias {bias_key(layer.name, go)} has shape {b.shape}, expected "
                                   f"({layer.groups[go].size},): the weights and the plan disagree, zip again")


def kernel_key(layer: str, gi: int, go: int) -> str:
    return f"{layer}/kernel/{gi}-{go}"


def bias_key(layer: str, go: int) -> str:
    return f"{layer}/bias/{go}"


def share_units(net: ZippedNetwork, l: int, task_a: str, task_b: str, pairs: list[tuple[int, int]],
                merged: np.ndarray) -> None:
    """Zip layer ``l`` in place: unit i of A's group and unit j of B's become one shared unit.

    ``pairs`` index positions inside the layer's A-only and B-only groups. ``merged`` holds the
    shared units' new incoming weights over the input groups both tasks own (concatenated in
    group order) with the bias as the last row. Incoming weights from task-specific inputs stay
    (W̃_A, W̃_B); the unpaired units keep theirs (Ŵ_A, Ŵ_B); the next layer's rows follow the
    new unit order, so each task computes the same function up to the merge itself.
    """
    layer = net.layers[l]
    ins = net.input_groups_of_layer(l)
    ga = _only_group(layer, task_a)
    gb = _only_group(layer, task_b)
    idx_a = np.array([i for i, _ in pairs], np.int64)
    idx_b = np.array([j for _, j in pairs], np.int64)
    rest_a = np.setdiff1d(np.arange(layer.groups[ga].size), idx_a)
    rest_b = np.setdiff1d(np.arange(layer.groups[gb].size), idx_b)
    units_a = np.array(layer.groups[ga].units[task_a])
    units_b = np.array(layer.groups[gb].units[task_b])

    # new groups: shared, A-only, B-only, then any other group untouched; empty ones dropped
    shared = Group((task_a, task_b), {task_a: units_a[idx_a].tolist(), task_b: units_b[idx_b].tolist()})
    only_a = Group((task_a,), {task_a: units_a[rest_a].tolist()})
    only_b = Group((task_b,), {task_b: units_b[rest_b].tolist()})
    others = [g for g in range(len(layer.groups)) if g not in (ga, gb)]
    candidates = [("shared", shared), ("a", only_a), ("b", only_b)] + [(g, layer.groups[g]) for g in others]
    kept = [(tag, grp) for tag, grp in candidates if grp.size > 0]
    new_index = {tag: n for n, (tag, _) in enumerate(kept)}

    # layer l: incoming blocks of the new groups
    both = [gi for gi, grp in enumerate(ins) if task_a in grp.owners and task_b in grp.owners]
    offsets = np.cumsum([0] + [ins[gi].size for gi in both])
    kernels, biases = {}, {}
    for gi, grp in enumerate(ins):
        if "shared" in new_index:
            if gi in both:
                pos = both.index(gi)
                kernels[(gi, new_index["shared"])] = merged[offsets[pos]:offsets[pos + 1]]
            elif task_a in grp.owners:
                kernels[(gi, new_index["shared"])] = np.take(layer.kernels[(gi, ga)], idx_a, axis=-1)
            elif task_b in grp.owners:
                kernels[(gi, new_index["shared"])] = np.take(layer.kernels[(gi, gb)], idx_b, axis=-1)
        if "a" in new_index and (gi, ga) in layer.kernels:
            kernels[(gi, new_index["a"])] = np.take(layer.kernels[(gi, ga)], rest_a, axis=-1)
        if "b" in new_index and (gi, gb) in layer.kernels:
            kernels[(gi, new_index["b"])] = np.take(layer.kernels[(gi, gb)], rest_b, axis=-1)
    for g in others:
        for (gi, go), k in layer.kernels.items():
            if go == g:
                kernels[(gi, new_index[g])] = k
        biases[new_index[g]] = layer.biases[g]
    if "shared" in new_index:
        biases[new_index["shared"]] = merged[-1]
    if "a" in new_index:
        biases[new_index["a"]] = layer.biases[ga][rest_a]
    if "b" in new_index:
        biases[new_index["b"]] = layer.biases[gb][rest_b]
    layer.groups = [grp for _, grp in kept]
    layer.kernels, layer.biases = kernels, biases

    # layer l+1: rows follow the units they read
    if l + 1 < len(net.layers):
        nxt = net.layers[l + 1]
        rows_of = {"shared": {ga: idx_a, gb: idx_b}, "a": {ga: rest_a}, "b": {gb: rest_b}}
        new_kernels = {}
        for (gi, go), k in nxt.kernels.items():
            if gi in (ga, gb):
                if task_a in nxt.groups[go].owners and task_b in nxt.groups[go].owners:
                    raise MTZError(f"cannot zip layer {layer.name} after the layer it feeds was zipped: "
                                   "zip layers in order")
                for tag, sources in rows_of.items():
                    if tag in new_index and gi in sources:
                        new_kernels[(new_index[tag], go)] = np.take(k, sources[gi], axis=-2)
            else:
                new_kernels[(new_index[gi], go)] = k
        nxt.kernels = new_kernels


def _only_group(layer: Layer, task: str) -> int:
    found = [g for g, grp in enumerate(layer.groups) if grp.owners == (task,)]
    if len(found) != 1:
        raise MTZError(f"layer {layer.name} has no single unzipped group of task {task}: it was zipped already")
    return found[0]

"""The zipped network as plain data: a graph of nodes whose units are grouped by owning tasks.

Every weight node's output units (Dense units, Conv2D channels) are split into *groups*. A
group's ``owners`` are the tasks whose path contains its units; ``units[t]`` names, for each
owner, which unit of task t's original node each member came from. Nodes without weights
(pooling, Flatten, GlobalAveragePooling2D, Add, activations) carry their input's groups.

A weight block connects an input group ``gi`` to an output group ``go`` and belongs to a set of
tasks S (a subset of both groups' owners); biases belong to an output group and a task set.
Task t computes output group go as  Σ_{(gi, go, S) ∋ t} x[gi]·W + Σ_{(go, S) ∋ t} b.
After the paper's two-task zip of layer l the groups are [shared, A-only, B-only] and the
blocks are W̃ (shared→shared, S = {A, B}), W̃_A (A-only→shared, {A}), Ŵ_A (→A-only, {A}) and
B's (the paper's §3.3). Blocks of one pair of groups with different task sets are what a unit
shared by tasks whose inputs are not all shared needs: sequentially zipping a third task, or a
residual stream regrouped before its blocks are merged.

Dense blocks are (rows, units) with rows = P·|gi| when the input is a Flatten of P positions
(position-major, as NHWC flattening orders them); Conv2D blocks are (kh, kw, |gi|, |go|).

A depthwise node (DepthwiseConv2D, multiplier 1; also Conv1D-style layers on height-1 maps)
*inherits*: its groups always equal its input's, its blocks are (g, g, S) of shape (kh, kw, |g|)
and it belongs to the stream of its input. A multiply node (squeeze-and-excite)
carries the groups of its ``map`` input; its gate must keep the map's channel order, so both
inputs' sources form one stream. A rescale node holds each task's own preprocessing (x·scale +
offset, in attrs["per_task"]) in front of the first weight layer. A 1-D net's input node has
attrs {"layout": "1d"}: its (L, C) samples run as (1, L, C) maps.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from mtz_mobile.errors import MTZError

from .domains import joint_input_shape, pad_first_layers
from .execute import forward, task_view
from .keys import bias_key, kernel_key  # noqa: F401 (the names blocks are saved under)
from .ops import canonical_shape
from .shapes import check_shapes, infer_shapes

WEIGHT_OPS = ("dense", "conv2d", "depthwise")
INHERITED_OPS = ("depthwise",)   # weight nodes whose output groups are their input's groups
PASS_OPS = ("maxpool", "avgpool", "gap", "flatten", "add", "activation", "multiply", "reshape", "zeropad", "crop",
            "rescale")

Owners = tuple[str, ...]
# Blocks are held in float32, as the models' weights and as every forward pass uses them; the layer
# math reads them into float64 and its results are rounded once, when stored (two VGG-16 in float64
# would hold 2.2 GB more, and a refitted fc6 1.6 GB more)
BLOCK_DTYPE = np.float32


@dataclass
class Group:
    owners: Owners
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
class Node:
    name: str
    op: str
    inputs: list[int]
    attrs: dict = field(default_factory=dict)
    shape: tuple[int, ...] = ()                 # per-sample output shape on the joint input
    groups: list[Group] = field(default_factory=list)                      # input and weight nodes
    kernels: dict[tuple[int, int, Owners], np.ndarray] = field(default_factory=dict)
    biases: dict[tuple[int, Owners], np.ndarray] = field(default_factory=dict)
    activations: dict[str, str] = field(default_factory=dict)              # weight nodes, per task

    @property
    def is_weight(self) -> bool:
        return self.op in WEIGHT_OPS

    @property
    def inherits(self) -> bool:
        return self.op in INHERITED_OPS

    def groups_of(self, task: str) -> list[int]:
        return [g for g, grp in enumerate(self.groups) if task in grp.owners]




@dataclass
class ZippedNetwork:
    tasks: list[str]
    task_input_shapes: dict[str, tuple[int, ...]]
    nodes: list[Node]

    # ----- structure ----------------------------------------------------------------------
    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.nodes[0].shape

    @property
    def output(self) -> int:
        return len(self.nodes) - 1

    @property
    def layout(self) -> str | None:
        """"1d" for a 1-D net (see ops.canonical_shape), else None."""
        return self.nodes[0].attrs.get("layout")

    def weight_nodes(self) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if n.is_weight]

    def zippable(self) -> list[int]:
        """Weight nodes in topological order, the output layer excepted (it is never shared)."""
        return [i for i in self.weight_nodes() if i != self.output]

    def pass_input(self, i: int) -> int:
        """The input whose groups node i carries if it has no weights: a multiply's map."""
        node = self.nodes[i]
        return node.inputs[node.attrs["map"]] if node.op == "multiply" else node.inputs[0]

    def source(self, i: int) -> int:
        """The input or weight node whose groups node i carries."""
        while self.nodes[i].op in PASS_OPS:
            i = self.pass_input(i)
        return i

    def groups(self, i: int) -> list[Group]:
        return self.nodes[self.source(i)].groups

    def input_groups(self, i: int) -> list[Group]:
        return self.groups(self.nodes[i].inputs[0])

    def flatten_input(self, i: int) -> int | None:
        """The node a Flatten right before weight node i (activations aside) flattens, if any."""
        j = self.nodes[i].inputs[0]
        while self.nodes[j].op == "activation":
            j = self.nodes[j].inputs[0]
        return self.nodes[j].inputs[0] if self.nodes[j].op == "flatten" else None

    def row_factor(self, i: int) -> int:
        """Rows per input unit of weight node i: the positions a Flatten before it folds in."""
        src = self.flatten_input(i)
        return 1 if src is None else int(np.prod(self.nodes[src].shape[:-1]))

    def streams(self) -> list[set[int]]:
        """Sets of input/weight nodes that must keep one grouping: those an Add or a Multiply joins,
        and a depthwise node with the source of its input."""
        parent = {i: i for i in range(len(self.nodes))}

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for i, node in enumerate(self.nodes):
            if node.op in ("add", "multiply") or node.inherits:
                roots = [find(self.source(j)) for j in node.inputs] + ([find(i)] if node.inherits else [])
                for r in roots[1:]:
                    parent[find(r)] = find(roots[0])
        out: dict[int, set[int]] = {}
        for i, node in enumerate(self.nodes):
            if node.is_weight or node.op == "input":
                out.setdefault(find(i), set()).add(i)
        return list(out.values())

    def stream_of(self, i: int) -> set[int]:
        return next(s for s in self.streams() if i in s)

    def consumers(self, sources: set[int]) -> list[int]:
        """Weight nodes whose input carries the groups of any node in ``sources``; a depthwise node
        is a member of its input's stream, regrouped with it, never a consumer."""
        return [j for j in self.weight_nodes()
                if not self.nodes[j].inherits and self.source(self.nodes[j].inputs[0]) in sources]

    def copy(self) -> "ZippedNetwork":
        """A copy that shares the weight arrays: every part of the zipper replaces a block rather
        than writing into it, so sharing is safe, and two VGG-16 would otherwise cost 2.2 GB more."""
        return copy.deepcopy(self, {id(arr): arr for _, _, _, arr in self.blocks()})

    # ----- construction -------------------------------------------------------------------
    @classmethod
    def from_models(cls, models: dict) -> "ZippedNetwork":
        """An unzipped network: one group per task in every weight node. ``models`` maps task →
        keras_io.ParsedModel; their graphs must match node for node (widths may differ)."""

        tasks = list(models)
        first = models[tasks[0]]
        layout = first.nodes[0].attrs.get("layout")
        joint = joint_input_shape({t: m.input_shape for t, m in models.items()}, layout)
        _check_same_structure(models)
        nodes = []
        for k, pn in enumerate(first.nodes):
            node = Node(pn.name, pn.op, list(pn.inputs), copy.deepcopy(pn.attrs))
            if pn.op == "rescale":
                node.attrs = {"per_task": {t: copy.deepcopy(models[t].nodes[k].attrs) for t in tasks}}
            elif pn.op in WEIGHT_OPS:
                node.activations = {t: models[t].nodes[k].activation for t in tasks}
            nodes.append(node)
        net = cls(tasks, {t: tuple(m.input_shape) for t, m in models.items()}, nodes)
        nodes[0].groups = [Group(tuple(tasks), {t: list(range(canonical_shape(joint, layout)[-1])) for t in tasks})]
        for k, node in enumerate(nodes):
            if node.inherits:
                node.groups = copy.deepcopy(net.input_groups(k))
            elif node.is_weight:
                node.groups = [Group((t,), {t: list(range(models[t].nodes[k].kernel.shape[-1]))}) for t in tasks]
        net.infer_shapes(joint)
        for k, node in enumerate(nodes):
            if not node.is_weight:
                continue
            in_groups = net.input_groups(k)
            for g, t in enumerate(tasks):
                pn = models[t].nodes[k]
                gi = 0 if net.source(node.inputs[0]) == 0 else next(
                    i for i, grp in enumerate(in_groups) if grp.owners == (t,))
                go = gi if node.inherits else g
                # the models' own arrays, not copies: blocks are replaced, never written in place
                node.kernels[(gi, go, (t,))] = np.asarray(pn.kernel, BLOCK_DTYPE)
                node.biases[(go, (t,))] = np.asarray(pn.bias, BLOCK_DTYPE)
        pad_first_layers(net, models)
        net.check_shapes()
        return net

    def infer_shapes(self, input_shape: tuple[int, ...]) -> None:
        """Per-sample output shapes of every node on the joint input (channels filled per node)."""

        infer_shapes(self, input_shape)

    # ----- accounting ---------------------------------------------------------------------
    def blocks(self):
        """Yield (node index, key, owners, array) for every kernel block and bias."""
        for i, node in enumerate(self.nodes):
            for (gi, go, owners), k in node.kernels.items():
                yield i, kernel_key(node.name, gi, go, owners), owners, k
            for (go, owners), b in node.biases.items():
                yield i, bias_key(node.name, go, owners), owners, b

    def param_counts(self) -> dict:
        """Parameters per task (what its own path uses), stored in all, and stored once for several tasks."""
        per_task = {t: 0 for t in self.tasks}
        nnz_task = {t: 0 for t in self.tasks}
        stored = shared = saved = nnz = 0
        for _, _, owners, arr in self.blocks():
            stored += arr.size
            nz = int(np.count_nonzero(arr))
            nnz += nz
            for t in owners:
                per_task[t] += arr.size
                nnz_task[t] += nz
            if len(owners) > 1:
                shared += arr.size
                saved += (len(owners) - 1) * arr.size
        total = sum(per_task.values())
        return {
            "per_task": per_task, "separate_total": total, "zipped": stored, "shared": shared, "saved": saved,
            "shared_fraction": shared / total if total else 0.0,
            "shared_fraction_definition": "parameters stored once and used by two or more tasks / "
                                          "sum of the separate models' parameters",
            "nonzero_per_task": nnz_task, "nonzero_zipped": nnz,
        }

    def check_shapes(self) -> None:
        """Every block's shape must follow from the group sizes it connects."""

        check_shapes(self)

    # ----- evaluation ---------------------------------------------------------------------
    def forward(self, task: str, x, ops=None, params=None, upto: int | None = None, preactivation: bool = False,
                weighted=None, memo: dict | None = None):
        """Task ``task``'s values of every node up to ``upto``: a list of {group: tensor} dicts.

        ``ops`` computes (numpy by default, see ops.py); ``params(kind, node, key)`` returns a
        block (default: this network's arrays); ``weighted(i, go, task, inputs)`` may replace
        the per-block sum that gives a weight node's pre-activation. With ``preactivation`` the
        last node's values are before its activation. A shared ``memo`` across calls computes
        each value once when several tasks compute the same thing (a fully shared prefix).
        """

        return forward(self, task, x, ops, params, upto, preactivation, weighted, memo)

    def _array_params(self, kind: str, i: int, key):
        node = self.nodes[i]
        return node.kernels[key] if kind == "kernel" else node.biases[key]

    def task_view(self, i: int, values: dict, task: str, ops=None):
        """Concatenate a node's group values in the task's unit order (group order), last axis."""

        return task_view(self, i, values, task, ops)

    def predict(self, task: str, x: np.ndarray, batch: int = 2048, preactivation: bool = False,
                ops=None) -> np.ndarray:
        """The task's outputs for ``x``, in batches (numpy ops unless ``ops`` says otherwise)."""
        outs = []
        for s in range(0, len(x), batch):
            values = self.forward(task, x[s:s + batch], ops=ops, preactivation=preactivation)
            outs.append(np.asarray(self.task_view(self.output, values[-1], task, ops=ops)))
        return np.concatenate(outs)

    def original_unit_order(self, i: int, task: str) -> np.ndarray:
        """For task t's view of node i: which original unit sits at each position."""
        return np.array([u for grp in self.groups(i) if task in grp.owners for u in grp.units[task]], np.int64)

    # ----- serialisation ------------------------------------------------------------------
    def structure(self) -> dict:
        nodes = []
        for node in self.nodes:
            entry = {"name": node.name, "op": node.op, "inputs": node.inputs, "attrs": node.attrs,
                     "shape": list(node.shape)}
            if node.groups:
                entry["groups"] = [g.to_json() for g in node.groups]
            if node.is_weight:
                entry["activations"] = dict(node.activations)
                entry["kernels"] = [[gi, go, list(o)] for gi, go, o in sorted(node.kernels)]
                entry["biases"] = [[go, list(o)] for go, o in sorted(node.biases)]
            nodes.append(entry)
        return {"tasks": list(self.tasks), "task_input_shapes": {t: list(s) for t, s in self.task_input_shapes.items()},
                "nodes": nodes}

    def arrays(self, dtype=np.float32) -> dict[str, np.ndarray]:
        """Every block by its saved name (the block itself where it has that dtype: read only)."""
        return {key: arr.astype(dtype, copy=False) for _, key, _, arr in self.blocks()}

    @classmethod
    def from_structure(cls, structure: dict, arrays) -> "ZippedNetwork":
        nodes = []
        try:
            for entry in structure["nodes"]:
                node = Node(entry["name"], entry["op"], list(entry["inputs"]), dict(entry["attrs"]),
                            tuple(entry["shape"]), [Group.from_json(g) for g in entry.get("groups", [])])
                node.activations = dict(entry.get("activations", {}))
                for gi, go, owners in entry.get("kernels", []):
                    node.kernels[(gi, go, tuple(owners))] = np.asarray(
                        arrays[kernel_key(node.name, gi, go, tuple(owners))], BLOCK_DTYPE)
                for go, owners in entry.get("biases", []):
                    node.biases[(go, tuple(owners))] = np.asarray(
                        arrays[bias_key(node.name, go, tuple(owners))], BLOCK_DTYPE)
                nodes.append(node)
        except KeyError as exc:
            raise MTZError(f"the weights lack block {exc.args[0]} that the plan names: the two disagree, zip again") \
                from exc
        net = cls(list(structure["tasks"]), {t: tuple(s) for t, s in structure["task_input_shapes"].items()}, nodes)
        net.check_shapes()
        return net


def _check_same_structure(models: dict) -> None:
    """The tasks' graphs must match node for node: same kinds, wiring and settings."""
    tasks = list(models)
    ref = models[tasks[0]]
    for t in tasks[1:]:
        m = models[t]
        if len(m.nodes) != len(ref.nodes):
            n_ref, n_m = len(ref.weight_nodes()), len(m.weight_nodes())
            detail = (f"{n_ref} and {n_m} weight layers" if n_ref != n_m else
                      f"{len(ref.nodes)} and {len(m.nodes)} layers")
            raise MTZError(f"{ref.path} and {m.path} have {detail}: MTZ zips networks of the same depth and structure")
        for a, b in zip(ref.nodes, m.nodes):
            # preprocessing values may differ: each task keeps its own (rescale's per_task)
            same_attrs = a.op == "rescale" or a.attrs == b.attrs
            if not (a.op == b.op and a.inputs == b.inputs and same_attrs):
                raise MTZError(f"layer {a.name} of {ref.path} ({a.op}) and {b.name} of {m.path} ({b.op}) differ in "
                               "kind, wiring or settings: the stage structure must match")
    if any(n.op == "rescale" for n in ref.nodes) and len({tuple(m.input_shape) for m in models.values()}) > 1:
        raise MTZError(f"{ref.path} normalises its input (Rescaling/Normalization) and the tasks' input shapes differ: "
                       "the joint input's zero padding would be shifted by the offset; use inputs of one shape")
    for k, node in enumerate(ref.nodes[:-1]):
        if node.op in WEIGHT_OPS:
            acts = {models[t].nodes[k].activation for t in tasks}
            if len(acts) > 1:
                raise MTZError(f"hidden layer {node.name} uses activations {sorted(acts)} across the models: "
                               "shared units need one activation")

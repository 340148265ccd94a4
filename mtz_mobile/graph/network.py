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
B's (DESIGN.md §2). Blocks of one pair of groups with different task sets are what a unit
shared by tasks whose inputs are not all shared needs: sequentially zipping a third task, or a
residual stream regrouped before its blocks are merged.

Dense blocks are (rows, units) with rows = P·|gi| when the input is a Flatten of P positions
(position-major, as NHWC flattening orders them); Conv2D blocks are (kh, kw, |gi|, |go|).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import numpy as np

from mtz_mobile.errors import MTZError

WEIGHT_OPS = ("dense", "conv2d")
PASS_OPS = ("maxpool", "avgpool", "gap", "flatten", "add", "activation")

Owners = tuple[str, ...]


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

    def groups_of(self, task: str) -> list[int]:
        return [g for g, grp in enumerate(self.groups) if task in grp.owners]


def kernel_key(node: str, gi: int, go: int, owners: Owners) -> str:
    return f"{node}/kernel/{gi}-{go}/{'+'.join(owners)}"


def bias_key(node: str, go: int, owners: Owners) -> str:
    return f"{node}/bias/{go}/{'+'.join(owners)}"


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

    def weight_nodes(self) -> list[int]:
        return [i for i, n in enumerate(self.nodes) if n.is_weight]

    def zippable(self) -> list[int]:
        """Weight nodes in topological order, the output layer excepted (it is never shared)."""
        return [i for i in self.weight_nodes() if i != self.output]

    def source(self, i: int) -> int:
        """The input or weight node whose groups node i carries."""
        while self.nodes[i].op in PASS_OPS:
            i = self.nodes[i].inputs[0]
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
        """Sets of input/weight nodes whose outputs Add joins: they must keep one grouping."""
        parent = {i: i for i in range(len(self.nodes))}

        def find(i):
            while parent[i] != i:
                parent[i] = parent[parent[i]]
                i = parent[i]
            return i

        for node in self.nodes:
            if node.op == "add":
                roots = [find(self.source(j)) for j in node.inputs]
                for r in roots[1:]:
                    parent[r] = roots[0]
        out: dict[int, set[int]] = {}
        for i, node in enumerate(self.nodes):
            if node.is_weight or node.op == "input":
                out.setdefault(find(i), set()).add(i)
        return list(out.values())

    def stream_of(self, i: int) -> set[int]:
        return next(s for s in self.streams() if i in s)

    def consumers(self, sources: set[int]) -> list[int]:
        """Weight nodes whose input carries the groups of any node in ``sources``."""
        return [j for j in self.weight_nodes() if self.source(self.nodes[j].inputs[0]) in sources]

    def copy(self) -> "ZippedNetwork":
        return copy.deepcopy(self)

    # ----- construction -------------------------------------------------------------------
    @classmethod
    def from_models(cls, models: dict) -> "ZippedNetwork":
        """An unzipped network: one group per task in every weight node. ``models`` maps task →
        keras_io.ParsedModel; their graphs must match node for node (widths may differ)."""
        from .domains import joint_input_shape, pad_first_layers
        from .ops import canonical_shape

        tasks = list(models)
        first = models[tasks[0]]
        joint = joint_input_shape({t: m.input_shape for t, m in models.items()})
        _check_same_structure(models)
        nodes = []
        for k, pn in enumerate(first.nodes):
            node = Node(pn.name, pn.op, list(pn.inputs), copy.deepcopy(pn.attrs))
            if pn.op == "input":
                channels = canonical_shape(joint)[-1]
                node.groups = [Group(tuple(tasks), {t: list(range(channels)) for t in tasks})]
            elif pn.op in WEIGHT_OPS:
                for t in tasks:
                    units = models[t].nodes[k].kernel.shape[-1]
                    node.groups.append(Group((t,), {t: list(range(units))}))
                    node.activations[t] = models[t].nodes[k].activation
            nodes.append(node)
        net = cls(tasks, {t: tuple(m.input_shape) for t, m in models.items()}, nodes)
        net.infer_shapes(joint)
        for k, node in enumerate(nodes):
            if not node.is_weight:
                continue
            in_groups = net.input_groups(k)
            for g, t in enumerate(tasks):
                pn = models[t].nodes[k]
                gi = 0 if net.source(node.inputs[0]) == 0 else next(
                    i for i, grp in enumerate(in_groups) if grp.owners == (t,))
                node.kernels[(gi, g, (t,))] = np.asarray(pn.kernel, np.float64)
                node.biases[(g, (t,))] = np.asarray(pn.bias, np.float64)
        pad_first_layers(net, models)
        net.check_shapes()
        return net

    def infer_shapes(self, input_shape: tuple[int, ...]) -> None:
        """Per-sample output shapes of every node on the joint input (channels filled per node)."""
        from .ops import canonical_shape, conv_output_size

        canonical = canonical_shape(input_shape)
        for node in self.nodes:
            if node.op == "input":
                node.shape = canonical
                continue
            src = self.nodes[node.inputs[0]].shape
            if node.op == "dense":
                node.shape = (sum(g.size for g in node.groups),)
            elif node.op == "conv2d":
                kh, kw = _kernel_hw(node)
                h, w = (conv_output_size(n, k, s, d, node.attrs["padding"])
                        for n, k, s, d in zip(src[:2], (kh, kw), node.attrs["strides"], node.attrs["dilation"]))
                node.shape = (h, w, sum(g.size for g in node.groups))
            elif node.op in ("maxpool", "avgpool"):
                h, w = (conv_output_size(n, k, s, 1, node.attrs["padding"])
                        for n, k, s in zip(src[:2], node.attrs["pool_size"], node.attrs["strides"]))
                node.shape = (h, w, src[-1])
            elif node.op == "gap":
                node.shape = (src[-1],)
            elif node.op == "flatten":
                node.shape = (int(np.prod(src)),)
            else:
                node.shape = src

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
        for i, node in enumerate(self.nodes):
            if not node.is_weight:
                continue
            ins = self.input_groups(i)
            factor = self.row_factor(i)
            for (gi, go, owners), k in node.kernels.items():
                if node.op == "dense":
                    expected = (factor * ins[gi].size, node.groups[go].size)
                    got = k.shape
                else:
                    expected = (ins[gi].size, node.groups[go].size)
                    got = k.shape[-2:]
                if tuple(got) != expected or not set(owners) <= set(ins[gi].owners) & set(node.groups[go].owners):
                    raise MTZError(f"block {kernel_key(node.name, gi, go, owners)} has shape {k.shape}, its groups "
                                   f"imply {expected}: the weights and the plan disagree, zip again")
            for (go, owners), b in node.biases.items():
                if b.shape != (node.groups[go].size,):
                    raise MTZError(f"bias {bias_key(node.name, go, owners)} has shape {b.shape}, expected "
                                   f"({node.groups[go].size},): the weights and the plan disagree, zip again")

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
        from .ops import NUMPY_OPS

        if task not in self.tasks:
            raise MTZError(f"unknown task {task!r}: this network has {', '.join(self.tasks)}")
        ops = ops or NUMPY_OPS
        params = params or self._array_params
        weighted = weighted or (lambda i, go, t, src: self._block_sum(i, go, t, src, ops, params))
        last = self.output if upto is None else upto

        def get(key, compute):
            if memo is None:
                return compute()
            if key not in memo:
                memo[key] = compute()
            return memo[key]

        values, keys = [], []
        for i, node in enumerate(self.nodes[:last + 1]):
            if node.op == "input":
                key = ("input", self.task_input_shapes[task])
                values.append({0: get(key, lambda: ops.prepare_input(x, self.task_input_shapes[task], node.shape))})
                keys.append({0: key})
                continue
            src, src_keys = values[node.inputs[0]], keys[node.inputs[0]]
            out, out_keys = {}, {}
            if node.is_weight:
                pre = preactivation and i == last
                for go in node.groups_of(task):
                    used = tuple(sorted((gi, o, src_keys[gi]) for gi, g2, o in node.kernels if g2 == go and task in o)
                                 + sorted((-1, o, None) for g2, o in node.biases if g2 == go and task in o))
                    act = "linear" if pre else node.activations[task]
                    key = (i, go, used, act)
                    out[go] = get(key, lambda: ops.activation(act, weighted(i, go, task, src)))
                    out_keys[go] = key
            else:
                for g, v in src.items():
                    key = (i, g, tuple(keys[j][g] for j in node.inputs))
                    if node.op == "add":
                        fn = lambda g=g: _sum([values[j][g] for j in node.inputs])  # noqa: E731
                    elif node.op == "activation":
                        fn = lambda v=v: ops.activation(node.attrs["activation"], v)  # noqa: E731
                    elif node.op in ("maxpool", "avgpool"):
                        fn = lambda v=v: ops.pool(node.op, v, node.attrs)  # noqa: E731
                    elif node.op == "gap":
                        fn = lambda v=v: ops.gap(v)  # noqa: E731
                    elif node.op == "flatten":
                        fn = lambda v=v: ops.flatten(v)  # noqa: E731
                    else:
                        raise MTZError(f"unknown node kind {node.op}")
                    out[g], out_keys[g] = get(key, fn), key
            values.append(out)
            keys.append(out_keys)
        return values

    def _block_sum(self, i: int, go: int, task: str, src: dict, ops, params):
        """Σ over the task's blocks into group go of x[gi]·W, plus the task's biases."""
        node = self.nodes[i]
        z = None
        for (gi, g2, owners) in sorted(node.kernels):
            if g2 == go and task in owners:
                w = params("kernel", i, (gi, go, owners))
                y = ops.dense(src[gi], w) if node.op == "dense" else ops.conv(src[gi], w, node.attrs)
                z = y if z is None else z + y
        for (g2, owners) in sorted(node.biases):
            if g2 == go and task in owners:
                b = params("bias", i, (go, owners))
                z = b if z is None else z + b
        return z

    def _array_params(self, kind: str, i: int, key):
        node = self.nodes[i]
        return node.kernels[key] if kind == "kernel" else node.biases[key]

    def task_view(self, i: int, values: dict, task: str, ops=None):
        """Concatenate a node's group values in the task's unit order (group order), last axis."""
        from .ops import NUMPY_OPS

        ops = ops or NUMPY_OPS
        parts = [values[g] for g, grp in enumerate(self.groups(i)) if task in grp.owners]
        return parts[0] if len(parts) == 1 else ops.concat(parts)

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
        return {key: arr.astype(dtype) for _, key, _, arr in self.blocks()}

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
                        arrays[kernel_key(node.name, gi, go, tuple(owners))], np.float64)
                for go, owners in entry.get("biases", []):
                    node.biases[(go, tuple(owners))] = np.asarray(
                        arrays[bias_key(node.name, go, tuple(owners))], np.float64)
                nodes.append(node)
        except KeyError as exc:
            raise MTZError(f"the weights lack block {exc.args[0]} that the plan names: the two disagree, zip again") \
                from exc
        net = cls(list(structure["tasks"]), {t: tuple(s) for t, s in structure["task_input_shapes"].items()}, nodes)
        net.check_shapes()
        return net


def _sum(parts):
    total = parts[0]
    for p in parts[1:]:
        total = total + p
    return total


def _kernel_hw(node: Node) -> tuple[int, int]:
    return tuple(node.attrs["kernel_size"])


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
            if not (a.op == b.op and a.inputs == b.inputs and a.attrs == b.attrs):
                raise MTZError(f"layer {a.name} of {ref.path} ({a.op}) and {b.name} of {m.path} ({b.op}) differ in "
                               "kind, wiring or settings: the stage structure must match")
    for k, node in enumerate(ref.nodes[:-1]):
        if node.op in WEIGHT_OPS:
            acts = {models[t].nodes[k].activation for t in tasks}
            if len(acts) > 1:
                raise MTZError(f"hidden layer {node.name} uses activations {sorted(acts)} across the models: "
                               "shared units need one activation")

"""Executing a zipped network for one task, with numpy or TensorFlow ops (see ops.py).

Values are kept per group: a node's value is {group index: tensor}. Every value has a key that
names what it was computed from, so a memo shared by several tasks computes a fully shared
prefix once (the joint "all" signature). A key names its inputs by their keys' numbers in the
memo, not by the keys themselves: nested keys would grow with the graph's paths (doubling at
every residual Add), and hashing them took longer than tracing a partially shared MobileNetV2.
"""

from __future__ import annotations

from mtz_mobile.errors import MTZError

from .ops import NUMPY_OPS, canonical_shape

_KEY_NUMBERS = "key numbers"  # the memo's entry that numbers its keys


def forward(net, task: str, x, ops=None, params=None, upto: int | None = None, preactivation: bool = False,
            weighted=None, memo: dict | None = None):
    """See ZippedNetwork.forward."""
    if task not in net.tasks:
        raise MTZError(f"unknown task {task!r}: this network has {', '.join(net.tasks)}")
    ops = ops or NUMPY_OPS
    params = params or net._array_params
    weighted = weighted or (lambda i, go, t, src: block_sum(net, i, go, t, src, ops, params))
    last = net.output if upto is None else upto

    numbers = None if memo is None else memo.setdefault(_KEY_NUMBERS, {})

    def get(key, compute):
        """The value (computed once per key when there is a memo) and the key's number."""
        if memo is None:
            return compute(), None
        number = numbers.setdefault(key, len(numbers))
        if number not in memo:
            memo[number] = compute()
        return memo[number], number

    values, keys = [], []
    for i, node in enumerate(net.nodes[:last + 1]):
        if node.op == "input":
            own = canonical_shape(net.task_input_shapes[task], net.layout)
            value, key = get(("input", own), lambda: ops.prepare_input(x, own, node.shape))
            values.append({0: value})
            keys.append({0: key})
            continue
        out, out_keys = {}, {}
        if node.is_weight:
            src, src_keys = values[node.inputs[0]], keys[node.inputs[0]]
            pre = preactivation and i == last
            for go in node.groups_of(task):
                used = tuple(sorted((gi, o, src_keys[gi]) for gi, g2, o in node.kernels if g2 == go and task in o)
                             + sorted((-1, o, None) for g2, o in node.biases if g2 == go and task in o))
                act = "linear" if pre else node.activations[task]
                out[go], out_keys[go] = get((i, go, used, act), lambda: ops.activation(act, weighted(i, go, task, src)))
        else:
            extra = _task_key(node, task)
            for g in values[net.pass_input(i)]:
                key = (i, g, tuple(keys[j][g] for j in node.inputs)) + extra
                out[g], out_keys[g] = get(key, lambda g=g: pass_value(node, [values[j][g] for j in node.inputs],
                                                                      task, ops))
        values.append(out)
        keys.append(out_keys)
    return values


def forward_nodes(net, task: str, x, known: dict, wanted: list[int], ops=None) -> dict:
    """Task ``task``'s values of the nodes ``wanted``, computing only what they need: from the
    values of nodes given in ``known`` ({node: {group: tensor}}, for the same samples) and, where
    the input node is reached, from the samples ``x``. Each value is computed as ``forward``
    computes it (same ops, same order), so it equals forward's to the last bit; values no longer
    needed are dropped as the pass goes (at most a few maps of a wide net are alive at once)."""
    ops = ops or NUMPY_OPS
    need, stack = set(), [k for k in wanted if k not in known]
    while stack:
        k = stack.pop()
        if k in need or k in known:
            continue
        need.add(k)
        stack += [j for j in net.nodes[k].inputs if j not in known]
    order = sorted(need)
    last_use = {}
    for k in order:
        for j in net.nodes[k].inputs:
            last_use[j] = k
    values = dict(known)
    for k in order:
        node = net.nodes[k]
        if node.op == "input":
            own = canonical_shape(net.task_input_shapes[task], net.layout)
            values[k] = {0: ops.prepare_input(x, own, node.shape)}
        elif node.is_weight:
            src = values[node.inputs[0]]
            values[k] = {go: ops.activation(node.activations[task],
                                            block_sum(net, k, go, task, src, ops, net._array_params))
                         for go in node.groups_of(task)}
        else:
            values[k] = {g: pass_value(node, [values[j][g] for j in node.inputs], task, ops)
                         for g in values[net.pass_input(k)]}
        for j in set(node.inputs):
            if last_use.get(j) == k and j not in wanted:
                del values[j]
    return {k: values[k] for k in wanted}


def preactivation(net, task: str, i: int, src: dict, ops=None) -> dict:
    """Weight node i's values before its activation, from its input's values ``src`` (as
    ``forward(..., upto=i, preactivation=True)[i]`` computes them)."""
    ops = ops or NUMPY_OPS
    return {go: ops.activation("linear", block_sum(net, i, go, task, src, ops, net._array_params))
            for go in net.nodes[i].groups_of(task)}


def _task_key(node, task: str) -> tuple:
    """What besides its inputs a pass node's value depends on: a task's own preprocessing values
    (equal values give equal keys, so tasks that normalise alike still share the prefix)."""
    if node.op != "rescale":
        return ()
    own = node.attrs["per_task"][task]
    return (tuple(own["scale"]), tuple(own["offset"]))


def pass_value(node, inputs: list, task: str, ops):
    """A node without weights, applied to one group's values of its inputs."""
    v, a = inputs[0], node.attrs
    if node.op == "add":
        total = inputs[0]
        for p in inputs[1:]:
            total = total + p
        return total
    if node.op == "multiply":
        return ops.multiply(inputs[a["map"]], inputs[1 - a["map"]])
    if node.op == "activation":
        return ops.activation(a["activation"], v)
    if node.op in ("maxpool", "avgpool"):
        return ops.pool(node.op, v, a)
    if node.op == "gap":
        return ops.gap(v, keepdims=a.get("keepdims", False))
    if node.op == "flatten":
        return ops.flatten(v)
    if node.op == "reshape":
        return ops.reshape(v, a["shape"][:-1] + [v.shape[-1]])
    if node.op == "zeropad":
        return ops.zeropad(v, a["pads"])
    if node.op == "crop":
        return ops.crop(v, a["crops"])
    if node.op == "rescale":
        own = a["per_task"][task]
        return ops.rescale(v, own["scale"], own["offset"])
    raise MTZError(f"unknown node kind {node.op} in {node.name}: the plan was written by a newer mtz-mobile; "
                   "upgrade it")


def block_sum(net, i: int, go: int, task: str, src: dict, ops, params):
    """Σ over the task's blocks into group go of x[gi]·W, plus the task's biases. A depthwise
    node's block (go, go) convolves group go channel by channel."""
    node = net.nodes[i]
    z = None
    for (gi, g2, owners) in sorted(node.kernels):
        if g2 == go and task in owners:
            w = params("kernel", i, (gi, go, owners))
            if node.op == "dense":
                y = ops.dense(src[gi], w)
            elif node.op == "depthwise":
                y = ops.depthwise(src[gi], w, node.attrs)
            else:
                y = ops.conv(src[gi], w, node.attrs)
            z = y if z is None else z + y
    for (g2, owners) in sorted(node.biases):
        if g2 == go and task in owners:
            b = params("bias", i, (go, owners))
            z = b if z is None else z + b
    return z


def task_view(net, i: int, values: dict, task: str, ops=None):
    """Concatenate a node's group values in the task's unit order (group order), last axis."""
    ops = ops or NUMPY_OPS
    parts = [values[g] for g, grp in enumerate(net.groups(i)) if task in grp.owners]
    return parts[0] if len(parts) == 1 else ops.concat(parts)

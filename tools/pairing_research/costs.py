"""Candidate pairing costs for mtz_mobile's zipper, hooked in by monkeypatching step._choose_pairs.

Every candidate keeps method "mtz" (Hessian-optimal merge w~ = S^-1(H_A w_A + H_B w_B)); only the
cost matrix given to select_pairs(d, count, method="exact") changes. Written for two tasks and dense
layers (LeNet-300-100): task a = the joint network's units, task b = the newcomer's.
"""
from __future__ import annotations

import time
import numpy as np
from scipy.linalg import cho_solve

import mtz_mobile.zipper.step as stepmod
from mtz_mobile.zipper.config import shared_count
from mtz_mobile.zipper.pairing import select_pairs

MAX_INSTANCES = 8000    # conv layers: output positions x images kept for the costs
N_SAMPLES = 2000          # calibration images per task used by the costs (training data only)
ORIG_CHOOSE = stepmod._choose_pairs
TIMINGS: list = []        # seconds spent computing each cost matrix


def _relu(x):
    return np.maximum(x, 0.0)


def _layer_data(step, cand, task, group, x):
    """Shared inputs (n, D+1, bias last), full pre-activations of the task's units of ``group``
    (private inputs included) and the task's post-activations, on images x, in the current net."""
    net, i = step.net, step.node
    node = net.nodes[i]
    src = node.inputs[0]
    vals = net.forward(task, x, upto=i, preactivation=True, ops=step.calib.ops)
    if node.op == "conv2d":   # one instance per output position; a fixed random subset of them
        xin = np.concatenate([np.asarray(vals[src][g]) for g in cand.inputs], axis=-1)
        p = np.asarray(step.calib.ops.patches(xin, node.attrs))
        p = p.reshape(-1, p.shape[-1])
        z = np.asarray(vals[i][group]).reshape(-1, node.groups[group].size)
        keep = np.random.default_rng(0).permutation(len(p))[:MAX_INSTANCES]
        xs = np.hstack([p[keep].astype(np.float64), np.ones((len(keep), 1))])
        z = z[keep].astype(np.float64)
    else:
        xs = np.concatenate([np.asarray(vals[src][g]).reshape(len(x), -1) for g in cand.inputs] +
                            [np.ones((len(x), 1), np.float32)], axis=1).astype(np.float64)
        z = np.asarray(vals[i][group], np.float64)
    act = net.nodes[i].activations[task]
    assert act == "relu", act
    return xs, z


def _next_row_norms(step, group, task):
    """Sum over the task's consumers of ||row of unit||^2 in the current network."""
    net, i = step.net, step.node
    n = net.nodes[i].groups[group].size
    out = np.zeros(n)
    for j in net.consumers(net.stream_of(i)):
        cons = net.nodes[j]
        for (gi, go, owners), k in cons.kernels.items():
            if gi == group and task in owners:
                k2 = np.asarray(k, np.float64) ** 2
                if cons.op == "conv2d":          # (kh, kw, C_in, C_out)
                    out += k2.sum(axis=(0, 1, 3))
                else:                            # flatten: position-major rows
                    out += k2.reshape(net.row_factor(j), n, -1).sum(axis=(0, 2))
    return out


def _loo_residual(a, ridge=1e-3):
    """Residual of each (centred) column of a after regressing it on all the other columns."""
    ac = a - a.mean(0)
    g = ac.T @ ac / len(ac)
    g[np.diag_indices_from(g)] += ridge * np.mean(np.diag(g)) + 1e-12
    gi = np.linalg.inv(g)
    return (ac @ gi) / np.diag(gi)[None, :]


def _unrepaired(target, base, shift, linear):
    """For every i, j: Var(target_i) * (1 - corr(target_i, f(base_i + shift_j))^2), f = relu or id
    (residual variance of target_i after a least-squares fit on the merged unit with intercept)."""
    n, n_i = target.shape
    tc = target - target.mean(0)
    tv = (tc ** 2).mean(0)
    out = np.empty((n_i, shift.shape[1]))
    for i in range(n_i):
        y = base[:, i:i + 1] + shift
        if not linear:
            y = _relu(y)
        yc = y - y.mean(0)
        cov = tc[:, i] @ yc / n
        yv = (yc ** 2).mean(0)
        rho2 = np.where(yv > 1e-12, cov ** 2 / np.maximum(tv[i] * yv, 1e-30), 0.0)
        out[i] = tv[i] * (1.0 - np.minimum(rho2, 1.0))
    return out


def cost_matrix(kind, step, cand, newcomer_group, rng):
    a, b = cand.owners[0], step.newcomer
    assert len(cand.owners) == 1, cand.owners
    xa_img = step.calib.x[a][:N_SAMPLES]
    xb_img = step.calib.x[b][:N_SAMPLES]
    n_a, n_b = cand.w_joint.shape[1], cand.w_new.shape[1]
    if kind == "randpair":   # random pairs, Hessian-optimal merge
        return rng.random((n_a, n_b))
    if kind == "zipit":      # ZipIt!-style: -corr of post-activations on the union of both tasks' images
        x = np.concatenate([xa_img[:N_SAMPLES // 2], xb_img[:N_SAMPLES // 2]])
        _, za = _layer_data(step, cand, a, cand.group, x)
        _, zb = _layer_data(step, cand, b, newcomer_group, x)
        fa, fb = _relu(za), _relu(zb)
        fa = (fa - fa.mean(0)) / (fa.std(0) + 1e-8)
        fb = (fb - fb.mean(0)) / (fb.std(0) + 1e-8)
        return -(fa.T @ fb) / len(x)
    geo = cand.geometry
    wa, wb = cand.w_joint, cand.w_new
    m_a = cho_solve((geo.s_chol, True), geo.h_a)   # S^-1 H_A  (M_A + M_B = I)
    m_b = cho_solve((geo.s_chol, True), geo.h_b)
    alpha = step.config.alpha
    linear = kind == "comp_lin"
    # task a: merged unit (i,j) on a's data = z_a,i + X_a M_B (w_j - w_i)
    xs, za = _layer_data(step, cand, a, cand.group, xa_img)
    ua_a, ua_b = xs @ m_b @ wa, xs @ m_b @ wb
    base_a = za - ua_a
    # task b: merged unit (i,j) on b's data = z_b,j + X_b M_A (w_i - w_j)
    xs, zb = _layer_data(step, cand, b, newcomer_group, xb_img)
    ub_a, ub_b = xs @ m_a @ wa, xs @ m_a @ wb
    base_b = zb - ub_b
    if kind in ("comp", "comp_lin", "comp_proj"):
        ta, tb = (za, zb) if linear else (_relu(za), _relu(zb))
        if kind == "comp_proj":   # only the part of each unit the layer's other units cannot express
            ta, tb = _loo_residual(ta), _loo_residual(tb)
        va = _next_row_norms(step, cand.group, a)
        vb = _next_row_norms(step, newcomer_group, b)
        cost_a = va[:, None] * _unrepaired(ta, base_a, ua_b, linear)              # (n_a, n_b)
        cost_b = vb[:, None] * _unrepaired(tb, base_b, ub_a, linear)              # (n_b, n_a)
        return alpha * cost_a + (1 - alpha) * cost_b.T
    raise ValueError(kind)


def install(kind):
    """Replace the pairing cost by candidate ``kind`` (None: the library's own)."""
    if kind is None:
        stepmod._choose_pairs = ORIG_CHOOSE
        return

    def choose(step, candidates, n_joint, n_new, count, rng):
        name = step.net.nodes[step.node].name
        value = step.config.layer_value(step.layer) if count is None else count
        node = step.net.nodes[step.node]
        newcomer_group = [g for g, grp in enumerate(node.groups) if grp.owners == (step.newcomer,)][0]
        comparisons = [c.geometry.compare(c.w_joint, c.w_new) for c in candidates]
        assert len(candidates) == 1
        t0 = time.perf_counter()
        d = cost_matrix(kind, step, candidates[0], newcomer_group, np.random.default_rng(
            [step.config.seed, step.node, 77]))
        TIMINGS.append(time.perf_counter() - t0)
        k = shared_count(value, n_joint, n_new, name)
        dd = d - d.min()   # select_pairs' assignment wants a non-negative-ish scale
        flat = select_pairs(dd, count=k, method="exact")
        return flat, comparisons[0].d, comparisons
    stepmod._choose_pairs = choose


def finished(out) -> set:
    """(candidate, level, seed, iterations) of the rows already in a results file: a re-run skips them."""
    import json
    if not out.exists():
        return set()
    return {(r["cand"], r["level"], r["seed"], r["iters"]) for r in map(json.loads, out.read_text().splitlines())}


def zip_config(cand, shared, iters, seed, **extra):
    """The candidate's zip: the Hessian merge and compensation for every cost but the random baseline."""
    from mtz_mobile.zipper import ZipConfig
    from mtz_mobile.zipper.config import RetrainSettings
    install(None if cand in ("random", "mtz") else cand)
    TIMINGS.clear()
    rs = RetrainSettings(iterations=iters, learning_rate=1e-4, batch_size=128)
    return ZipConfig(shared=shared, method="random" if cand == "random" else "mtz", compensation="next-layer",
                     retrain=rs, seed=seed, **extra)


def record(out, row: dict) -> None:
    """Print a result row and append it to the results file."""
    import json
    print(json.dumps(row), flush=True)
    with out.open("a") as f:
        f.write(json.dumps(row) + "\n")

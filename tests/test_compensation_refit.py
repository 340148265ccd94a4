"""The next-layer refit against its definition, the slow way: after a layer is zipped, each task's
consumer maps its inputs x̃ = (x, 1) in the zipped network to pre-activations X̃W whose W minimises
‖X̃W − T‖²/n + ρ‖W − W₀‖², ρ = ridge · mean diag(X̃ᵀX̃/n), T the original's pre-activations and W₀
the consumer before the refit. Everything is read from forward passes (numpy's lstsq recovers the
linear maps), not from the zipper's blocks; the same zip without compensation gives W₀."""

from __future__ import annotations

import numpy as np
import pytest

from mtz_mobile.data import TaskData
from mtz_mobile.errors import MTZError
from mtz_mobile.graph.keras_io import parse_model
from mtz_mobile.reference import build_mlp
from mtz_mobile.zipper import ZipConfig, zip_networks
from mtz_mobile.zipper.config import RetrainSettings


def random_mlp(seed: int, hidden: tuple[int, ...]):
    model = build_mlp((5, 5, 1), hidden, 4)
    rng = np.random.default_rng(seed)
    model.set_weights([rng.normal(0, 1 / np.sqrt(w.shape[0]) if w.ndim > 1 else 0.3, w.shape) for w in model.get_weights()])
    return model


def after_first_layer(models, x, compensation: str, ridge: float):
    """The zipped network right after its first hidden layer is zipped (all its units shared)."""
    y = np.random.default_rng(0).integers(0, 4, len(x))
    data = TaskData("npz:synthetic", x, y, x[:8], y[:8], list("0123"))
    cfg = ZipConfig(shared=["all", 0], compensation=compensation, compensation_ridge=ridge,
                    retrain=RetrainSettings(iterations=0), calibration_samples=len(x))
    snapshots = []
    result = zip_networks({t: parse_model(m) for t, m in zip("ab", models)}, {"a": data, "b": data}, cfg,
                          progress=False, on_layer_done=lambda m, net: snapshots.append(net.copy()))
    return snapshots[0], result.plan.layers[0]


def preactivations(net, task: str, j: int, x) -> np.ndarray:
    """Node j's pre-activations in the task's current unit order, as the original units they are."""
    z = net.task_view(j, net.forward(task, x, upto=j, preactivation=True)[j], task)
    return np.asarray(z, np.float64), net.original_unit_order(j, task)


@pytest.mark.parametrize("widths, rows, ridge", [((12, 7), 150, 1e-3), ((12, 7), 150, 0.7),
                                                  ((90, 7), 20, 0.05)],
                         ids=["normal-equations", "normal-equations-large-ridge", "from-rows"])
def test_refit_is_the_ridge_least_squares_solution(widths, rows, ridge):
    models = [random_mlp(1, widths), random_mlp(2, widths)]
    x = np.random.default_rng(3).random((rows, 5, 5, 1), dtype=np.float32)
    refit, record = after_first_layer(models, x, "next-layer", ridge)
    before, _ = after_first_layer(models, x, "none", ridge)
    assert record.n_shared == widths[0]
    hidden, consumer = refit.zippable()[0], refit.zippable()[1]
    for t, model in zip("ab", models):
        inputs = np.asarray(refit.task_view(hidden, refit.forward(t, x, upto=hidden)[hidden], t), np.float64)
        xt = np.hstack([inputs.reshape(len(x), -1), np.ones((len(x), 1))])
        got, order = preactivations(refit, t, consumer, x)
        z0, order0 = preactivations(before, t, consumer, x)
        assert list(order) == list(order0)
        # the original's pre-activations of the consumer, by Keras, in the zipped view's unit order
        dense = model.layers[2]
        target = (np.asarray(model.layers[1](model.layers[0](x)), np.float64) @ dense.kernel.numpy()
                  + dense.bias.numpy())[:, order]
        w0 = np.linalg.lstsq(xt, z0, rcond=None)[0]   # the consumer before the refit (its row space: all that counts)
        gram = xt.T @ xt / len(x)
        rho = ridge * np.mean(np.diag(gram))
        want = np.linalg.solve(gram + rho * np.eye(len(gram)), xt.T @ target / len(x) + rho * w0)
        np.testing.assert_allclose(got, xt @ want, rtol=1e-4, atol=1e-4 * np.abs(target).max())
        # and it is a refit: closer to the original than before it
        assert np.mean((got - target) ** 2) < np.mean((z0 - target) ** 2)


def test_a_singular_refit_names_the_ridge_to_raise():
    """Constant inputs and no ridge: the normal equations are singular; one line names the fix."""
    models = [random_mlp(1, (12, 7)), random_mlp(2, (12, 7))]
    x = np.zeros((150, 5, 5, 1), np.float32)
    with pytest.raises(MTZError, match=r"^the refit of .* for task 'a' is singular: raise --compensation-ridge$"):
        after_first_layer(models, x, "next-layer", 0.0)


def test_a_partly_shared_stream_refits_each_of_a_consumers_groups():
    """Half of each residual stream's channels shared: a stream-paired consumer then has two groups
    of the task's own (the pending shared one and the task's remainder), refitted in one solve and
    split between them. The same stationarity check as test_conv_residual's whole-sharing case."""
    from test_conv_residual import assert_least_squares_optimum, images, randomize, task_data
    from mtz_mobile.graph.network import ZippedNetwork
    from mtz_mobile.reference import build_resnet

    x = images((16, 16, 3), n=48)
    models = {t: parse_model(randomize(build_resnet((16, 16, 3), 4, width=4), s)) for t, s in (("a", 5), ("b", 6))}
    original = ZippedNetwork.from_models(models)
    hidden, snapshots = original.zippable(), []
    cfg = ZipConfig(shared=[0.5], retrain=RetrainSettings(iterations=0), calibration_samples=len(x),
                    compensation_ridge=1e-9)
    zip_networks(models, {"a": task_data(x), "b": task_data(x)}, cfg, progress=False,
                 on_layer_done=lambda m, net: snapshots.append((hidden[m], net.copy())))
    rng, checked = np.random.default_rng(0), []
    for i, net in snapshots:
        for j in net.consumers(net.stream_of(i)):
            node = net.nodes[j]
            for t in ("a", "b"):
                own = [g for g in node.groups_of(t) if (g, (t,)) in node.biases]
                if len(own) < 2 or not any(len(node.groups[g].owners) > 1 for g in own):
                    continue
                for g in own:   # each group's blocks at the least-squares optimum on their own
                    keys = [k for k in node.kernels if k[1] == g and k[2] == (t,)]
                    assert_least_squares_optimum(net, original, t, j, x, keys, rng, (node.name, t, g))
                checked.append((node.name, t))
    assert len(checked) >= 2, checked


def test_a_subsampled_refit_is_the_same_under_the_seed():
    """With fewer instances kept than the calibration rows (max_instances), the refit reads a seeded
    random subset: two runs give the same consumer, and it still moves towards the original."""
    models = [random_mlp(1, (12, 7)), random_mlp(2, (12, 7))]
    x = np.random.default_rng(3).random((150, 5, 5, 1), dtype=np.float32)
    y = np.random.default_rng(0).integers(0, 4, len(x))
    data = TaskData("npz:synthetic", x, y, x[:8], y[:8], list("0123"))

    def consumer(compensation):
        cfg = ZipConfig(shared=["all", 0], compensation=compensation, retrain=RetrainSettings(iterations=0),
                        calibration_samples=len(x), max_instances=90)
        snaps = []
        zip_networks({t: parse_model(m) for t, m in zip("ab", models)}, {"a": data, "b": data}, cfg, progress=False,
                     on_layer_done=lambda m, net: snaps.append(net.copy()))
        return preactivations(snaps[0], "a", snaps[0].zippable()[1], x)[0]

    first, again, before = consumer("next-layer"), consumer("next-layer"), consumer("none")
    np.testing.assert_array_equal(first, again)
    assert not np.allclose(first, before)

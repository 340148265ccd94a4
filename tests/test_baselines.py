"""The practitioner baselines: a frozen trunk leaves task A's function exactly as it was and trains
task B's layers only; multi-task fine-tuning shares every hidden layer; both write zip directories
that evaluate reads, and share as many parameters as counted by hand."""

from __future__ import annotations

import numpy as np
import pytest

from mtz_mobile import api
from mtz_mobile.baselines import frozen_trunk, multitask_finetune
from mtz_mobile.errors import MTZError
from mtz_mobile.graph.keras_io import load_keras_model, read_model
from mtz_mobile.zipper.plan import load_zip_dir

SETTINGS = dict(retrain_iterations=40, retrain_batch_size=64, validation_split=0.2)


def _pair(small_models):
    return {"a": read_model(small_models[0]), "b": read_model(small_models[1])}


def _holdout_error(net, task, fmnist) -> float:
    held = fmnist.holdout(0.2)
    return float(np.mean(np.argmax(net.predict(task, held.x_val), 1) != held.y_val))


def test_frozen_trunk_keeps_task_a_and_trains_only_task_bs_layers(small_models, fmnist, tmp_path):
    models, data = _pair(small_models), {"a": fmnist, "b": fmnist}
    untrained = frozen_trunk(models, data, api.make_config(**dict(SETTINGS, retrain_iterations=0)), layers=1)
    result = frozen_trunk(models, data, api.make_config(**SETTINGS), layers=1, out_dir=tmp_path / "z")
    keras_a = load_keras_model(small_models[0]).predict(fmnist.x_test, verbose=0)
    np.testing.assert_allclose(result.network.predict("a", fmnist.x_test), keras_a, atol=1e-5)
    # B's retrained layers on A's features beat B's own layers put on them untouched
    assert _holdout_error(result.network, "b", fmnist) < _holdout_error(untrained.network, "b", fmnist)
    # stored once: the first layer (784·48 + 48); separately: two 784-48-24-10 networks
    per_model = 784 * 48 + 48 + 48 * 24 + 24 + 24 * 10 + 10
    assert result.plan.params["shared_fraction"] == pytest.approx((784 * 48 + 48) / (2 * per_model))
    zipdir = load_zip_dir(tmp_path / "z")
    assert zipdir.plan.final_retrain["baseline"] == "frozen-trunk" and set(zipdir.plan.validation) == {"a", "b"}
    np.testing.assert_array_equal(zipdir.network.predict("b", fmnist.x_test), result.network.predict("b", fmnist.x_test))


def test_multitask_finetune_shares_every_hidden_layer_from_a_and_trains_both(small_models, fmnist):
    models, data = _pair(small_models), {"a": fmnist, "b": fmnist}
    start = multitask_finetune(models, data, api.make_config(**dict(SETTINGS, retrain_iterations=0)))
    # before training: task A is A's model exactly (its trunk and its own head)
    keras_a = load_keras_model(small_models[0]).predict(fmnist.x_test, verbose=0)
    np.testing.assert_allclose(start.network.predict("a", fmnist.x_test), keras_a, atol=1e-5)
    trained = multitask_finetune(models, data, api.make_config(**SETTINGS))
    hidden = 784 * 48 + 48 + 48 * 24 + 24
    assert trained.plan.params["shared_fraction"] == pytest.approx(hidden / (2 * (hidden + 24 * 10 + 10)))
    assert _holdout_error(trained.network, "b", fmnist) < _holdout_error(start.network, "b", fmnist)
    assert not np.allclose(trained.network.predict("a", fmnist.x_test[:50]), keras_a[:50], atol=1e-4)
    with pytest.raises(MTZError, match="hidden layers"):
        frozen_trunk(models, data, api.make_config(**SETTINGS), layers=3)

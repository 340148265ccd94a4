"""The practitioner baselines on a residual, depthwise graph (as MobileNetV2 is built): the whole
trunk shared, each task's head its last Dense layer. Checked against Keras' own outputs, the
weights file read back, a trunk swapped in by Keras' set_weights, and the chain networks' route
(regroup + merge) built the slow way."""

from __future__ import annotations

import keras
import numpy as np
import pytest

from mtz_mobile import api
from mtz_mobile.baselines import frozen_trunk, multitask_finetune
from mtz_mobile.baselines.trunk import share_trunk, share_whole_trunk, trunk_nodes
from mtz_mobile.data import TaskData
from mtz_mobile.errors import MTZError
from mtz_mobile.graph.keras_io import read_model
from mtz_mobile.graph.network import ZippedNetwork

L = keras.layers
SHAPE = (8, 8, 3)
SETTINGS = dict(retrain_iterations=10, retrain_batch_size=32, validation_split=0.25)


def residual_net(seed: int, classes: int, head: str = "dense", width: int = 8):
    """Conv stem, a residual block, a depthwise layer, 1×1 projection, pooled, then the head."""
    keras.utils.set_random_seed(seed)
    inp = keras.Input(SHAPE)
    x = L.Conv2D(6, 3, padding="same", activation="relu")(inp)
    x = L.Add()([x, L.Conv2D(6, 3, padding="same")(x)])
    x = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = L.Conv2D(width, 1, activation="relu")(x)
    if head == "dense":
        out = L.Dense(classes, activation="softmax")(L.GlobalAveragePooling2D()(x))
    else:   # a fully convolutional classifier: 1×1 convolution, then pooling
        out = L.Activation("softmax")(L.GlobalAveragePooling2D()(L.Conv2D(classes, 1)(x)))
    return keras.Model(inp, out)


def data(classes: int, seed: int) -> TaskData:
    rng = np.random.default_rng(seed)
    x = rng.random((160,) + SHAPE, dtype=np.float32)
    y = (x[:, :4, :4, seed % 3].mean(axis=(1, 2)) * classes * 1.999 % classes).astype(np.int64)   # learnable
    return TaskData("npz:synthetic", x, y, x[:40], y[:40], [str(c) for c in range(classes)])


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("residual")
    keras_models, parsed = {}, {}
    for name, seed, classes in (("a", 1, 3), ("b", 2, 4), ("source", 3, 5)):
        keras_models[name] = residual_net(seed, classes)
        keras_models[name].save(root / f"{name}.keras")
        parsed[name] = read_model(root / f"{name}.keras")
    return keras_models, parsed, {"a": data(3, 0), "b": data(4, 1)}


def test_frozen_trunk_keeps_task_a_exactly_and_stores_the_trunk_once(pair, tmp_path):
    keras_models, parsed, datas = pair
    models = {"a": parsed["a"], "b": parsed["b"]}
    result = frozen_trunk(models, datas, api.make_config(**SETTINGS), out_dir=tmp_path / "z")
    x = datas["a"].x_test
    np.testing.assert_allclose(result.network.predict("a", x), keras_models["a"].predict(x, verbose=0), atol=1e-6)
    # B's head was trained (on A's features) and nothing else moved
    untrained = ZippedNetwork.from_models(models)
    share_whole_trunk(untrained, parsed["a"])
    assert not np.allclose(result.network.predict("b", x), untrained.predict("b", x), atol=1e-4)
    assert result.plan.final_retrain["retrain"]["trained_blocks"] == 2   # B's head: kernel and bias
    # stored once: A's whole model and B's head, counted from Keras' layers
    head_b = keras_models["b"].layers[-1].count_params()
    trunk = keras_models["a"].count_params() - keras_models["a"].layers[-1].count_params()
    stored = np.load(tmp_path / "z" / "weights.npz")
    assert sum(v.size for v in stored.values()) == keras_models["a"].count_params() + head_b
    assert sum(v.size for k, v in stored.items() if k.endswith("/a+b")) == trunk
    total = keras_models["a"].count_params() + keras_models["b"].count_params()
    assert result.plan.params["shared_fraction"] == pytest.approx(trunk / total)


def test_multitask_starts_from_the_given_trunk_with_each_tasks_head(pair):
    keras_models, parsed, datas = pair
    models = {"a": parsed["a"], "b": parsed["b"]}
    start = multitask_finetune(models, datas, api.make_config(**dict(SETTINGS, retrain_iterations=0)),
                               trunk=parsed["source"])
    # Keras' own model: the source's trunk under B's head
    swapped = residual_net(9, 4)
    for mine, src in zip(swapped.layers[:-1], keras_models["source"].layers[:-1]):
        mine.set_weights(src.get_weights())
    swapped.layers[-1].set_weights(keras_models["b"].layers[-1].get_weights())
    x = datas["b"].x_test
    np.testing.assert_allclose(start.network.predict("b", x), swapped.predict(x, verbose=0), atol=1e-6)
    trained = multitask_finetune(models, datas, api.make_config(**SETTINGS), trunk=parsed["source"])
    assert trained.plan.final_retrain["retrain"]["trained_blocks"] == len(list(trained.network.blocks()))
    assert not np.allclose(trained.network.predict("a", x), start.network.predict("a", x), atol=1e-4)


def test_bad_heads_and_trunks_are_refused_in_one_line(pair, tmp_path):
    _, parsed, datas = pair
    residual_net(4, 3, head="conv").save(tmp_path / "conv.keras")
    residual_net(5, 4, width=10).save(tmp_path / "wide.keras")
    # a classifier that is not a last Dense layer is refused as the model is read
    with pytest.raises(MTZError, match="last layer must be Dense") as err:
        read_model(tmp_path / "conv.keras")
    # B's head reads a wider trunk than A's: no one trunk serves both heads
    models = {"a": parsed["a"], "b": read_model(tmp_path / "wide.keras")}
    errors = []
    for build in (lambda: frozen_trunk(models, datas, api.make_config(**SETTINGS)),
                  lambda: multitask_finetune(models, datas, api.make_config(**SETTINGS))):
        with pytest.raises(MTZError, match="one architecture") as err:
            build()
        errors.append(str(err.value))
    models = {"a": parsed["a"], "b": parsed["b"]}
    with pytest.raises(MTZError, match="unequal widths") as err:
        multitask_finetune(models, datas, api.make_config(**SETTINGS), trunk=read_model(tmp_path / "wide.keras"))
    errors.append(str(err.value))
    with pytest.raises(MTZError, match="residual stream") as err:
        frozen_trunk(models, datas, api.make_config(**SETTINGS), layers=1)
    errors.append(str(err.value))
    assert not any("\n" in e for e in errors)


def test_whole_trunk_equals_the_chain_route_built_layer_by_layer(small_models):
    models = {"a": read_model(small_models[0]), "b": read_model(small_models[1])}
    slow, direct = ZippedNetwork.from_models(models), ZippedNetwork.from_models(models)
    share_trunk(slow, trunk_nodes(slow, None), models["a"])
    share_whole_trunk(direct, models["a"])
    assert slow.structure() == direct.structure()
    slow_arrays, direct_arrays = slow.arrays(), direct.arrays()
    assert slow_arrays.keys() == direct_arrays.keys()
    for key, value in slow_arrays.items():
        np.testing.assert_array_equal(direct_arrays[key], value)

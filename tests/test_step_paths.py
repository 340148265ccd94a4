"""The zip step's paths the MLP tests do not reach: the later members of a residual stream (their
pairs were chosen by the stream's first layer; they only merge, with their own Hessians), sparse
and random merges there, and depthwise channels merged with the configured damping."""

import keras
import numpy as np
import pytest

from mtz_mobile.errors import MTZError
from mtz_mobile.graph.keras_io import parse_model as parse
from mtz_mobile.graph.network import ZippedNetwork
from mtz_mobile.reference import build_resnet
from mtz_mobile.zipper import ZipConfig, zip_networks
from mtz_mobile.zipper.config import RetrainSettings

from test_conv_residual import images, randomize, task_data, zip_pair

L = keras.layers


def resnet_pair(seed=5):
    return [randomize(build_resnet((12, 12, 3), 4, width=4), seed + k) for k in (0, 1)]


def later_stream_members(net: ZippedNetwork) -> set[str]:
    names = set()
    for stream in net.streams():
        members = sorted(stream)
        names.update(net.nodes[m].name for m in members[1:])
    return names


def test_stream_members_record_the_d_of_the_pairs_they_inherit():
    a, b = resnet_pair()
    data = task_data(images((12, 12, 3), n=48))
    zipped = zip_pair(parse(a), parse(b), data, shared=["all"], compensation="none")
    later = later_stream_members(zipped.network) & {r.name for r in zipped.plan.layers}
    assert later, "the ResNet has residual streams with several members"
    for record in zipped.plan.layers:
        assert isinstance(record.seconds, float) and record.seconds > 0
        assert (record.method, record.pairing, record.compensation) == ("mtz", "exact", "none")
        if record.name in later:
            ds = [p[2] for p in record.pairs]
            assert ds and all(isinstance(d, float) and d >= 0 for d in ds), record.name
            assert record.total_d == sum(ds)
        elif record.kind != "depthwise":   # a layer that chose pairs records the damping added to S
            assert isinstance(record.damping, float) and record.damping > 0, record.name


def test_thresholds_pair_with_the_configured_pairing():
    """ε above every d: both pairings share every unit they can; the exact assignment's total d is
    never above the greedy one's, and on these random networks strictly below."""
    a, b = resnet_pair(seed=21)
    data = task_data(images((12, 12, 3), n=48))
    totals = {}
    for pairing in ("exact", "greedy"):
        zipped = zip_pair(parse(a), parse(b), data, threshold=[1e12], pairing=pairing, compensation="none")
        first = zipped.plan.layers[0]
        assert first.n_shared == min(first.n_existing, first.n_new) and first.pairing == pairing
        totals[pairing] = first.total_d
    assert totals["exact"] < totals["greedy"]


def test_random_merges_of_stream_members_keep_one_partners_weights():
    a, b = resnet_pair()
    data = task_data(images((12, 12, 3), n=48))
    zipped = zip_pair(parse(a), parse(b), data, shared=["all"], method="random", compensation="none")
    again = zip_pair(parse(a), parse(b), data, shared=["all"], method="random", compensation="none")
    for (_, key, owners, arr), (_, key2, _, arr2) in zip(zipped.network.blocks(), again.network.blocks()):
        assert key == key2 and arr.dtype in (np.float32, np.float64), key
        assert np.all(np.isfinite(arr)), key
        np.testing.assert_array_equal(arr, arr2)   # seeded
    assert np.all(np.isfinite(zipped.network.predict("a", data.x_test)))


def test_sparse_stream_members_keep_a_partners_connection_pattern():
    a, b = resnet_pair()
    for model in (a, b):   # keep 20 % of every convolution's weights
        for layer in model.layers:
            if isinstance(layer, L.Conv2D):
                k, *rest = layer.get_weights()
                cut = np.quantile(np.abs(k), 0.8)
                layer.set_weights([np.where(np.abs(k) >= cut, k, 0.0), *rest])
    data = task_data(images((12, 12, 3), n=48))
    zipped = zip_pair(parse(a), parse(b), data, shared=["all"], compensation="none", sparse="auto")
    later = later_stream_members(zipped.network)
    checked = 0
    for i, key, owners, arr in zipped.network.blocks():
        node = zipped.network.nodes[i]
        if node.name in later and "/kernel/" in key and len(owners) > 1:
            # each merged unit keeps one partner's pattern (≈ 20 % dense); a dense merge would fill it
            assert np.count_nonzero(arr) <= 0.45 * arr.size, key
            checked += 1
    assert checked > 0


def depthwise_net(seed):
    inp = keras.Input((8, 8, 2))
    x = L.Conv2D(4, 1, activation="relu")(inp)
    x = L.DepthwiseConv2D(3, padding="same", activation="relu")(x)
    x = L.GlobalAveragePooling2D()(x)
    return randomize(keras.Model(inp, L.Dense(3, activation="softmax")(x)), seed)


def test_depthwise_channels_merge_with_the_configured_damping():
    """Each task sees its own images (with the same inputs H_A = H_B, and any damping gives the mean);
    the 1×1 convolutions before are identical, so they merge into themselves whatever the damping
    and only the depthwise merge can tell the two settings apart."""
    a, b = depthwise_net(1), depthwise_net(2)
    b.layers[1].set_weights(a.layers[1].get_weights())
    datas = {"a": task_data(images((8, 8, 2), n=40, seed=1), classes=3),
             "b": task_data(images((8, 8, 2), n=40, seed=2) ** 3, classes=3)}

    def depthwise_blocks(damping):
        cfg = ZipConfig(retrain=RetrainSettings(iterations=0), calibration_samples=40, shared=["all"],
                        compensation="none", damping=damping)
        zipped = zip_networks({"a": parse(a), "b": parse(b)}, datas, cfg, progress=False)
        return {key: arr for i, key, owners, arr in zipped.network.blocks()
                if zipped.network.nodes[i].op == "depthwise" and len(owners) > 1}

    low, high = depthwise_blocks(1e-4), depthwise_blocks(0.5)
    assert low and low.keys() == high.keys()
    assert any(not np.allclose(low[k], high[k], rtol=1e-3) for k in low)


def test_a_count_above_the_layer_names_the_layer():
    a, b = resnet_pair()
    data = task_data(images((12, 12, 3), n=48))
    first = ZippedNetwork.from_models({"a": parse(a)}).nodes[1].name
    with pytest.raises(MTZError, match=rf"^cannot share 500 units in {first}: it has 4 units in the joint network "
                                       r"and 4 in the new model, so at most 4$"):
        zip_pair(parse(a), parse(b), data, shared=[500], compensation="none")


def test_distillation_retrains_towards_the_originals_outputs():
    """Retraining with distill > 0 mixes the original models' soft outputs into the targets: the
    retrained blocks differ from label-only retraining under the same seed."""
    a, b = resnet_pair()
    data = task_data(images((12, 12, 3), n=48), classes=4)

    def blocks(distill):
        retrain = RetrainSettings(iterations=3, batch_size=16, learning_rate=1e-2, distill=distill)
        zipped = zip_pair(parse(a), parse(b), data, shared=["all"], compensation="none", retrain=retrain)
        return {key: arr for _, key, _, arr in zipped.network.blocks()}

    labels, soft = blocks(0.0), blocks(0.5)
    assert labels.keys() == soft.keys()
    assert any(not np.allclose(labels[k], soft[k]) for k in labels)


def test_labels_the_model_cannot_output_are_refused_before_retraining():
    a, b = resnet_pair()   # 4 outputs each
    data = task_data(images((12, 12, 3), n=48), classes=5)
    with pytest.raises(MTZError, match=r"^task a's labels go up to 4 but its model has 4 outputs: give labels 0–3 "):
        zip_pair(parse(a), parse(b), data, shared=["all"], retrain=RetrainSettings(iterations=2, batch_size=16))

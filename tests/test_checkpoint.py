"""The zip's checkpoint: written at most once per CHECKPOINT_SECONDS (and when Ctrl-C arrives between
layers), so a zip stopped inside a layer resumes from the last checkpoint, or from its first layer
when it had none yet — bit for bit the zip that was never stopped."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mtz_mobile.graph.keras_io import read_model
from mtz_mobile.zipper import ZipConfig, run, zip_networks
from mtz_mobile.zipper.config import RetrainSettings

CFG = ZipConfig(shared=["all"], retrain=RetrainSettings(iterations=5, batch_size=32), calibration_samples=500)


def models_of(paths):
    return {n: read_model(p) for n, p in zip("ab", paths)}


@pytest.fixture(scope="module")
def whole(small_models, fmnist, tmp_path_factory):
    return zip_networks(models_of(small_models), {"a": fmnist, "b": fmnist}, CFG,
                        tmp_path_factory.mktemp("whole") / "zip", progress=False)


def counted_saves(monkeypatch) -> list[int]:
    """The steps each real checkpoint write held."""
    saves, save = [], run.Checkpoint.save

    def counting(self, plan, net, config, done):
        saves.append(done)
        return save(self, plan, net, config, done)

    monkeypatch.setattr(run.Checkpoint, "save", counting)
    return saves


def stop_inside_layer(monkeypatch, layer: int) -> None:
    """Ctrl-C while step ``layer`` (0-based) is being zipped, after the steps before it finished."""
    calls, zip_layer = [], run.zip_layer

    def interrupted(step):
        calls.append(step)
        if len(calls) == layer + 1:
            raise KeyboardInterrupt
        return zip_layer(step)

    monkeypatch.setattr(run, "zip_layer", interrupted)


@pytest.mark.parametrize("interval, kept", [(0.0, 1), (1e9, 0)])
def test_a_zip_stopped_inside_a_layer_resumes_bit_for_bit(interval, kept, whole, small_models, fmnist, tmp_path,
                                                          monkeypatch):
    """interval 0: every finished layer was written (the second one is redone); 1e9: none was yet,
    and the resume starts again from the first layer instead of refusing."""
    monkeypatch.setattr(run, "CHECKPOINT_SECONDS", interval)
    saves = counted_saves(monkeypatch)
    out, data = tmp_path / "zip", {"a": fmnist, "b": fmnist}
    with monkeypatch.context() as m:
        stop_inside_layer(m, 1)
        with pytest.raises(KeyboardInterrupt):
            zip_networks(models_of(small_models), data, CFG, out, progress=False)
    state = tmp_path / "zip.partial" / "checkpoint.json"
    assert saves == [1] * kept and state.exists() == bool(kept)
    if kept:
        assert json.loads(state.read_text())["steps_done"] == 1
    resumed = zip_networks(models_of(small_models), data, CFG, out, resume=True, progress=False)
    assert out.exists() and not (tmp_path / "zip.partial").exists()
    a, b = whole.network.arrays(), resumed.network.arrays()
    assert a.keys() == b.keys()
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert [layer.pairs for layer in whole.plan.layers] == [layer.pairs for layer in resumed.plan.layers]


def test_checkpoints_are_written_once_per_interval_and_at_ctrl_c_between_layers(small_models, fmnist, tmp_path,
                                                                                monkeypatch):
    data = {"a": fmnist, "b": fmnist}
    monkeypatch.setattr(run, "CHECKPOINT_SECONDS", 1e9)
    saves = counted_saves(monkeypatch)
    zip_networks(models_of(small_models), data, CFG, tmp_path / "one", progress=False)
    assert saves == [2]   # once, after the last layer (before any final retraining)

    def stop_after_first(step, _net):
        if step == 0:
            raise KeyboardInterrupt

    saves.clear()
    with pytest.raises(KeyboardInterrupt):
        zip_networks(models_of(small_models), data, CFG, tmp_path / "two", progress=False,
                     on_layer_done=stop_after_first)
    assert saves == [1]   # the interval had not passed: written because Ctrl-C came between layers

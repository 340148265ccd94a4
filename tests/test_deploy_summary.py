"""deploy's summary: the test errors are measured once per zip and data, then read back from
summary.json; a changed zip or changed data files are measured again."""

from __future__ import annotations

import json

import numpy as np
import pytest

from mtz_mobile import deploy_summary
from mtz_mobile.graph.keras_io import read_model
from mtz_mobile.zipper import ZipConfig, evaluate, zip_networks
from mtz_mobile.zipper.config import RetrainSettings
from mtz_mobile.zipper.plan import load_zip_dir


@pytest.fixture
def deploy_out(small_models, fmnist, tmp_path):
    """A deploy directory with a real zip of the two small models (data spec fashion-mnist) and a model file."""
    out = tmp_path / "out"
    zip_networks({n: read_model(p) for n, p in zip("ab", small_models)}, {"a": fmnist, "b": fmnist},
                 ZipConfig(shared=["all"], retrain=RetrainSettings(iterations=0), calibration_samples=300),
                 out / "zip", progress=False)
    (out / "model.tflite").write_bytes(b"\0" * 1000)   # the summary reads only its size
    return out


def measured(monkeypatch) -> list[int]:
    """How many times the test sets were evaluated (the real evaluate_zip runs each time)."""
    calls, real = [], evaluate.evaluate_zip

    def counting(*args, **kwargs):
        calls.append(1)
        return real(*args, **kwargs)

    monkeypatch.setattr(evaluate, "evaluate_zip", counting)
    return calls


def test_errors_are_read_back_until_the_zip_changes(deploy_out, monkeypatch):
    calls = measured(monkeypatch)
    model = deploy_out / "model.tflite"
    first = deploy_summary.summarize(deploy_out, model, {}, None, "fashion-mnist")
    again = deploy_summary.summarize(deploy_out, model, {}, None, "fashion-mnist")
    assert len(calls) == 1 and again == first
    assert json.loads((deploy_out / "summary.json").read_text())["tasks"] == first["tasks"]

    zipdir = load_zip_dir(deploy_out / "zip")   # task a's output layer scrambled: its errors change
    arrays = zipdir.network.arrays()
    head = [k for k in arrays if "/kernel/" in k and k.endswith("/a")][-1]
    arrays[head] = np.random.default_rng(0).normal(size=arrays[head].shape).astype(arrays[head].dtype)
    np.savez(deploy_out / "zip" / "weights.npz", **arrays)
    changed = deploy_summary.summarize(deploy_out, model, {}, None, "fashion-mnist")
    assert len(calls) == 2
    truth = {e.task: e.zipped_error for e in evaluate.evaluate_zip(load_zip_dir(deploy_out / "zip"))}
    assert [t["after"] for t in changed["tasks"]] == [truth["a"], truth["b"]]
    assert changed["tasks"][0]["after"] != first["tasks"][0]["after"]


def test_a_folder_fingerprint_follows_its_files(tmp_path):
    root = tmp_path / "photos" / "train" / "cat"
    root.mkdir(parents=True)
    (root / "1.png").write_bytes(b"1234")
    spec = f"dir:{tmp_path / 'photos'}"
    before = deploy_summary.data_fingerprint(spec)
    assert before == deploy_summary.data_fingerprint(spec)
    (root / "1.png").write_bytes(b"12345")
    assert deploy_summary.data_fingerprint(spec) != before
    (root / "2.png").write_bytes(b"1")
    assert len(deploy_summary.data_fingerprint(spec)) == 3   # the spec and both files
    assert deploy_summary.data_fingerprint("fashion-mnist") == ["fashion-mnist"]

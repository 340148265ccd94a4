"""tools/experiments/reproduce.py end to end in its --quick mode (data slices, one epoch, a few iterations):
every experiment writes its JSON, CSV and Markdown (and Fig. 2's PNG) with plausible values."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
EXPERIMENTS = ("lenet300", "fig2", "table1", "table3", "resnet")


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "tmp"
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", CUDA_VISIBLE_DEVICES="")
    proc = subprocess.run([sys.executable, str(ROOT / "tools" / "experiments" / "reproduce.py"), "--exp", "all", "--quick",
                           "--out", str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return out, proc.stdout


def rows(out: Path, name: str) -> list[dict]:
    with open(out / f"{name}.csv", newline="") as f:
        return list(csv.DictReader(f))


def error(value: str) -> float:
    v = float(value)
    assert math.isfinite(v) and 0.0 <= v <= 1.0, value
    return v


def test_every_output_is_written(quick_run):
    out, stdout = quick_run
    for name in EXPERIMENTS:
        for ext in ("json", "csv", "md"):
            assert (out / f"{name}.{ext}").stat().st_size > 0, f"{name}.{ext}"
        result = json.loads((out / f"{name}.json").read_text())
        assert result["experiment"] == name and result["settings"]["quick"] is True
        assert "|---|" in (out / f"{name}.md").read_text()
        assert f"== {name} done" in stdout  # progress is printed
    assert (out / "fig2.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (out / "summary.md").read_text().count("\n## ") >= len(EXPERIMENTS) - 1
    assert set(EXPERIMENTS) <= set(json.loads((out / "timings.json").read_text()))
    assert not list(out.glob("**/*.tmp*"))  # atomic writes leave no temporaries
    assert list((out / "refs").glob("*.keras"))  # reference models are cached


def test_lenet300_and_fig2(quick_run):
    out, _ = quick_run
    for r in rows(out, "lenet300"):
        error(r["error_a"]), error(r["error_b"])
    fig = rows(out, "fig2")
    assert {(r["panel"], r["curve"]) for r in fig} == {(p, c) for p in ("layer1", "layer2")
                                                       for c in ("mtz", "mtz_comp", "random", "random_comp")}
    ref = json.loads((out / "fig2.json").read_text())["reference"]
    ref_mean = (ref[0]["test_error"] + ref[1]["test_error"]) / 2
    for r in fig:
        assert error(r["error_min"]) <= error(r["error_mean"]) <= error(r["error_max"])
        if r["panel"] == "layer1" and r["curve"] in ("mtz", "random") and r["shared"] == "0":
            assert float(r["error_mean"]) == pytest.approx(ref_mean, abs=2e-3)  # nothing shared: the originals


def test_table1(quick_run):
    out, _ = quick_run
    t1 = rows(out, "table1")
    assert {(r["network"], r["variant"]) for r in t1} == {(n, v) for n in ("LeNet-300-100", "LeNet-5")
                                                          for v in ("dense", "sparse", "sparse, union mask",
                                                                    "sparse, 5× retraining at lr 1e-3")}
    for r in t1:
        for col in ("err_a", "err_b", "zip_err_a", "zip_err_b", "re_err_a", "re_err_b"):
            error(r[col])
        assert int(r["retrain_iterations"]) == int(r["retrain_iterations_per_layer"]) * len(json.loads(r["layers"]))
        assert int(r["train_iterations_one_reference"]) > 0
        assert 0.3 < float(r["shared_fraction"]) < 0.5  # every hidden layer shared, output layers not
        if r["variant"] != "dense":
            assert r["sparse_detected"] == "True"
            assert int(r["nonzero_zipped"]) < 0.5 * int(r["params_zipped"])
            assert int(r["nonzero_zipped"]) <= int(r["nonzero_references"])
        else:
            assert r["sparse_detected"] == "False"


def test_table3_and_resnet(quick_run):
    out, _ = quick_run
    t3 = rows(out, "table3")
    assert len(t3) == 6
    for r in t3:
        error(r["error_fine"]), error(r["error_coarse"])
        assert 0.0 <= float(r["shared_fraction"]) < 0.5
        counts, widths = json.loads(r["shared_per_layer"]), json.loads(r["layer_widths"])
        assert len(counts) == len(widths) == 3 and all(0 <= c <= w for c, w in zip(counts, widths))
    full, adaptive = t3[1], t3[3]
    assert json.loads(full["shared_per_layer"]) == json.loads(full["layer_widths"])
    assert int(adaptive["search_trials"]) >= 3 and adaptive["search"]
    assert json.loads(t3[4]["shared_per_layer"]) == json.loads(adaptive["shared_per_layer"])
    assert t3[2]["config"].startswith("full zip, random")

    rn = rows(out, "resnet")
    assert len(rn) == 4
    for r in rn:
        error(r["error_fine"]), error(r["error_coarse"])
    assert rn[0]["shared_fraction"] == rn[1]["shared_fraction"]
    assert float(rn[0]["shared_fraction"]) > float(rn[2]["shared_fraction"]) > 0
    assert int(rn[0]["retrain_iterations"]) == int(rn[1]["retrain_iterations"]) > 0
    assert int(rn[3]["retrain_iterations"]) == 0


def test_adaptive_zip_certifies_its_budget_on_held_out_training_images(quick_run):
    """Table 3's adaptive row: the search validated on the training split's hold-out (the references'
    errors there, measured here with Keras on the recomputed hold-out, are the plan's), every trial's
    bound follows from its counts, each layer's chosen count is within budget for every task and
    every larger count it tried was not."""
    from mtz_mobile.data import error_rate, load_task_data
    from mtz_mobile.graph.keras_io import load_keras_model
    from mtz_mobile.zipper.increase_bound import upper_bound

    out, _ = quick_run
    result = json.loads((out / "table3.json").read_text())
    s = result["settings"]
    (adaptive,) = [r for r in result["rows"] if r["config"].startswith("adaptive, budget")]
    for task, spec in (("fine", "fashion-mnist"), ("coarse", "fashion-mnist-coarse")):
        data = load_task_data(spec).head(s["n_train"], s["n_test"]).holdout(s["validation_split"])
        model = load_keras_model(result["reference"][task]["path"])
        scores = model.predict(data.x_val.reshape((len(data.x_val),) + tuple(model.input_shape[1:])), verbose=0)
        final = adaptive["validation"][task]
        assert final["images"] == len(data.y_val) == round(s["validation_split"] * s["n_train"])
        # Keras and the zipper may split a near-tie differently: one image of slack
        assert final["original_error"] == pytest.approx(error_rate(scores, data.y_val), abs=1.0 / len(data.y_val) + 1e-9)
    budget = s["budget_pp"]
    assert adaptive["search"] and all(layer["budget_pp"] == budget for layer in adaptive["search"])
    for layer in adaptive["search"]:
        verdict = {}
        for trial in layer["trials"]:
            for inc in trial["increase"].values():
                assert inc["upper"] == pytest.approx(upper_bound(inc["worse"], inc["better"], inc["images"],
                                                                 layer["confidence"]))
                assert inc["upper"] >= inc["point"] == pytest.approx((inc["worse"] - inc["better"]) / inc["images"])
            verdict[trial["count"]] = all(inc["upper_pp"] <= budget + 1e-9 for inc in trial["increase"].values())
            assert trial["within_budget"] == verdict[trial["count"]]
        chosen = layer["chosen"]
        assert all(not ok for count, ok in verdict.items() if count > chosen)
        assert verdict[chosen] or chosen == 0
    assert adaptive["shared_per_layer"] == [layer["chosen"] for layer in adaptive["search"]]
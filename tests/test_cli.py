"""The command line on real files: bad input fails on one line, non-zero, leaving nothing behind."""

import json
import subprocess
import sys

import keras
import numpy as np
import pytest

from mtz_mobile.cli import main


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory, fmnist, train_mlp):
    root = tmp_path_factory.mktemp("bad")
    train_mlp(fmnist, root / "shallow.keras", seed=4, hidden=(32,), epochs=1)
    nan = train_mlp(fmnist, root / "nan.keras", seed=5, epochs=1)
    weights = nan.get_weights()
    weights[2][0, 0] = np.nan
    nan.set_weights(weights)
    nan.save(root / "nan.keras")
    odd = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(48),
                            keras.layers.LayerNormalization(name="norm_a"), keras.layers.Dense(24),
                            keras.layers.Dense(10, activation="softmax")])
    odd.save(root / "odd.keras")
    empty = root / "empty.npz"
    np.savez(empty, x_train=np.zeros((0, 28, 28), np.float32), y_train=np.zeros(0, np.int64),
             x_test=np.zeros((0, 28, 28), np.float32), y_test=np.zeros(0, np.int64))
    return root


def run_cli(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    return code, [line for line in err if line.startswith("mtz-mobile")]


@pytest.mark.parametrize("case,extra,pattern", [
    ("depth", ["{bad}/shallow.keras"], "same depth"),
    ("layer", ["{bad}/odd.keras"], "unsupported layer 'norm_a' \\(LayerNormalization\\)"),
    ("nan", ["{bad}/nan.keras"], "NaN"),
    ("count", ["{b}", "--shared", "100"], "at most 48"),
    ("alpha", ["{b}", "--alpha", "1.5"], "alpha"),
    ("nodata", ["{b}", "--data", "npz:{bad}/empty.npz"], "no samples"),
    ("missing", ["{bad}/nope.keras"], "does not exist"),
])
def test_bad_input_one_line_error_and_no_output(case, extra, pattern, small_models, bad_models, tmp_path, capsys):
    a, b = small_models
    out = tmp_path / "out"
    args = ["zip", str(a)] + [e.format(bad=bad_models, b=b) for e in extra] + ["--out", str(out), "--quiet"]
    code, lines = run_cli(args, capsys)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("mtz-mobile: error: ")
    import re

    assert re.search(pattern, lines[0]), lines[0]
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_exit_code_and_stderr_of_a_real_process(small_models, bad_models, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "mtz_mobile.cli", "zip", str(small_models[0]),
                           str(bad_models / "shallow.keras"), "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2
    ours = [line for line in proc.stderr.splitlines() if line.startswith("mtz-mobile")]
    assert ours == [line for line in ours if "same depth" in line] and len(ours) == 1
    assert proc.stdout == "" and not out.exists()


def test_zip_then_evaluate(small_models, tmp_path, capsys):
    out = tmp_path / "zipped"
    code = main(["zip", *map(str, small_models), "--out", str(out), "--retrain-iterations", "3",
                 "--calibration-samples", "500", "--quiet"])
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"plan.json", "weights.npz", "sources"}
    plan = json.loads((out / "plan.json").read_text())
    assert [l["n_shared"] for l in plan["layers"]] == [48, 24]
    assert [l["retrain"]["iterations"] for l in plan["layers"]] == [3, 3]
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["task"] for r in results] == ["a", "b"]
    assert all(0.0 < r["zipped_error"] < 0.5 and r["samples"] == 10000 for r in results)
    # a second zip into the same place is refused rather than overwriting
    assert main(["zip", *map(str, small_models), "--out", str(out), "--quiet"]) == 2

"""Presets (`--preset`) resolve to the documented recipes with explicit options winning, the
retraining steps follow the references' training length, and `zip --budget` keeps the most shared
point of its own sweep certified within the budget, bit for bit, or refuses in one line."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest

from mtz_mobile import api
from mtz_mobile.cli import build_parser, main
from mtz_mobile.errors import MTZError
from mtz_mobile.graph.keras_io import load_keras_model
from mtz_mobile.zipper.budget import frontier_dir, search_staleness
from mtz_mobile.zipper.config import BudgetSearch, RetrainSettings, ZipConfig
from mtz_mobile.zipper.plan import load_zip_dir
from mtz_mobile.zipper.sweep import load_sweep, weights_digest

# the recipes as README and docs/RESULTS.md state them (not read from presets.PRESETS)
MTZ = dict(schedule="end", learning_rate=1e-3, learning_rate_schedule="cosine", distill=0.5)
PAPER = dict(schedule="layer", iterations=100, learning_rate=1e-4, learning_rate_schedule="constant", distill=0.0)


def _retrain(config: ZipConfig, keys) -> dict:
    return {k: getattr(config.retrain, k) for k in keys}


def test_presets_resolve_as_documented_and_explicit_options_win(tmp_path):
    parse = build_parser().parse_args
    default = api.config_from_options(vars(parse(["zip", "a.keras", "--out", str(tmp_path / "z")])))
    assert _retrain(default, MTZ) == MTZ and default.compensation == "next-layer" and default.preset == "mtz"
    assert default == ZipConfig() == api.make_config()
    paper = api.config_from_options(vars(parse(["zip", "a.keras", "--out", "z", "--preset", "paper"])))
    assert _retrain(paper, PAPER) == PAPER and paper.compensation == "none"
    assert paper == api.make_config(preset="paper")
    mixed = api.make_config(preset="paper", retrain_learning_rate=1e-2, compensation="next-layer")
    assert mixed.retrain.learning_rate == 1e-2 and mixed.compensation == "next-layer"
    assert mixed.retrain.schedule == "layer" and mixed.retrain.iterations == 100
    # settings built on their own keep what was set and take the rest from the config's preset
    own = RetrainSettings(iterations=7)
    assert ZipConfig(preset="paper", retrain=own).retrain.learning_rate == 1e-4 and own.learning_rate == 1e-3
    # a saved config reads back as itself, whatever its preset
    assert ZipConfig.from_json(json.loads(json.dumps(paper.to_json()))) == paper
    with pytest.raises(MTZError, match="unknown preset"):
        ZipConfig(preset="fast")


def test_retraining_steps_are_a_tenth_of_the_references_training(tmp_path):
    a, b = tmp_path / "a.keras", tmp_path / "b.keras"
    assert api.models_config({}, [a, b]).retrain.iterations == 500        # nothing says: the stated fixed default
    (tmp_path / "reference.json").write_text(json.dumps([{"path": str(a), "iterations": 6750},
                                                         {"path": str(b), "iterations": 3750}]))
    assert api.models_config({}, [a, b]).retrain.iterations == 675        # the longest-trained reference
    assert api.models_config({"retrain_fraction": 0.2}, [a, b]).retrain.iterations == 1350
    assert api.models_config({"retrain_iterations": 9}, [a, b]).retrain.iterations == 9
    assert api.models_config({"retrain_reference_iterations": 1000}, [a, b]).retrain.iterations == 100
    assert api.models_config({"preset": "paper"}, [a, b]).retrain.iterations == 100
    (tmp_path / "reference.json").unlink()
    (tmp_path / "b.json").write_text(json.dumps({"path": str(b), "iterations": 1234}))   # tools' one record per model
    assert api.models_config({}, [a, b]).retrain.iterations == 123


OPTIONS = dict(calibration_samples=200, retrain_iterations=0, validation_split=0.2)


def test_budget_keeps_the_most_shared_certified_point_bit_for_bit(small_models, fmnist, tmp_path):
    out = tmp_path / "z"
    data = {"a": fmnist, "b": fmnist}
    result = api.zip_models(small_models, out, data=data, budget=6.0, levels=[0.0, 0.5, 1.0], alphas=[0.5, 0.9],
                            progress=False, **OPTIONS)
    state = load_sweep(frontier_dir(out))
    points = state["points"]
    assert (frontier_dir(out) / "frontier.md").is_file() and (frontier_dir(out) / "frontier.png").is_file()
    certified = [p for p in points if all(v["upper_pp"] <= 6.0 for v in p["validation"].values())]
    assert certified, "the tiny pair certifies something at 6 pp"
    top = max(p["level"] for p in certified)
    # the search went from the most shared level down and stopped at the first certified one
    assert sorted({p["level"] for p in points}, reverse=True)[-1] == top
    chosen = max(certified, key=lambda p: (p["shared_fraction"], -max(v["point_pp"] for v in p["validation"].values())))
    zipdir = load_zip_dir(out)
    assert weights_digest(zipdir.network) == weights_digest(result.network) == chosen["weights_sha256"]
    assert zipdir.plan.config().alpha == chosen["alpha"] and zipdir.plan.config().shared == [chosen["level"]]
    # deploy --budget reuses it while models, settings and data are the same, and not otherwise
    paths = dict(zip("ab", small_models))
    config, search = api.models_config(OPTIONS, small_models), BudgetSearch(6.0, [0.0, 0.5, 1.0], [0.5, 0.9])
    assert search_staleness(out, paths, data, config, search) is None
    assert search_staleness(out, paths, data, config, replace(search, budget=5.0)) is not None
    assert search_staleness(out, paths, {"a": fmnist.head(3000, 100), "b": fmnist}, config, search) is not None
    # the kept zip's own certificate, measured again here on the hold-out, is within the budget
    held = fmnist.holdout(0.2)
    for t, path in zip("ab", small_models):
        v = zipdir.plan.validation[t]
        assert v["upper_pp"] <= 6.0 and v == chosen["validation"][t]
        original = np.argmax(load_keras_model(path).predict(held.x_val, verbose=0), 1) == held.y_val
        zipped = np.argmax(zipdir.network.predict(t, held.x_val), 1) == held.y_val
        assert (v["worse"], v["better"]) == (int(np.sum(original & ~zipped)), int(np.sum(~original & zipped)))


def test_budget_that_nothing_meets_is_refused_in_one_line_and_writes_no_zip(small_models, fmnist, tmp_path, capsys):
    out, npz = tmp_path / "z", tmp_path / "d.npz"
    np.savez(npz, x_train=fmnist.x_train, y_train=fmnist.y_train, x_test=fmnist.x_test, y_test=fmnist.y_test)
    code = main(["zip"] + [str(p) for p in small_models] + ["--out", str(out), "--data", f"npz:{npz}",
                                                            "--budget", "1", "--levels", "1.0", "--alphas", "0.5",
                                                            "--calibration-samples", "300", "--retrain-iterations",
                                                            "0", "--validation-split", "0.2", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1 and "1 pp budget" in err
    assert not out.exists() and (frontier_dir(out) / "frontier.md").is_file()

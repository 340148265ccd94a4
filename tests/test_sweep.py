"""The sharing-vs-error frontier (`mtz-mobile sweep`) and `zip --from-sweep`: each point's figures
against the network zipped again and measured here, and the point reproduced bit for bit."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from mtz_mobile import api
from mtz_mobile.cli import main
from mtz_mobile.errors import MTZError
from mtz_mobile.graph.keras_io import load_keras_model
from mtz_mobile.zipper.plan import load_zip_dir
from mtz_mobile.zipper.sweep import weights_digest

OPTIONS = dict(calibration_samples=300, retrain_iterations=2, validation_split=0.2)


@pytest.fixture(scope="module")
def swept(tmp_path_factory, small_models, fmnist):
    out = tmp_path_factory.mktemp("sweep") / "s"
    state = api.sweep_models(small_models, out, data={"a": fmnist, "b": fmnist}, levels=[0.0, 0.5, 1.0],
                             budget=4.0, progress=False, **OPTIONS)
    return out, state


def test_sweep_writes_the_frontier_with_growing_sharing(swept):
    out, state = swept
    assert json.loads((out / "sweep.json").read_text()) == json.loads(json.dumps(state))
    rows = list(csv.DictReader((out / "frontier.csv").open()))
    assert [int(r["point"]) for r in rows] == [0, 1, 2]
    shared = [p["shared_fraction"] for p in state["points"]]
    assert shared[0] == 0 and shared[0] < shared[1] < shared[2] < 0.5
    assert [p["shared_per_layer"] for p in state["points"]] == [[0, 0], [24, 12], [48, 24]]
    assert (out / "frontier.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "frontier.md").read_text()
    assert "--from-sweep" in md and md.count("\n| ") == 4
    for p in state["points"]:
        assert p["within_budget"] == all(v["upper_pp"] <= 4.0 for v in p["validation"].values())
        assert p["bytes_saved"] == 4 * (p["params_separate"] - p["params_zipped"])


def test_a_point_zipped_again_is_bit_for_bit_the_sweeps_and_its_figures_hold(swept, small_models, fmnist, tmp_path):
    out, state = swept
    # the fixture's data is a slice of fashion-mnist, which the spec alone would not load: give it
    api.zip_models([], tmp_path / "z", data={"a": fmnist, "b": fmnist}, from_sweep=out, point=2, progress=False)
    zipdir = load_zip_dir(tmp_path / "z")
    point = state["points"][2]
    assert weights_digest(zipdir.network) == point["weights_sha256"]
    held = fmnist.holdout(0.2)
    for t, path in zip("ab", small_models):
        original = np.argmax(load_keras_model(path).predict(held.x_val, verbose=0), 1) == held.y_val
        zipped = np.argmax(zipdir.network.predict(t, held.x_val), 1) == held.y_val
        v = point["validation"][t]
        assert (v["worse"], v["better"], v["images"]) == (int(np.sum(original & ~zipped)),
                                                          int(np.sum(~original & zipped)), len(held.y_val))
        test_error = np.mean(np.argmax(zipdir.network.predict(t, fmnist.x_test), 1) != fmnist.y_test)
        assert point["test"][t]["zipped_error"] == pytest.approx(test_error)


def test_cli_refuses_a_zip_option_beside_a_sweep_point(swept, tmp_path, capsys):
    out, _ = swept
    with pytest.raises(SystemExit):
        main(["zip", "--from-sweep", str(out), "--point", "largest", "--out", str(tmp_path / "z")])
    assert "a point is a number from frontier.md's first column or best, got 'largest'" in capsys.readouterr().err
    assert main(["zip", "--from-sweep", str(out), "--point", "0", "--out", str(tmp_path / "z"), "--quiet",
                 "--calibration-samples", "5"]) == 2
    assert "drop the zip options" in capsys.readouterr().err


def test_sweep_point_needs_no_models_and_no_settings(swept, small_models, tmp_path):
    out, _ = swept
    with pytest.raises(MTZError, match="drop the model files"):
        api.zip_models(small_models, tmp_path / "z", from_sweep=out, point=0)
    with pytest.raises(MTZError, match="drop the zip options"):
        api.zip_models([], tmp_path / "z", from_sweep=out, point=0, seed=3)
    with pytest.raises(MTZError, match="points 0–2, not 7"):
        api.zip_models([], tmp_path / "z", from_sweep=out, point=7)


def test_best_point_shares_the_most_among_the_certified_ones(swept, small_models, fmnist, tmp_path):
    from mtz_mobile.zipper.sweep import best_point

    points = [{"shared_fraction": f, "within_budget": w, "validation": {"a": {"point_pp": 0.1}}}
              for f, w in [(0.0, True), (0.3, True), (0.4, False), (0.35, True), (0.5, False)]]
    assert best_point({"budget_pp": 0.5, "points": points}) == 3
    with pytest.raises(MTZError, match="without --budget"):
        best_point({"budget_pp": None, "points": points})
    with pytest.raises(MTZError, match="no point of this sweep is certified within its 0.5 pp"):
        best_point({"budget_pp": 0.5, "points": [dict(p, within_budget=False) for p in points]})
    out, state = swept
    certified = [p["shared_fraction"] for p in state["points"] if p["within_budget"]]
    assert certified, "the fixture's budget certifies no point: the test would not run the search"
    z = tmp_path / "z"
    api.zip_models([], z, data={"a": fmnist, "b": fmnist}, from_sweep=out, point="best", progress=False)
    expected = next(p for p in state["points"] if p["within_budget"] and p["shared_fraction"] == max(certified))
    assert weights_digest(load_zip_dir(z).network) == expected["weights_sha256"]


def test_a_sweep_over_task_weights_zips_each_alpha_and_reproduces_its_points(small_models, fmnist, tmp_path):
    from mtz_mobile.zipper.sweep import best_point

    out = tmp_path / "s"
    state = api.sweep_models(small_models, out, data={"a": fmnist, "b": fmnist}, levels=[1.0], alphas=[0.3, 0.7],
                             budget=50.0, progress=False, **OPTIONS)
    assert [(p["level"], p["alpha"], p["config"]["alpha"]) for p in state["points"]] == [(1.0, 0.3, 0.3),
                                                                                        (1.0, 0.7, 0.7)]
    assert state["points"][0]["weights_sha256"] != state["points"][1]["weights_sha256"]
    md = (out / "frontier.md").read_text()
    assert "| point | α | shared params |" in md and "| 1 | 0.7 |" in md and "α = 0.3, 0.7" in md
    api.zip_models([], tmp_path / "z", data={"a": fmnist, "b": fmnist}, from_sweep=out, point=1, progress=False)
    zipdir = load_zip_dir(tmp_path / "z")
    assert zipdir.plan.settings["alpha"] == 0.7
    assert weights_digest(zipdir.network) == state["points"][1]["weights_sha256"]
    # one level at two weights shares the same: the smaller worst validation increase wins
    first_worst = max(v["point_pp"] for v in state["points"][0]["validation"].values())
    worse = {t: dict(v, point_pp=first_worst + 1.0) for t, v in state["points"][1]["validation"].items()}
    tied = dict(state, points=[state["points"][0], dict(state["points"][1], validation=worse)])
    assert best_point(tied) == 0


def test_bad_task_weights_are_refused_before_any_output(small_models, fmnist, tmp_path):
    for alphas in ([0.5, 1.0], [0.4, 0.4], []):
        with pytest.raises(MTZError, match="strictly between 0 and 1"):
            api.sweep_models(small_models, tmp_path / "s", data={"a": fmnist, "b": fmnist}, levels=[1.0],
                             alphas=alphas, progress=False, **OPTIONS)
    assert not (tmp_path / "s").exists()


@pytest.mark.parametrize("kwargs, match", [
    (dict(levels=[0.5, 0.2]), "increasing"), (dict(levels=[1.5]), r"in \[0, 1\]"),
    (dict(shared=[0.5]), "drop --shared"), (dict(max_error_increase=1.0), "drop --shared"),
])
def test_bad_sweep_arguments_are_refused_before_any_output(small_models, fmnist, tmp_path, kwargs, match):
    with pytest.raises(MTZError, match=match):
        api.sweep_models(small_models, tmp_path / "s", data={"a": fmnist, "b": fmnist}, progress=False, **kwargs)
    assert not list(tmp_path.iterdir())

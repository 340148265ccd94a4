"""A newcomer's first run through the command line, on real files: a folder of 28x28 grey PNGs fed
to 32x32x3 models (refused before any work with the spelling that adapts it, then zipped with it),
the originals checked before any work (pixels scaled the wrong way, data given in the wrong order),
the spec grammar's natural misspelling, the parser's speed and its suggestions, and the answer
`deploy` ends with."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time

import numpy as np
import pytest

from mtz_mobile.cli import main
from mtz_mobile.data import TaskData, fit_images

CLASSES = (0, 1, 8)          # T-shirt/top, Trouser, Bag: told apart by a tiny network in seconds
PER_CLASS = 40


def _errors(capsys) -> list[str]:
    return [line for line in capsys.readouterr().err.splitlines() if line.startswith("mtz-mobile")]


@pytest.fixture(scope="module")
def grey_folder(tmp_path_factory, fmnist):
    """PATH/train/CLASS/*.png and PATH/test/CLASS/*.png: 28x28 single-channel PNGs from Fashion-MNIST."""
    from PIL import Image

    root = tmp_path_factory.mktemp("folder") / "items"
    for split, x, y in (("train", fmnist.x_train, fmnist.y_train), ("test", fmnist.x_test, fmnist.y_test)):
        for c in CLASSES:
            (root / split / f"class_{c}").mkdir(parents=True)
            for k, i in enumerate(np.flatnonzero(y == c)[:PER_CLASS]):
                Image.fromarray(np.rint(x[i] * 255).astype(np.uint8), mode="L").save(
                    root / split / f"class_{c}" / f"{k:03d}.png")
    return root


@pytest.fixture(scope="module")
def rgb_models(tmp_path_factory, fmnist):
    """Two tiny CNNs on 32x32x3 input with their own Rescaling(1/255), as Keras' applications are built
    with include_preprocessing=True: they expect pixels 0-255. Trained on the folder's classes
    zero-padded and made RGB."""
    import keras

    root = tmp_path_factory.mktemp("rgb")
    keep = np.isin(fmnist.y_train, CLASSES)
    x = fit_images(fmnist.x_train[keep][:900] * 255.0, (32, 32, 3))
    y = np.searchsorted(CLASSES, fmnist.y_train[keep][:900])
    paths = []
    for name, seed in (("a", 1), ("b", 2)):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.Rescaling(1 / 255.0), keras.layers.Conv2D(6, 3, strides=2, activation="relu"),
                                  keras.layers.Flatten(), keras.layers.Dense(12, activation="relu"),
                                  keras.layers.Dense(len(CLASSES), activation="softmax")])
        model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy")
        model.fit(x, y, batch_size=64, epochs=2, verbose=0)
        model.save(root / f"{name}.keras")
        paths.append(str(root / f"{name}.keras"))
    return paths


def test_grey_folder_for_rgb_models_is_refused_first_then_adapted_by_the_named_rule(grey_folder, rgb_models,
                                                                                    tmp_path, capsys):
    out = tmp_path / "zip"
    started = time.perf_counter()
    code = main(["zip", *rgb_models, "--data", f"dir:raw:{grey_folder}", "--out", str(out), "--quiet"])
    lines = _errors(capsys)
    assert code == 2 and len(lines) == 1, lines
    assert "28x28x1" in lines[0] and "32x32x3" in lines[0] and f"dir@32x32x3:raw:{grey_folder}" in lines[0]
    assert not out.exists() and not (tmp_path / "zip.partial").exists()
    assert time.perf_counter() - started < 20    # read from one image, before loading or zipping

    fix = re.search(r"--data (dir@32x32x3:raw:\S+)", lines[0])[1]
    code = main(["zip", *rgb_models, "--data", fix, "--out", str(out), "--retrain-iterations", "0",
                 "--calibration-samples", "64"])
    err = capsys.readouterr().err
    assert code == 0, err
    plan = json.loads((out / "plan.json").read_text())
    assert [t["data"] for t in plan["tasks"]] == [fix, fix] and plan["tasks"][0]["input_shape"] == [32, 32, 3]
    # the data said once, with its pixel range; overall progress layer by layer with the time left
    assert re.search(r"task a: dir@32x32x3:\S+, \d+ training images 32x32x3, pixels 0 to 255 \(:raw, 8-bit pixels as they are\)", err), err
    assert re.search(r"zip \[1/2\] task b: layer 1 of 2 \(\w+\) zipped \(\d+ s, about \d+ s left\)", err), err
    assert re.search(r"zip \[2/2\] task b: layer 2 of 2", err), err


def test_pixels_scaled_the_other_way_are_refused_before_any_work_with_the_fix(grey_folder, rgb_models, tmp_path,
                                                                             capsys):
    """The issue's newcomer: models that rescale 0-255 themselves, fed the folder's default [0, 1]."""
    out = tmp_path / "zip"
    code = main(["zip", *rgb_models, "--data", f"dir@32x32x3:{grey_folder}", "--out", str(out), "--quiet"])
    lines = _errors(capsys)
    assert code == 2 and len(lines) == 1, lines
    line = lines[0]
    assert "task a: the original model a.keras has" in line and "near chance" in line
    measured = float(re.search(r"has ([\d.]+) % error", line)[1])
    assert measured > 50, line          # chance for 3 balanced classes is 66.7 %
    fixed = float(re.search(r"with pixels 0-255 instead of \[0, 1\] its error is ([\d.]+) %", line)[1])
    assert fixed < 15 and f"give --data dir@32x32x3:raw:{grey_folder}" in line, line
    assert not out.exists() and not (tmp_path / "zip.partial").exists()


def test_a_model_its_own_record_puts_at_chance_is_refused_as_near_chance(grey_folder, rgb_models, tmp_path, capsys):
    """reference.json stating a chance-level error does not make the model usable, and the refusal
    says near chance, as the record does, instead of 'far above' a figure it equals."""
    import shutil

    import keras

    for name, path in zip("ab", rgb_models):
        shutil.copy(path, tmp_path / f"{name}.keras")
    model = keras.models.load_model(tmp_path / "a.keras")
    kernel, bias = model.layers[-1].get_weights()
    model.layers[-1].set_weights([np.zeros_like(kernel), np.eye(len(bias))[0] * 5])   # always the first class
    model.save(tmp_path / "a.keras")
    chance = 1 - 1 / len(CLASSES)
    (tmp_path / "reference.json").write_text(json.dumps(
        [{"path": str(tmp_path / f"{n}.keras"), "validation_error": chance} for n in "ab"]))
    code = main(["zip", str(tmp_path / "a.keras"), str(tmp_path / "b.keras"), "--data",
                 f"dir@32x32x3:raw:{grey_folder}", "--out", str(tmp_path / "zip"), "--quiet"])
    lines = _errors(capsys)
    assert code == 2 and len(lines) == 1, lines
    assert re.search(rf"a.keras has {100 * chance:.1f} % error .* near chance \({100 * chance:.1f} % for always "
                     rf"answering the largest class\), as the {100 * chance:.1f} % reference.json states for it too",
                     lines[0]), lines[0]
    assert "far above" not in lines[0] and not (tmp_path / "zip").exists()


def test_data_in_the_wrong_order_is_refused_naming_the_order(fmnist, train_mlp, tmp_path, capsys):
    from mtz_mobile.data import COARSE_OF_FINE

    fine = fmnist.head(1500, 500)
    np.savez(tmp_path / "fine.npz", x_train=np.rint(fine.x_train * 255).astype(np.uint8), y_train=fine.y_train,
             x_test=np.rint(fine.x_test * 255).astype(np.uint8), y_test=fine.y_test)
    np.savez(tmp_path / "coarse.npz", x_train=np.rint(fine.x_train * 255).astype(np.uint8),
             y_train=COARSE_OF_FINE[fine.y_train], x_test=np.rint(fine.x_test * 255).astype(np.uint8),
             y_test=COARSE_OF_FINE[fine.y_test])
    from mtz_mobile.data import load_task_data

    coarse = load_task_data(f"npz:{tmp_path / 'coarse.npz'}")
    train_mlp(fine, tmp_path / "fine.keras", seed=1, epochs=2)
    train_mlp(coarse, tmp_path / "coarse.keras", seed=2, epochs=2)
    out = tmp_path / "zip"
    code = main(["zip", str(tmp_path / "fine.keras"), str(tmp_path / "coarse.keras"),
                 "--data", f"npz:{tmp_path / 'coarse.npz'}", "--data", f"npz:{tmp_path / 'fine.npz'}",
                 "--out", str(out), "--quiet"])
    lines = _errors(capsys)
    assert code == 2 and len(lines) == 1, lines
    assert "task fine: the original model fine.keras" in lines[0]
    assert re.search(r"on task coarse's data \(npz:\S+fine.npz\) its error is [\d.]+ %: the --data specs are likely "
                     r"in another order", lines[0]), lines[0]
    assert not out.exists()
    # a user who knows the model is this poor says so, and the check steps aside for it
    code = main(["zip", str(tmp_path / "fine.keras"), str(tmp_path / "coarse.keras"),
                 "--data", f"npz:{tmp_path / 'coarse.npz'}", "--data", f"npz:{tmp_path / 'fine.npz'}",
                 "--expected-error", "95,95", "--out", str(out), "--quiet", "--retrain-iterations", "0",
                 "--calibration-samples", "64"])
    assert code == 0


@pytest.mark.parametrize("spec, right", [
    ("dir:photos@32x32x3:resize", "write dir@32x32x3:resize:photos"),
    ("dir:photos:raw", "write dir:raw:photos"),
    ("npz:x.npz@64x64x3", "write npz@64x64x3:x.npz"),
])
def test_modifiers_after_the_path_fail_in_one_line_with_the_right_spelling(spec, right, small_models, tmp_path,
                                                                          capsys):
    started = time.perf_counter()
    with pytest.raises(SystemExit) as info:   # while parsing: nothing loaded, nothing imported
        main(["zip", *map(str, small_models), "--data", spec, "--out", str(tmp_path / "z"), "--quiet"])
    lines = _errors(capsys)
    assert info.value.code == 2 and len(lines) == 1 and right in lines[0], lines
    assert time.perf_counter() - started < 1 and not (tmp_path / "z").exists()


def test_help_and_argument_errors_import_nothing_heavy():
    probe = ("import sys\nfrom mtz_mobile.cli import build_parser\np = build_parser()\n"
             "for argv in (['zip', '--help'], ['deploy', '--help'], ['--help']):\n"
             "    try: p.parse_args(argv)\n    except SystemExit: pass\n"
             "print(sorted(m for m in ('tensorflow', 'keras', 'matplotlib', 'ai_edge_litert', 'jax', 'scipy.stats')"
             " if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


@pytest.mark.parametrize("argv, suggestion", [
    (["zpi"], "did you mean zip?"),
    (["zip", "a.keras", "--out", "x", "--retrian-iterations", "3"], "did you mean --retrain-iterations?"),
    (["deploy", "a.keras", "--out", "x", "--method", "mzt"], "did you mean mtz?"),
])
def test_a_mistyped_command_option_or_choice_names_the_nearest(argv, suggestion, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert suggestion in capsys.readouterr().err


def test_deploy_ends_with_the_answer(deployed, fmnist):
    import keras

    s = deployed.summary
    for task in s["tasks"]:   # the originals' test error, recomputed here from the source files by Keras
        model = keras.saving.load_model(deployed.out_dir / "zip" / "sources" / f"{task['task']}.keras")
        before = np.mean(np.argmax(model.predict(fmnist.x_test, verbose=0), axis=1) != fmnist.y_test)
        assert task["images"] == len(fmnist.y_test) and task["before"] == pytest.approx(before)
        assert task["change_pp"] == pytest.approx(100 * (task["after"] - task["before"]))
    assert s["file_bytes"] == deployed.model.stat().st_size
    assert s["separate_bytes"] == sum(p.stat().st_size for p in deployed.baselines.values())
    assert {sig for sig, _ in s["latency"]} == {"a", "b", "all"}
    text = (deployed.out_dir / "summary.md").read_text()
    assert "task a: test error (2000 images)" in text and str(deployed.out_dir / "bench" / "report.md") in text
    assert f"{s['file_bytes']:,} bytes vs {s['separate_bytes']:,}" in text


def test_a_hold_out_too_small_for_the_budget_is_refused_before_work_with_the_images_it_needs(small_models, fmnist,
                                                                                          tmp_path, capsys):
    from mtz_mobile.zipper.frontier import _shortfall
    from mtz_mobile.zipper.increase_bound import upper_bound

    d = fmnist.head(3000, 500)
    np.savez(tmp_path / "own.npz", x_train=d.x_train[:2700], y_train=d.y_train[:2700], x_test=d.x_test,
             y_test=d.y_test, x_val=d.x_train[2700:], y_val=d.y_train[2700:])
    out = tmp_path / "zip"
    started = time.perf_counter()
    code = main(["zip", *map(str, small_models), "--data", f"npz:{tmp_path / 'own.npz'}", "--max-error-increase",
                 "0.5", "--out", str(out), "--quiet"])
    lines = _errors(capsys)
    assert code == 2 and len(lines) == 1 and not out.exists(), lines
    assert "task a has 300 validation images (x_val of own.npz)" in lines[0] and "add images to the validation set" \
        in lines[0]
    need = int(re.search(r"needs at least (\d+) images per task", lines[0])[1])
    # the bound's own arithmetic: an unchanged network on `need` images is certified within 0.5 pp, on one fewer not
    assert upper_bound(0, 0, need, 0.95) <= 0.005 < upper_bound(0, 0, need - 1, 0.95)
    floor = float(re.search(r"bounded at \+([\d.]+) pp", lines[0])[1])
    assert floor == pytest.approx(100 * upper_bound(0, 0, 300, 0.95), abs=0.005)
    assert time.perf_counter() - started < 30
    # frontier.md says the same under a sweep's table
    state = {"budget_pp": 0.5, "settings": {"confidence": 0.95}, "tasks": [{"name": "a", "validation": "x_val"}],
             "points": [{"validation": {"a": {"images": 300}}}]}
    assert f"needs at least {need} images per task" in _shortfall(state)
    state["points"][0]["validation"]["a"]["images"] = need
    assert _shortfall(state) == ""


def test_the_page_offers_the_zips_own_test_images_and_fashion_mnist_only_as_a_fallback(deployed, fmnist, tmp_path):
    import base64
    import shutil
    import threading
    import urllib.request

    from mtz_mobile.web import make_server
    from mtz_mobile.web.samples import raw_grey, samples_path

    doc = json.loads(samples_path(deployed.model).read_text())
    assert doc["shape"] == [28, 28] and doc["samples"]
    for s in doc["samples"]:   # the test image itself, as 8-bit grey, labelled with its task and class
        pixels = np.frombuffer(base64.b64decode(s["pixels"]), np.uint8).reshape(28, 28)
        assert np.array_equal(pixels, np.rint(fmnist.x_test[s["index"]] * 255).astype(np.uint8))
        task, label = s["label"].split(": ")
        assert task in ("a", "b") and label == fmnist.labels[fmnist.y_test[s["index"]]]

    alone = tmp_path / "alone.tflite"
    shutil.copyfile(deployed.model, alone)
    served = {}
    for model in (deployed.model, alone):
        server = make_server(model, port=0, quiet=True)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{server.server_address[1]}/samples.json") as r:
                served[model.name] = json.loads(r.read())
        finally:
            server.shutdown()
            server.server_close()
    assert served[deployed.model.name] == doc
    assert served["alone.tflite"]["source"] == "fashion-mnist test set"

    # colour becomes grey as the page makes an upload grey; grey repeated into RGB is its one channel
    rgb = np.array([[[[1.0, 0.0, 0.0], [0.2, 0.2, 0.2]]]], np.float32)
    scaled = TaskData(rgb, None, rgb, None, [], {"scale": 1 / 255.0, "mean": 0.0})   # pixels / 255, as loaded
    assert raw_grey(scaled.stored_values(rgb)).tolist() == [[[76, 51]]]
    assert raw_grey(rgb * 255).tolist() == [[[76, 51]]]

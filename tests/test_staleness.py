"""What decides that a saved output is stale, rule by rule: the zip (data compared by content, not
by spec string), the host bench report (every setting it was measured with), the XNNPACK weight
cache's stamp (every field), and two computations whose inputs are easy to get wrong silently:
the error-increase bound's confidence and the memory growth over the runtime's own set-up."""

from __future__ import annotations

import dataclasses
import json
import shutil

import numpy as np
import pytest

from mtz_mobile.bench import weight_cache
from mtz_mobile.bench.staleness import bench_staleness
from mtz_mobile.bench.memory import memory_ratios, versus_one_original
from mtz_mobile.bench.probe import METRIC_KEYS
from mtz_mobile.zipper.staleness import data_digest, zip_staleness
from mtz_mobile.zipper.increase_bound import images_to_certify, paired_increase, upper_bound
from mtz_mobile.zipper.plan import load_zip_dir


# ---------------------------------------------------------------- the zip


@pytest.fixture(scope="module")
def zip_inputs(deployed, small_models):
    zip_dir = deployed.out_dir / "zip"
    return zip_dir, dict(zip(("a", "b"), small_models)), load_zip_dir(zip_dir).plan.config()


def test_zip_is_current_for_the_arrays_it_was_made_on(zip_inputs, fmnist):
    zip_dir, models, config = zip_inputs
    plan = load_zip_dir(zip_dir).plan
    assert [t.data_sha256 for t in plan.tasks] == [data_digest(fmnist)] * 2
    assert zip_staleness(zip_dir, models, {"a": fmnist, "b": fmnist}, config) is None
    # the same arrays in another object (a copy) are the same data
    copy = dataclasses.replace(fmnist, x_train=fmnist.x_train.copy(), y_train=fmnist.y_train.copy())
    assert zip_staleness(zip_dir, models, {"a": copy, "b": fmnist}, config) is None


def test_zip_made_on_other_arrays_with_the_same_spec_is_stale(zip_inputs, fmnist):
    """The zip was made on 4,000 images under the spec 'fashion-mnist': fewer images, one changed
    pixel, one changed label or task b's preprocessing, all under that same spec, are other data."""
    zip_dir, models, config = zip_inputs
    pixel = fmnist.x_train.copy()
    pixel[17, 3] += 0.5
    label = fmnist.y_train.copy()
    label[0] = (label[0] + 1) % 10
    others = {"fewer images": fmnist.head(3000, 2000),
              "one pixel": dataclasses.replace(fmnist, x_train=pixel),
              "one label": dataclasses.replace(fmnist, y_train=label),
              "preprocessing": dataclasses.replace(fmnist, preprocessing={"scale": 1 / 127.5, "mean": 127.5})}
    for what, other in others.items():
        assert other.spec == fmnist.spec, what
        assert zip_staleness(zip_dir, models, {"a": fmnist, "b": other}, config) == "data changed (task b)", what


def test_zip_staleness_of_spec_strings_loads_and_compares_the_arrays(zip_inputs, fmnist):
    """Through the CLI the data come as specs: 'fashion-mnist' loads the full 60,000 images, not the
    4,000 the zip was made on; another spec string is stale without loading anything."""
    zip_dir, models, config = zip_inputs
    assert fmnist.spec == "fashion-mnist"
    assert zip_staleness(zip_dir, models, "fashion-mnist", config) == "data changed (task a)"
    assert zip_staleness(zip_dir, models, ["fashion-mnist", "npz:/nonexistent.npz"], config) == "data changed"


def test_zip_without_a_recorded_digest_is_stale(zip_inputs, fmnist, tmp_path):
    """A plan.json written before the digest was recorded still loads, and counts as stale."""
    zip_dir, models, config = zip_inputs
    old = tmp_path / "zip"
    shutil.copytree(zip_dir, old)
    plan = json.loads((old / "plan.json").read_text())
    for task in plan["tasks"]:
        del task["data_sha256"]
    (old / "plan.json").write_text(json.dumps(plan))
    assert load_zip_dir(old).plan.tasks[0].data_sha256 is None
    assert zip_staleness(old, models, {"a": fmnist, "b": fmnist}, config).startswith("data digest not recorded")


# ---------------------------------------------------------------- the host bench report

# every setting the bench measures with, each changed to another valid value (listed here, not
# read from bench.staleness, so that a setting dropped there is noticed)
OTHER_SETTING = {"runtime": ("interpreter", "runtime"), "threads": (2, "threads"), "runs": (4, "runs"),
                 "warmup": (7, "warmup"), "switch_steps": (9, "switch_steps"), "memory_repeats": (2, "memory_repeats"),
                 "xnnpack_cache": ("on", "xnnpack_cache"),
                 "transient_indirection": (True, "xnnpack_transient_indirection")}


def test_bench_report_is_stale_when_any_setting_changes(deployed):
    bench_dir = deployed.out_dir / "bench"
    baselines = list(deployed.baselines.values())
    measured = dict(runtime="compiled", runs=deployed.report["settings"]["runs"])
    assert bench_staleness(bench_dir, deployed.model, baselines, measured) is None
    for option, (value, key) in OTHER_SETTING.items():
        assert value != deployed.report["settings"][key], option
        reason = bench_staleness(bench_dir, deployed.model, baselines, dict(measured, **{option: value}))
        assert reason is not None and reason.startswith("bench settings changed (") and f"{key} " in reason, option


# ---------------------------------------------------------------- the weight cache's stamp


@pytest.mark.parametrize("field, value, reason", [
    ("model_sha256", "0" * 64, "model changed"),
    ("litert", "0.0.1", "LiteRT changed"),
    ("cache_bytes", 1, "size changed (truncated?)"),
    ("cache_sha256", "0" * 64, "contents changed (corrupted?)"),
])
def test_each_stamp_field_invalidates_the_cache(tmp_path, field, value, reason):
    """Every field of the stamp is checked: a cache whose stamp differs in any one is deleted with
    its stamp (so that the next load rebuilds it), and the reason names the field."""
    model = tmp_path / "m.tflite"
    model.write_bytes(b"model bytes")
    weight_cache.cache_file(model).write_bytes(b"packed weights")
    record = weight_cache.stamp(model)
    assert weight_cache.check(model) == "valid"
    assert record[field] != value
    weight_cache.stamp_file(model).write_text(json.dumps(dict(record, **{field: value})))
    assert weight_cache.check(model) == reason
    assert not weight_cache.cache_file(model).exists() and not weight_cache.stamp_file(model).exists()


# ---------------------------------------------------------------- the bound's confidence


def test_the_bound_is_taken_at_the_confidence_asked_for():
    """--confidence 0.99 certifies at 99 %: a wider bound than at 95 % on the same counts, and more
    images needed to certify an unchanged network."""
    original = np.array([1] * 180 + [0] * 20, bool)
    zipped = original.copy()
    zipped[:6] = False     # 6 images broken
    zipped[190:192] = True  # 2 repaired
    at95, at99 = paired_increase(original, zipped, 0.95), paired_increase(original, zipped, 0.99)
    assert (at99.worse, at99.better, at99.confidence) == (6, 2, 0.99)
    assert at99.upper == upper_bound(6, 2, 200, 0.99) > at95.upper == upper_bound(6, 2, 200, 0.95)
    need = images_to_certify(0.01, 0.99)
    assert upper_bound(0, 0, need, 0.99) <= 0.01 < upper_bound(0, 0, need - 1, 0.99)
    assert need > images_to_certify(0.01, 0.95)


# ---------------------------------------------------------------- memory growth


def _measurement(variant, stage, task, before: int, after: int) -> dict:
    return {"variant": variant, "stage": stage, "task": task, "load_seconds": 0.1,
            "before": {k: before + i for i, k in enumerate(METRIC_KEYS)},
            "after": {k: after + 10 * i for i, k in enumerate(METRIC_KEYS)}}


def test_memory_growth_subtracts_each_processs_own_set_up():
    """Δ = after − before of the same process, per metric; the ratio of Δs is zipped Δ / baselines Δ."""
    zipped = _measurement("zipped", "all_tasks", None, 50_000, 58_000)
    baselines = _measurement("baselines", "all_tasks", None, 40_000, 52_000)
    single = _measurement("single", "task", "a", 30_000, 36_000)
    rows = {r["metric"]: r for r in memory_ratios([zipped, baselines, single])}
    one = {r["metric"]: r for r in versus_one_original([zipped, baselines, single])}
    assert set(rows) == set(one) == set(METRIC_KEYS)
    for i, metric in enumerate(METRIC_KEYS):
        z, b, s = (m["after"][metric] - m["before"][metric] for m in (zipped, baselines, single))
        assert (z, b, s) == (8000 + 9 * i, 12000 + 9 * i, 6000 + 9 * i)
        assert (rows[metric]["zipped_delta"], rows[metric]["baselines_delta"]) == (z, b)
        assert rows[metric]["ratio_delta"] == pytest.approx(z / b)
        assert rows[metric]["ratio"] == pytest.approx(zipped["after"][metric] / baselines["after"][metric])
        assert (one[metric]["zipped_delta"], one[metric]["one_original_delta"]) == (z, s)
        assert one[metric]["ratio_delta"] == pytest.approx(z / s)

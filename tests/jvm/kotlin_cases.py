"""The cases tests/test_kotlin_jvm.py hands the Kotlin JUnit tests: real converted models, damaged
and edited copies of them, the Python side's model inputs and statistics, and what each must give.
``write_plan`` writes them all and returns {"path": plan.json, "counts": JUnit tests per class}."""

from __future__ import annotations

import copy
import json
import math
import shutil
import statistics
from pathlib import Path

import jsonschema
import numpy as np

from converters import convert_zip
from converters import flatbuffer as fb
from converters.manifest import MANIFEST_FORMAT, load_schema, read_manifest
from mtz_mobile import contract
from mtz_mobile.contract import MANIFEST_METADATA
from mtz_mobile.data import TaskData
from mtz_mobile.graph.keras_io import read_model
from mtz_mobile.zipper import ZipConfig, zip_networks
from mtz_mobile.zipper.config import RetrainSettings

from mtz_mobile import android_assets as tool

NO_RETRAIN = RetrainSettings(iterations=0, batch_size=64, learning_rate=1e-3)

TENSOR = {"name": None, "shape": None, "dtype": None, "layout": None, "activation": None}
# The fields of the manifest the app keeps (Manifest.kt's data classes); None: a leaf.
APP_VIEW = {
    "format": None, "version": None, "tool_version": None, "quantization": None,
    "tasks": [{"name": None, "signature_key": None, "input": TENSOR, "output": TENSOR, "labels": None,
               "preprocessing": {"scale": None, "mean": None}}],
    "joint": {"signature_key": None, "input": TENSOR,
              "outputs": [{"task": None, "name": None, "shape": None, "dtype": None}]},
    "sharing": {"separate_params": None, "zipped_params": None, "shared_params": None, "shared_fraction": None,
                "file": {"weight_bytes": None, "shared_weight_bytes": None}},
}


# The manifest's fields the app does not keep, on purpose (a path: object keys, lists left out).
APP_IGNORES = {("tasks", "source"), ("baselines",), ("sharing", "shared_fraction_definition"), ("sharing", "layers"),
               ("sharing", "file", "task_weight_bytes"), ("sharing", "file", "duplicated_bytes")}



def app_view(value, view=APP_VIEW):
    """The part of a manifest the app keeps, as the JSON holds it (types untouched)."""
    if view is None or value is None:
        return value
    if isinstance(view, list):
        return [app_view(v, view[0]) for v in value] if isinstance(value, list) else value
    if not isinstance(value, dict):
        return value
    return {k: app_view(value[k], v) for k, v in view.items() if k in value}


def _in_view(path: tuple) -> bool:
    view = APP_VIEW
    for part in path:
        if isinstance(view, list):
            view = view[0]
            if isinstance(part, int):
                continue
        if not isinstance(view, dict) or part not in view:
            return False
        view = view[part]
    return True


def unaccounted_fields(manifest: dict) -> list[str]:
    """Fields of a manifest neither in APP_VIEW nor in APP_IGNORES: a field renamed on one side only."""
    out = []
    for path in _key_paths(manifest):
        keys = tuple(p for p in path if not isinstance(p, int))
        if not _in_view(path) and not any(keys[:len(i)] == i for i in APP_IGNORES):
            out.append(".".join(map(str, path)))
    return out


# --- models --------------------------------------------------------------------------------------

def _three_task_models(root: Path) -> dict[str, TaskData]:
    """Three small random MLPs on 12 inputs; task c preprocesses differently (mean 127.5)."""
    import keras

    L = keras.layers
    datas, x = {}, np.random.default_rng(0).random((80, 12), np.float32)
    for task, seed, classes in (("a", 1, 3), ("b", 2, 4), ("c", 3, 5)):
        keras.utils.set_random_seed(seed)
        model = keras.Sequential([keras.Input((12,)), L.Dense(10, activation="relu"),
                                  L.Dense(8, activation="relu"), L.Dense(classes, activation="softmax")])
        model.save(root / f"{task}.keras")
        y = np.random.default_rng(seed).integers(0, classes, len(x))
        pre = {"scale": 0.25, "mean": 127.5} if task == "c" else {"scale": 1 / 255.0, "mean": 0.0}
        datas[task] = TaskData("npz:synthetic", x, y, x[:32], y[:32], [f"class {i}" for i in range(classes)], pre)
    return datas


def convert_models(root: Path, small_models, fmnist) -> dict[str, Path]:
    """name -> .tflite: two tasks with and without `all`, the same in fp16, three tasks with `all`."""
    chains = {n: read_model(p) for n, p in zip(("a", "b"), small_models)}
    cfg = ZipConfig(shared=["all"], calibration_samples=500, retrain=NO_RETRAIN)
    zip_networks(chains, {"a": fmnist, "b": fmnist}, cfg, root / "zip2", progress=False)
    out = {}
    for name, options in (("two_tasks_joint", {"joint": True}), ("two_tasks", {}),
                          ("two_tasks_fp16_joint", {"joint": True, "quantize": "fp16"})):
        out[name] = convert_zip(root / "zip2", root / f"{name}.tflite", **options).path
    (root / "three").mkdir()
    datas = _three_task_models(root / "three")
    chains = {t: read_model(root / "three" / f"{t}.keras") for t in datas}
    zip_networks(chains, datas, ZipConfig(calibration_samples=80, retrain=NO_RETRAIN), root / "zip3", progress=False)
    out["three_tasks_joint"] = convert_zip(root / "zip3", root / "three_tasks_joint.tflite", joint=True).path
    return out


# --- copies with the manifest elsewhere, damaged files, edited manifests -------------------------

def with_payload(data: bytes, payload: bytes) -> bytes:
    model = fb.parse_model(data)
    fb.set_metadata(model, MANIFEST_METADATA, payload)
    return fb.serialize(model)


def _entry(model):
    (entry,) = [m for m in model.metadata if fb.decode(m.name) == MANIFEST_METADATA]
    return entry


def manifest_after_flatbuffer(data: bytes, offset_past_end: int = 0) -> bytes:
    """The manifest's buffer kept after the flatbuffer (Buffer.offset/size from the file start), as
    large models store their buffers; ``offset_past_end`` > 0 points it beyond the end of the file."""
    model = fb.parse_model(data)
    entry = _entry(model)
    payload = fb.buffer_bytes(model, entry.buffer)
    buf = model.buffers[entry.buffer]
    buf.data, buf.offset, buf.size = None, 1, len(payload)  # placeholder offset: same layout as the final one
    head = fb.serialize(model)
    start = -(-len(head) // 16) * 16
    model.buffers[entry.buffer].offset = start + offset_past_end  # serialize replaced the buffer objects
    final = fb.serialize(model)
    assert len(final) == len(head)
    return final + bytes(start - len(final)) + payload


def damaged_files(data: bytes) -> dict[str, tuple[bytes, str, str | None]]:
    """name -> (bytes, expectation, message part)."""
    payload = fb.get_metadata(fb.parse_model(data), MANIFEST_METADATA)
    at = data.find(payload)
    assert at > 0 and data.find(payload, at + 1) < 0
    out = {f"truncated_{n}": (data[:n], "malformed", None) for n in (0, 7, 8, at, at + len(payload) - 1)}
    out["truncated_0"] = (b"", "malformed", "too short")
    for cut in (100, 0.5, 0.9, 0.999):
        n = int(len(data) * cut) if isinstance(cut, float) else cut
        out[f"truncated_{n}"] = (data[:n], "malformed_or_manifest", None)
    out["identifier_TFL2"] = (data[:4] + b"TFL2" + data[8:], "malformed", "TFL3")
    out["not_tflite"] = (bytes(64), "malformed", "TFL3")
    out["root_offset_past_end"] = ((len(data) + 8).to_bytes(4, "little") + data[4:], "malformed", "outside")
    model = fb.parse_model(data)
    _entry(model).buffer = len(model.buffers) + 3
    out["metadata_buffer_out_of_range"] = (fb.serialize(model), "malformed", f"names buffer {len(model.buffers) + 3}")
    out["buffer_after_end_of_file"] = (manifest_after_flatbuffer(data, 64), "malformed", "outside")
    # an offset past 2^31 would wrap to a position inside the file if only the Int read were checked
    out["buffer_offset_past_2_31"] = (manifest_after_flatbuffer(data, 1 << 32), "malformed", "outside")
    model = fb.parse_model(data)
    model.metadata = None
    out["no_metadata"] = (fb.serialize(model), "manifest_error", f"no '{MANIFEST_METADATA}' metadata")
    model = fb.parse_model(data)
    _entry(model).name = "other_entry"
    out["other_metadata_only"] = (fb.serialize(model), "manifest_error", f"no '{MANIFEST_METADATA}' metadata")
    return out


def _key_paths(value, path=()):
    """Every key of every object in a manifest (the first element of each list stands for all)."""
    if isinstance(value, dict):
        for k, v in value.items():
            yield path + (k,)
            yield from _key_paths(v, path + (k,))
    elif isinstance(value, list) and value and isinstance(value[0], (dict, list)):
        yield from _key_paths(value[0], path + (0,))


def _edit(manifest: dict, path: tuple, value=None, delete=False) -> dict:
    out = copy.deepcopy(manifest)
    node = out
    for part in path[:-1]:
        node = node[part]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return out


def _valid(manifest) -> bool:
    return jsonschema.Draft202012Validator(load_schema()).is_valid(manifest)


def without_each_field(manifest: dict) -> dict[str, tuple[dict, str]]:
    """name -> (manifest with one field removed, expectation). Schema-valid: read. Invalid but a
    field the app does not keep, or one that may be null (the app reads absent as null): read.
    Otherwise rejected with ManifestException."""
    out = {}
    for path in _key_paths(manifest):
        edited = _edit(manifest, path, delete=True)
        if _valid(edited) or not _in_view(path) or _valid(_edit(manifest, path, None)):
            expect = "manifest"
        else:
            expect = "manifest_error"
        out["without_" + ".".join(map(str, path))] = (edited, expect)
    return out


def schema_violations(manifest: dict) -> dict[str, tuple[bytes, str | None]]:
    """name -> (manifest bytes that break the schema, or an app rule, message part): all rejected."""
    def edit(path, value):
        return json.dumps(_edit(manifest, path, value)).encode()

    out = {
        "not_json": (b"{not json", None), "empty": (b"", None), "json_array": (b"[1, 2]", None),
        "not_utf8": (b"\xff\xfe\x00{", None),
        "deep_nesting": (b'{"format": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "nests deeper"),
        "format_other": (edit(("format",), "other/manifest"), "unknown manifest format"),
        "version_2": (edit(("version",), 2), "manifest version 2"),
        "tasks_empty": (edit(("tasks",), []), "no tasks"),
        "tasks_object": (edit(("tasks",), {}), None),
        "scale_string": (edit(("tasks", 0, "preprocessing", "scale"), "fast"), None),
        "shape_strings": (edit(("tasks", 0, "input", "shape"), ["a", "b"]), None),
        "labels_object": (edit(("tasks", 0, "labels"), {"0": "x"}), None),
        "sharing_null": (edit(("sharing",), None), None),
        "input_not_named_input": (edit(("tasks", 0, "input", "name"), "x"), "expected 'input'"),  # app rule
    }
    if manifest["joint"] is not None:
        out["joint_key_both"] = (edit(("joint", "signature_key"), "both"), "expected 'all'")
    return out


def schema_accepts(violations: dict[str, tuple[bytes, str | None]]) -> list[str]:
    """The violations (app rules aside) that the schema accepts: there should be none."""
    out = []
    for name, (payload, _) in violations.items():
        try:
            doc = json.loads(payload)
        except (UnicodeDecodeError, json.JSONDecodeError, RecursionError):
            continue
        if name != "input_not_named_input" and _valid(doc):
            out.append(name)
    return out


# --- the Python side's numbers ------------------------------------------------------------------

def _f32(path: Path, values) -> str:
    np.asarray(values, "<f4").tofile(path)
    return str(path)


def preprocessing_cases(root: Path, name: str, path: Path, manifest: dict, raw: np.ndarray) -> list[dict]:
    """Per task (and `all` where the tasks agree): raw values and tool.app_input's float32 inputs."""
    out = []
    tasks = {t["name"]: t for t in manifest["tasks"]}
    pres = {json.dumps(t["preprocessing"], sort_keys=True) for t in manifest["tasks"]}
    if manifest["joint"] is not None and len(pres) == 1:
        tasks[contract.JOINT_KEY] = dict(manifest["joint"], preprocessing=manifest["tasks"][0]["preprocessing"])
    for key, t in tasks.items():
        want = np.stack([tool.app_input(r, t["preprocessing"], t["input"]["shape"]) for r in raw])
        out.append({"name": f"{name}/{key}", "file": str(path), "task": key,
                    "raw": _f32(root / f"{name}.{key}.raw.f32", raw), "expected": _f32(root / f"{name}.{key}.x.f32", want)})
    return out


def stats_cases() -> list[dict]:
    """Latency-like series: median from statistics.median, percentiles nearest-rank (numpy)."""
    rng = np.random.default_rng(7)
    series = {f"lognormal_{n}": list(rng.lognormal(5, 0.4, n)) for n in (1, 2, 3, 4, 10, 11, 99, 100, 101)}
    series["ties"] = [5.0, 5.0, 5.0, 1.0, 9.0, 5.0]
    series["integers_100"] = [float(v) for v in rng.integers(100, 130, 100)]
    series["empty"] = []
    out = []
    for name, values in series.items():
        if not values:
            out.append({"name": name, "values": [], "median": None, "p90": None, "percentiles": {}})
            continue
        pct = {str(q): float(np.percentile(values, 100 * q, method="inverted_cdf")) for q in (0.5, 0.9, 0.99)}
        ordered = sorted(values)  # the definition, the slow way: smallest value with >= q of them at or below
        for q, v in pct.items():
            assert v == min(x for x in ordered if sum(y <= x for y in ordered) >= float(q) * len(ordered)), (name, q)
        out.append({"name": name, "values": [float(v) for v in values], "median": float(statistics.median(values)),
                    "p90": pct["0.9"], "percentiles": pct})
    assert all(math.isfinite(v) for c in out for v in c["values"])
    return out


def contract_names() -> dict:
    return {"INPUT_NAME": contract.INPUT_NAME, "OUTPUT_NAME": contract.OUTPUT_NAME, "JOINT_KEY": contract.JOINT_KEY,
            "MANIFEST_METADATA": contract.MANIFEST_METADATA, "MANIFEST_FORMAT": MANIFEST_FORMAT,
            "MANIFEST_VERSION": load_schema()["properties"]["version"]["const"], "APP_PACKAGE": contract.APP_PACKAGE,
            "DEVICE_MODEL_NAME": contract.DEVICE_MODEL_NAME, "SAMPLES_ASSET": tool.SAMPLES_NAME,
            "SAMPLES_FORMAT": tool.SAMPLES_FORMAT, "XNNPACK_CACHE_SUFFIX": contract.XNNPACK_CACHE_SUFFIX,
            "XNNPACK_STAMP_SUFFIX": contract.XNNPACK_STAMP_SUFFIX}


# --- the plan -----------------------------------------------------------------------------------

def model_file_cases(root: Path, models: dict[str, Path], manifests: dict[str, dict]) -> tuple[list[dict], list[str]]:
    """ModelFilesTest's cases (the converted files, their damaged copies, their edited manifests),
    and the names of the hand-made violations that the schema accepts."""
    out = []

    def add(group, name, data: bytes, expect, manifest=None, message=None):
        file = root / "cases" / f"{group}.{name}.tflite"
        file.parent.mkdir(exist_ok=True)
        file.write_bytes(data)
        case = {"name": f"{group}/{name}", "file": str(file), "expect": expect}
        if manifest is not None:
            case["manifest"] = app_view(manifest)
        if message is not None:
            case["message"] = message
        out.append(case)

    for name, path in models.items():
        add("good", name, path.read_bytes(), "manifest", manifests[name])
    base, base_manifest = models["two_tasks_joint"].read_bytes(), manifests["two_tasks_joint"]
    add("good", "manifest_after_flatbuffer", manifest_after_flatbuffer(base), "manifest", base_manifest)
    for name, (data, expect, message) in damaged_files(base).items():
        add("damaged", name, data, expect, base_manifest if expect != "malformed" else None, message)
    small, small_manifest = models["three_tasks_joint"].read_bytes(), manifests["three_tasks_joint"]
    for name, (edited, expect) in without_each_field(small_manifest).items():
        add("schema", name, with_payload(small, json.dumps(edited).encode()), expect,
            edited if expect == "manifest" else None)
    violations = schema_violations(small_manifest)
    for name, (payload, message) in violations.items():
        add("schema", name, with_payload(small, payload), "manifest_error", None, message)
    return out, schema_accepts(violations)


def input_cases(root: Path, models: dict[str, Path], manifests: dict[str, dict]) -> dict[str, list]:
    """SamplesTest's (the exporter's samples.json), PreprocessingTest's and ModelInputTest's cases."""
    assets = tool.export_assets(models["two_tasks_joint"], root / "assets", per_source=6)
    samples = json.loads(assets["samples"].read_text())
    out = {"samples": [{"name": "two_tasks_joint", "file": str(models["two_tasks_joint"]),
                        "samples": str(assets["samples"]), "count": len(samples["samples"])}],
           "preprocessing": [], "joint": []}
    pixels = np.array([s["pixels"] for s in samples["samples"]], np.float32)  # what the app feeds
    synthetic = np.random.default_rng(3).uniform(-10, 300, (5, 12)).astype(np.float32)
    for name, path in models.items():
        raw = synthetic if name.startswith("three") else pixels
        out["preprocessing"] += preprocessing_cases(root, name, path, manifests[name], raw)
        pres = [t["preprocessing"] for t in manifests[name]["tasks"]]
        out["joint"].append({"name": name, "file": str(path),
                             "preprocessing": pres[0] if all(p == pres[0] for p in pres) else None})
    assert out["joint"][-1]["preprocessing"] is None  # three tasks: c preprocesses differently
    return out


def weight_cache_cases(root: Path, models: dict[str, Path]) -> list[dict]:
    """A real XNNPACK cache file LiteRT wrote beside a converted model, stamped by the bench
    (mtz_mobile/bench/weight_cache.py), and damaged copies: what WeightCache.check must say of each
    — the state the Python side's own check gives a copy of the same files."""
    from mtz_mobile.bench import weight_cache
    from mtz_mobile.bench.host import cold_load

    source = root / "cache_source" / "model.tflite"
    source.parent.mkdir()
    shutil.copyfile(models["two_tasks_joint"], source)
    weight_cache.prepare([(source, None)], cold_load)
    runtime = json.loads(weight_cache.stamp_file(source).read_text())["litert"]

    def damage(name, edit):
        model = root / "cache_cases" / name / "model.tflite"
        model.parent.mkdir(parents=True)
        for src in (source, weight_cache.cache_file(source), weight_cache.stamp_file(source)):
            shutil.copyfile(src, model.parent / src.name)
        edit(model, weight_cache.cache_file(model), weight_cache.stamp_file(model))
        return model

    def header(cache, offset, value: bytes):  # XNNPackCacheHeader: u64 version, u64, u64, u8 stale at 24
        data = bytearray(cache.read_bytes())
        assert int.from_bytes(data[:8], "little") == 4, "LiteRT's cache header is no longer version 4"
        data[offset:offset + len(value)] = value
        cache.write_bytes(bytes(data))

    def flip(cache):
        data = bytearray(cache.read_bytes())
        data[len(data) // 2] ^= 0xFF
        cache.write_bytes(bytes(data))

    edits = {
        "valid": ("valid", lambda m, c, s: None),
        "model_changed": ("model changed", lambda m, c, s: shutil.copyfile(models["two_tasks_fp16_joint"], m)),
        "truncated": ("size changed (truncated?)", lambda m, c, s: c.write_bytes(c.read_bytes()[:c.stat().st_size // 2])),
        "corrupted": ("contents changed (corrupted?)", lambda m, c, s: flip(c)),
        "no_stamp": ("no stamp", lambda m, c, s: s.unlink()),
        "stamp_unreadable": ("stamp unreadable", lambda m, c, s: s.write_text("{not json")),
        "absent": ("absent", lambda m, c, s: c.unlink()),
    }
    out = []
    for name, (expect, edit) in edits.items():
        model = damage(name, edit)
        twin = damage(name + "_python", edit)
        out.append({"name": name, "model": str(model), "runtime": runtime, "expect": expect,
                    "python_found": weight_cache.check(twin)})
    # XNNPACK's own marks, which the Python side's check calls "contents changed (corrupted?)": the
    # stale flag it sets at close when weights were missing, the invalid header a build starts with
    for name, (offset, value, expect) in {
        "xnnpack_stale": (24, b"\x01", "stale (XNNPACK marked it: weights missing from it)"),
        "xnnpack_unfinished": (0, bytes(8), "unfinished (XNNPACK's build of it did not complete)"),
    }.items():
        model = damage(name, lambda m, c, s, o=offset, v=value: header(c, o, v))
        out.append({"name": name, "model": str(model), "runtime": runtime, "expect": expect})
    model = damage("other_runtime", lambda m, c, s: None)
    out.append({"name": "other_runtime", "model": str(model), "runtime": f"{runtime}/aarch64", "expect": "LiteRT changed"})
    model = damage("stamped_by_kotlin", lambda m, c, s: s.unlink())   # Kotlin stamps it; Python checks after
    out.append({"name": "stamped_by_kotlin", "model": str(model), "runtime": runtime, "expect": "stamp"})
    return out


# LifecycleTest's tests, by the app defect each guards against (tests/test_kotlin_jvm.py checks each group)
LIFECYCLE_TESTS = {
    "errors": ["nativeAndMemoryErrorsBecomeCouldNotBeLoaded"],
    "leaks": ["aStampThatCannotBeWrittenClosesTheCompiledModel", "aBufferThatCannotBeCreatedClosesTheOnesBeforeIt"],
    "benchmark": ["aFailedBenchmarkKeepsTheTasksRunning"],
    "timings": ["theBenchmarkReportsHashingCompileAndFirstInferenceApart"],
    "cache_states": ["aCacheXnnpackRewritesIsStampedAgain", "aCacheXnnpackMarksStaleAtCloseIsNamedSoAndRebuilt"],
    "recreation": ["oneWriterOfTheCacheFileAtATime", "aRecreatedActivityReusesTheCompiledModel"],
    "threads": ["bigCoresAreReadFromSysfs"],
}


def lifecycle_case(root: Path, models: dict[str, Path]) -> dict:
    """LifecycleTest's files: a converted model, the same with 8 MB of padding after it (hashing it
    takes measurable time; the reader ignores bytes past the flatbuffer), and the XNNPACK cache file
    LiteRT wrote for the model here (weight_cache_cases)."""
    from mtz_mobile.bench import weight_cache

    large = root / "lifecycle" / "large.tflite"
    large.parent.mkdir()
    large.write_bytes(models["two_tasks_joint"].read_bytes() + bytes(8 << 20))
    (root / "lifecycle" / "scratch").mkdir()
    cache = weight_cache.cache_file(root / "cache_source" / "model.tflite")
    return {"model": str(models["two_tasks_joint"]), "large_model": str(large), "cache": str(cache),
            "scratch": str(root / "lifecycle" / "scratch")}


def write_plan(root: Path, small_models, fmnist) -> dict:
    models = convert_models(root, small_models, fmnist)
    manifests = {}
    for name, path in models.items():
        manifests[name] = read_manifest(fb.load_model(path))
        jsonschema.validate(manifests[name], load_schema())
    model_cases, schema_accepts_violations = model_file_cases(root, models, manifests)
    plan = {"contract": contract_names(), "models": model_cases,
            "fuzz": [{"name": "three_tasks_joint", "file": str(models["three_tasks_joint"]), "seed": 1,
                      "mutations": 3000}],
            **input_cases(root, models, manifests), "stats": stats_cases(),
            "weight_caches": weight_cache_cases(root, models)}
    plan["lifecycle"] = lifecycle_case(root, models)
    path = root / "plan.json"
    path.write_text(json.dumps(plan))
    counts = {"ContractTest": 1, "ModelFilesTest": len(plan["models"]), "FuzzTest": len(plan["fuzz"]),
              "PreprocessingTest": len(plan["preprocessing"]), "ModelInputTest": len(plan["joint"]),
              "SamplesTest": len(plan["samples"]), "BenchmarkStatsTest": len(plan["stats"]),
              "WeightCacheTest": len(plan["weight_caches"]),
              "LifecycleTest": sum(map(len, LIFECYCLE_TESTS.values()))}
    for group in ("good", "damaged", "schema"):
        counts[f"ModelFilesTest/{group}"] = sum(c["name"].startswith(group + "/") for c in plan["models"])
    return {"path": path, "counts": counts, "manifests": manifests, "schema_accepts": schema_accepts_violations,
            "weight_caches": plan["weight_caches"]}

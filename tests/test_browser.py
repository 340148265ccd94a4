"""`mtz-mobile serve`'s page in Debian's chromium (driven by playwright-core, mtz_mobile/web/drive.mjs):
LiteRT.js's outputs in the page against the host's LiteRT for every task signature and the joint one,
task switching without a reload, and damaged or non-zipped files shown as a message, not a crash.

Needs /usr/bin/chromium and `npm ci` in mtz_mobile/web (tools/install.sh does both); without them
the tests fail and say so.
"""

from __future__ import annotations

import base64
import contextlib
import io
import inspect
import json
import re
import shutil
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from converters import convert_zip
from converters.convert import joint_serving as convert_joint_serving
from converters import flatbuffer as fb
from converters.manifest import read_manifest
from mtz_mobile.cli import build_parser, main
from mtz_mobile.cli.options import api_kwargs
from mtz_mobile.contract import MANIFEST_METADATA, baseline_path
from mtz_mobile.graph.keras_io import read_model
from mtz_mobile.litert_runtime import make_interpreter
from mtz_mobile.web import make_server, serve
from mtz_mobile.zipper import ZipConfig, zip_networks
from mtz_mobile.zipper.config import RetrainSettings

REPO = Path(__file__).resolve().parents[1]
WEB = REPO / "mtz_mobile" / "web"
DRIVER = WEB / "drive.mjs"
CHROMIUM = Path("/usr/bin/chromium")
NPM_PACKAGES = ("@litertjs/core", "@litertjs/wasm-utils", "playwright-core")
SAMPLES = json.loads((WEB / "static" / "samples.json").read_text())
RTOL = 1e-4


def require_browser() -> None:
    """Fail (not skip) with one line when chromium, node or the pinned npm packages are missing."""
    lock = json.loads((WEB / "package-lock.json").read_text())["packages"]
    missing = [] if CHROMIUM.is_file() else ["Debian's chromium (/usr/bin/chromium)"]
    missing += [] if shutil.which("node") else ["node"]
    for package in NPM_PACKAGES:
        installed = WEB / "node_modules" / package / "package.json"
        want = lock[f"node_modules/{package}"]["version"]
        if not installed.is_file() or json.loads(installed.read_text())["version"] != want:
            missing.append(f"npm {package}@{want} in mtz_mobile/web/node_modules")
    if missing:
        pytest.fail(f"the browser tests need {', '.join(missing)}: run tools/install.sh", pytrace=False)


@pytest.fixture(scope="module")
def zipped(tmp_path_factory, small_models, fmnist):
    """Two small MLPs zipped (first hidden layer fully shared) and converted with the joint signature
    and the baselines."""
    root = tmp_path_factory.mktemp("browser")
    chains = {n: read_model(p) for n, p in zip(("a", "b"), small_models)}
    cfg = ZipConfig(shared=["all", 0.5], calibration_samples=500,
                    retrain=RetrainSettings(iterations=0, batch_size=64, learning_rate=1e-3))
    zip_networks(chains, {"a": fmnist, "b": fmnist}, cfg, root / "zip", progress=False)
    return convert_zip(root / "zip", root / "model.tflite", joint=True, baselines=True).path


@contextlib.contextmanager
def serving(models: list[Path], logs: list[Path]):
    """`mtz-mobile serve MODEL --port 0` per model in child processes; yields their URLs (each
    process's request log goes to its log file)."""
    procs = []
    try:
        for model, log in zip(models, logs):
            with open(log, "wb") as err:
                procs.append(subprocess.Popen([sys.executable, "-m", "mtz_mobile.cli", "serve", str(model), "--port", "0"],
                                              stdout=subprocess.PIPE, stderr=err, cwd=REPO))
        urls = []
        for proc, log in zip(procs, logs):
            line = proc.stdout.readline().decode()
            match = re.search(r" at (http://\S+)", line)
            assert match, f"serve did not start: {line!r} {log.read_text()}"
            urls.append(match.group(1))
        yield urls
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            proc.wait(timeout=10)


def drive(tmp_path: Path, pages: list[dict]) -> list[dict]:
    job = tmp_path / "job.json"
    job.write_text(json.dumps({"kind": "pages", "pages": pages}))
    done = subprocess.run(["node", str(DRIVER), str(job)], capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, f"drive.mjs failed: {done.stderr[-2000:]}"
    return json.loads(done.stdout)["pages"]


def sample_pixels(i: int) -> np.ndarray:
    h, w = SAMPLES["shape"]
    return np.frombuffer(base64.b64decode(SAMPLES["samples"][i]["pixels"]), np.uint8).reshape(h, w)


def model_input(raw: np.ndarray, spec: dict, pre: dict) -> np.ndarray:
    """(raw - mean) * scale in float32, in the input's shape (the samples are already the input's size)."""
    return ((raw.astype(np.float32) - np.float32(pre["mean"])) * np.float32(pre["scale"])).reshape(spec["shape"])


def host_outputs(model: Path, manifest: dict, key: str, raw: np.ndarray) -> dict[str, np.ndarray]:
    """The host's LiteRT on the same raw pixels, each task preprocessed its own way: {task: output}.
    The joint signature takes one input: where the tasks preprocess alike it answers every task;
    where they differ, each task's answer is its own signature's on its own input."""
    tasks = {t["signature_key"]: t for t in manifest["tasks"]}
    interpreter = make_interpreter(model)
    if key in tasks:
        spec, pre = tasks[key]["input"], tasks[key]["preprocessing"]
        out = interpreter.get_signature_runner(key)(**{spec["name"]: model_input(raw, spec, pre)})
        return {tasks[key]["name"]: out[tasks[key]["output"]["name"]]}
    ways = [t["preprocessing"] for t in manifest["tasks"]]
    if any(p != ways[0] for p in ways):
        return {t["name"]: host_outputs(model, manifest, t["signature_key"], raw)[t["name"]] for t in manifest["tasks"]}
    spec = manifest["joint"]["input"]
    out = interpreter.get_signature_runner(key)(**{spec["name"]: model_input(raw, spec, ways[0])})
    return {o["task"]: out[o["name"]] for o in manifest["joint"]["outputs"]}


def assert_matches_host(model: Path, manifest: dict, step: dict, key: str, raw: np.ndarray) -> None:
    expected = host_outputs(model, manifest, key, raw)
    assert step["signature"] == key
    assert sorted(step["outputs"]) == sorted(expected), f"{key}: the page shows tasks {sorted(step['outputs'])}"
    for task, want in expected.items():
        got = np.asarray(step["outputs"][task], np.float32)
        np.testing.assert_allclose(got, want.ravel(), rtol=RTOL, atol=1e-7, err_msg=f"signature {key}, task {task}")
        spec = next(t for t in manifest["tasks"] if t["name"] == task)
        assert step["top"][task] == spec["labels"][int(np.argmax(want))]
        # the top class's share as shown: the output itself after a softmax, else its softmax
        probs = want.ravel().astype(np.float64)
        if spec["output"]["activation"] != "softmax":
            probs = np.exp(probs - probs.max()) / np.exp(probs - probs.max()).sum()
        shown = float(step["topShare"][task].removesuffix(" %"))
        assert abs(shown - 100 * probs.max()) <= 0.051, (key, task, step["topShare"][task], probs.max())


def expected_run_counts(steps: list[dict]) -> list[int]:
    """#result's run counter after each step: picking an image runs it, selecting another signature
    reruns the image shown."""
    counts, runs, key, shown = [], 0, None, False
    for s in steps:
        picks = "sample" in s or "upload" in s
        runs += int(s["task"] != key and shown) + int(picks)
        key, shown = s["task"], shown or picks
        counts.append(runs)
    return counts


def test_page_matches_host_litert_for_every_signature_and_switches_without_reload(zipped, tmp_path):
    require_browser()
    manifest = read_manifest(fb.load_model(zipped))
    keys = [t["signature_key"] for t in manifest["tasks"]] + [manifest["joint"]["signature_key"]]
    n = len(SAMPLES["samples"])
    # a fixed batch per signature: every sample image, picked after selecting the signature
    steps = [{"task": key, "sample": i} for key in keys for i in range(n)]
    images = [(key, i) for key in keys for i in range(n)]
    # switching back and forth on one image: each selection reruns it, without fetching or compiling again
    for key in ["a", "all", "b", "a", "b", "all"]:
        steps.append({"task": key})
        images.append((key, n - 1))
    upload = np.ascontiguousarray(sample_pixels(3).T)  # an image the samples do not hold: sample 3 transposed
    Image.fromarray(upload).save(tmp_path / "upload.png")
    steps.append({"task": "b", "upload": str(tmp_path / "upload.png")})
    steps.append({"task": "all"})

    with serving([zipped], [tmp_path / "serve.log"]) as (url,):
        (page,) = drive(tmp_path, [{"url": url, "steps": steps}])
    requests = (tmp_path / "serve.log").read_text()

    assert page["state"] == "ready", page["error"]
    assert page["options"] == keys
    assert page["pageErrors"] == [] and page["consoleErrors"] == []
    assert len(page["steps"]) == len(steps), page.get("driverError")
    for step, (key, i) in zip(page["steps"], images):
        assert_matches_host(zipped, manifest, step, key, sample_pixels(i))
        assert re.search(r"\d+\.\d{3} ms for this inference", step["latency"])
    up_b, up_all = page["steps"][-2:]
    assert_matches_host(zipped, manifest, up_b, "b", upload)
    assert_matches_host(zipped, manifest, up_all, "all", upload)
    assert [s["run"] for s in page["steps"]] == expected_run_counts(steps)
    # one page load, one model fetch, one compilation for every task and every switch
    assert page["navigations"] == 1 and page["loads"] == 1
    assert requests.count("GET /model.tflite ") == 1 and requests.count("GET / ") == 1


def served_pages(tmp_path: Path, pages: list[tuple[Path, list[dict]]]) -> list[dict]:
    """Each (model, steps) served from a thread of this process (no start-up cost), driven at once."""
    servers = [make_server(path, port=0, quiet=True) for path, _ in pages]
    for server in servers:
        threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        return drive(tmp_path, [{"url": f"http://127.0.0.1:{s.server_address[1]}/", "steps": steps}
                                for s, (_, steps) in zip(servers, pages)])
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture(scope="module")
def mixed(zipped, tmp_path_factory):
    """The same zip with task b's data recorded as (raw - 127.5) / 127.5 instead of raw / 255,
    converted with --joint: the joint signature cannot serve both tasks with one input."""
    root = tmp_path_factory.mktemp("mixed")
    shutil.copytree(zipped.parent / "zip", root / "zip")
    plan = json.loads((root / "zip" / "plan.json").read_text())
    plan["tasks"][1]["preprocessing"] = {"scale": 1 / 127.5, "mean": 127.5}
    (root / "zip" / "plan.json").write_text(json.dumps(plan))
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["convert", str(root / "zip"), "--out", str(root / "mixed.tflite"), "--joint"]) == 0
    return root / "mixed.tflite", out.getvalue()


def test_convert_joint_says_how_the_joint_signature_will_be_served(mixed, zipped):
    model, printed = mixed
    assert read_manifest(fb.load_model(model))["tasks"][1]["preprocessing"] == {"scale": 1 / 127.5, "mean": 127.5}
    assert ("joint signature 'all' written, but the tasks preprocess their inputs differently "
            "(a (raw - 0) * 0.00392157, b (raw - 127.5) * 0.00784314): the page and the app run each task on its "
            "own signature instead") in printed
    manifest = read_manifest(fb.load_model(zipped))
    assert convert_joint_serving(manifest) == ("joint signature 'all': every task in one run "
                                               "(the tasks preprocess their inputs alike)")


def test_joint_choice_runs_each_task_with_its_own_preprocessing_when_they_differ(mixed, zipped, tmp_path):
    """Picking 'all' on a file whose tasks preprocess differently: every task's answer is its own
    signature's on its own input (the host's LiteRT), not the joint signature's on task a's input.
    On the file whose tasks agree, 'all' stays one run of the joint signature."""
    require_browser()
    model, _ = mixed
    manifest = read_manifest(fb.load_model(model))
    n = len(SAMPLES["samples"])
    steps = [{"task": "all", "sample": i} for i in range(n)] + [{"task": "b"}, {"task": "all"}]
    # tasks that differ in the scale alone differ too: the same file with b's mean back at 0
    parsed = fb.parse_model(model.read_bytes())
    scale_only = json.loads(json.dumps(manifest))
    scale_only["tasks"][1]["preprocessing"] = {"scale": 1 / 127.5, "mean": 0.0}
    fb.set_metadata(parsed, MANIFEST_METADATA, json.dumps(scale_only).encode())
    (tmp_path / "scale_only.tflite").write_bytes(fb.serialize(parsed))
    page, agree, scaled = served_pages(tmp_path, [(model, steps), (zipped, [{"task": "all", "sample": 0}]),
                                                  (tmp_path / "scale_only.tflite", [{"task": "all", "sample": 1}])])
    assert page["state"] == "ready" and page["pageErrors"] == [] and page["consoleErrors"] == [], page
    assert len(page["steps"]) == len(steps), page.get("driverError")
    joint_on_a_input = []
    for step, s in zip(page["steps"], steps):
        i = s.get("sample", n - 1)
        assert_matches_host(model, manifest, step, s["task"], sample_pixels(i))
        if s["task"] == "all":
            assert step["ran"] == "a b" and "one by one (the tasks preprocess differently)" in step["latency"]
            # what the joint signature answers for b on a's preprocessing: not what b's own does
            x = model_input(sample_pixels(i), manifest["joint"]["input"], manifest["tasks"][0]["preprocessing"])
            joint_on_a_input.append(make_interpreter(model).get_signature_runner("all")(**{manifest["joint"]["input"]["name"]: x})["b"])
    expected_b = [host_outputs(model, manifest, "b", sample_pixels(s.get("sample", n - 1)))["b"]
                  for s in steps if s["task"] == "all"]
    assert max(float(np.abs(j - e).max()) for j, e in zip(joint_on_a_input, expected_b)) > 0.05
    assert agree["steps"][0]["ran"] == "all" and scaled["steps"][0]["ran"] == "a b"
    assert_matches_host(tmp_path / "scale_only.tflite", scale_only, scaled["steps"][0], "all", sample_pixels(1))
    assert_matches_host(zipped, read_manifest(fb.load_model(zipped)), agree["steps"][0], "all", sample_pixels(0))


def damaged_copies(model: Path, root: Path) -> dict[str, tuple[Path, str]]:
    """name → (file, what the page must say)."""
    data = model.read_bytes()
    (root / "truncated.tflite").write_bytes(data[: len(data) // 2])
    (root / "text.tflite").write_bytes(b"not a model\n" * 64)
    parsed = fb.parse_model(data)
    manifest = read_manifest(parsed)
    ghost = dict(manifest["tasks"][0], name="ghost", signature_key="ghost")
    fb.set_metadata(parsed, MANIFEST_METADATA, json.dumps(dict(manifest, tasks=manifest["tasks"] + [ghost])).encode())
    (root / "ghost.tflite").write_bytes(fb.serialize(parsed))
    return {"truncated": (root / "truncated.tflite", "truncated.tflite is damaged or truncated"),
            "text": (root / "text.tflite", "text.tflite is not a TFLite flatbuffer"),
            "plain": (baseline_path(model, "a"), "has no mtz-mobile manifest"),
            "ghost": (root / "ghost.tflite", "the manifest names signature 'ghost'")}


def test_damaged_or_plain_file_shows_a_message_and_no_page_error(zipped, tmp_path):
    require_browser()
    cases = damaged_copies(zipped, tmp_path)
    # served from threads of this process (the CLI's child process is the first test's): no start-up cost
    pages = served_pages(tmp_path, [(path, []) for path, _ in cases.values()])
    for (name, (_, message)), page in zip(cases.items(), pages):
        assert page["state"] == "error", (name, page)
        assert message in (page["error"] or ""), (name, page["error"])
        assert "\n" not in page["error"].strip(), name
        assert page["pageErrors"] == [] and page["consoleErrors"] == [], (name, page)


def test_serve_refuses_a_missing_file_and_serves_only_its_own_files(zipped, tmp_path, capsys):
    # the CLI is a thin layer: its parsed arguments are the API's keywords
    kwargs = api_kwargs(build_parser().parse_args(["serve", "m.tflite", "--host", "0.0.0.0", "--port", "9"]))
    assert kwargs == {"model": "m.tflite", "host": "0.0.0.0", "port": 9, "quiet": False}
    inspect.signature(serve).bind(**kwargs)
    assert main(["serve", str(tmp_path / "missing.tflite"), "--port", "0"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("mtz-mobile: error: ") and "missing.tflite does not exist" in err and "\n" not in err
    with serving([zipped], [tmp_path / "serve.log"]) as (url,):
        def status(path: str) -> int:
            try:
                with urllib.request.urlopen(url.rstrip("/") + path, timeout=10) as r:
                    return r.status
            except urllib.error.HTTPError as exc:
                return exc.code

        info = json.loads(urllib.request.urlopen(url + "manifest.json", timeout=10).read())
        assert info["error"] is None and info["baselines"] == {"a": baseline_path(zipped, "a").name,
                                                               "b": baseline_path(zipped, "b").name}
        assert urllib.request.urlopen(url + "model.tflite", timeout=10).read() == zipped.read_bytes()
        assert status("/vendor/@litertjs/core/wasm/litert_wasm_internal.wasm") == 200
        assert status("/baseline/a.tflite") == 200
        for path in ("/vendor/playwright-core/package.json", "/vendor/@litertjs/core/%2e%2e/%2e%2e/playwright-core/package.json",
                     "/%2e%2e/server.py", "/baseline/c.tflite", "/drive.mjs"):
            assert status(path) == 404, path


def test_bench_runtime_web_writes_the_browser_section(zipped, tmp_path, capsys):
    """`mtz-mobile bench MODEL --runtime web`: the zipped file and its baselines in fresh browsers, the
    report's browser section with each figure side by side; baselines elsewhere are refused."""
    require_browser()
    out = tmp_path / "bench"
    assert main(["bench", str(zipped), "--runtime", "web", "--trials", "1", "--runs", "5", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    rows = report["figures"]
    separate = sum(baseline_path(zipped, t).stat().st_size for t in ("a", "b"))
    assert rows["file bytes"] == {"zipped": zipped.stat().st_size, "separate": separate,
                                  "ratio": zipped.stat().st_size / separate}
    assert {"latency a, median (ms)", "latency b, median (ms)", "load: compile from bytes (ms)"} <= set(rows)
    assert all(r["zipped"] > 0 and r["ratio"] > 0 for name, r in rows.items() if name.startswith("latency"))
    assert not [e for t in report["raw"] for e in t["pageErrors"] + t["consoleErrors"]]
    # each task timed on its own signature: its output on the bench's sample is the host's for that task
    manifest = read_manifest(fb.load_model(zipped))
    for trial in report["raw"]:
        for task in ("a", "b"):
            file = zipped if trial["set"] == "zipped" else baseline_path(zipped, task)
            assert trial["latency"]["signatures"][task] == task
            want = host_outputs(file, manifest, task, sample_pixels(0))[task].ravel()
            np.testing.assert_allclose(trial["latency"]["outputs"][task], want, rtol=RTOL, atol=1e-7,
                                       err_msg=f"{trial['set']} {task}")
    assert "## In the browser (LiteRT.js)" in (out / "report.md").read_text()
    elsewhere = tmp_path / "a.tflite"
    shutil.copyfile(baseline_path(zipped, "a"), elsewhere)
    capsys.readouterr()
    assert main(["bench", str(zipped), "--runtime", "web", "--baselines", str(elsewhere), "--out", str(tmp_path / "x")]) == 2
    err = capsys.readouterr().err
    assert "baselines beside the model" in err and not (tmp_path / "x").exists()

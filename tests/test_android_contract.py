"""The Android demo against the Python side, for what tests/test_kotlin_jvm.py cannot check by
running the app's Kotlin on the JVM: the converter's manifest is what the schema says, the shared
names are spelled only in Contract.kt, the Gradle build and the Android-only files (which cannot be
compiled here) use the application id and the JVM-tested code, and `mtz-mobile export-android` (mtz_mobile/android_assets.py)
writes what the app reads."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import jsonschema
import numpy as np
import pytest

from converters import convert_zip
from converters import flatbuffer as fb
from mtz_mobile import contract as names
from converters.manifest import MANIFEST_FORMAT, load_schema, read_manifest
from mtz_mobile.graph import keras_io
from mtz_mobile.zipper.config import RetrainSettings
from mtz_mobile.zipper import ZipConfig, zip_networks

from mtz_mobile import android_assets as tool

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "android_demo"
APP = DEMO / "app"
SRC = APP / "src" / "main" / "java" / "dev" / "mtzmobile" / "demo"
ANDROID_TEST = APP / "src" / "androidTest" / "java" / "dev" / "mtzmobile" / "demo"
KOTLIN = {p.name: p.read_text() for p in sorted(SRC.glob("*.kt"))}



@pytest.fixture(scope="module")
def converted(tmp_path_factory, small_models, fmnist):
    """A real zip of the two small models, converted with the joint signature."""
    root = tmp_path_factory.mktemp("android")
    read = keras_io.read_model
    chains = {n: read(p) for n, p in zip(("a", "b"), small_models)}
    cfg = ZipConfig(shared=["all"], calibration_samples=500,
                    retrain=RetrainSettings(iterations=0, batch_size=64, learning_rate=1e-3))
    zip_networks(chains, {"a": fmnist, "b": fmnist}, cfg, root / "zipped", progress=False)
    return convert_zip(root / "zipped", root / "model.tflite", joint=True).path


# --- (a) the converter's manifest is what the schema says --------------------------------------

def test_converted_manifest_validates_against_the_schema(converted):
    manifest = read_manifest(fb.load_model(converted))
    jsonschema.validate(manifest, load_schema())
    assert manifest["joint"] is not None and manifest["joint"]["signature_key"] == names.JOINT_KEY
    for task in manifest["tasks"]:
        assert task["input"]["name"] == names.INPUT_NAME and task["output"]["name"] == names.OUTPUT_NAME
        assert task["signature_key"] == task["name"]


# --- (b) the names both sides rely on, the build, the Android-only files ---------------------------

# Manifest field reads (Manifest.kt, Samples.kt): `o.getString("input")` names a field, not a shared name.
JSON_READ = re.compile(r"\.(get|opt)(String|Int|Long|Double|Boolean|JSONObject|JSONArray)\(\"([^\"]*)\"")


def test_the_python_names_equal_the_schemas():
    """Contract.kt against these: tests/jvm ContractTest."""
    root = load_schema()
    assert names.JOINT_KEY == root["properties"]["joint"]["oneOf"][1]["properties"]["signature_key"]["const"]
    assert MANIFEST_FORMAT == root["properties"]["format"]["const"]


def test_the_names_live_in_contract_kt_only():
    """Outside Contract.kt no Kotlin source spells a shared name (manifest field reads aside)."""
    shared = (names.INPUT_NAME, names.OUTPUT_NAME, names.JOINT_KEY, names.MANIFEST_METADATA, names.APP_PACKAGE,
              names.DEVICE_MODEL_NAME, MANIFEST_FORMAT, tool.SAMPLES_NAME, tool.SAMPLES_FORMAT, names.XNNPACK_CACHE_SUFFIX)
    contract_kt = KOTLIN["Contract.kt"]
    literals = {json.dumps(v) for v in shared}
    assert all(f"= {literal}" in contract_kt for literal in literals)
    for name, source in KOTLIN.items():
        if name == "Contract.kt":
            continue
        code = re.sub(r"/\*.*?\*/", "", source, flags=re.S)  # comments may name anything
        stripped = JSON_READ.sub("", re.sub(r"^\s*//.*$", "", code, flags=re.M))
        for literal in literals:
            assert literal not in stripped, f"{name} spells {literal}: use the Contract constant"


def test_the_gradle_build_and_sources_use_the_application_id():
    gradle = (APP / "build.gradle.kts").read_text()
    assert re.search(r'applicationId = "([^"]+)"', gradle).group(1) == names.APP_PACKAGE
    assert re.search(r'namespace = "([^"]+)"', gradle).group(1) == names.APP_PACKAGE
    assert re.search(r"minSdk = (\d+)", gradle) and int(re.search(r"minSdk = (\d+)", gradle).group(1)) >= 24
    assert 'noCompress.add("tflite")' in gradle  # the bundled model must be mappable (openFd)
    assert SRC.parts[-3:] == tuple(names.APP_PACKAGE.split("."))
    for path in list(SRC.glob("*.kt")) + list(ANDROID_TEST.glob("*.kt")):
        assert re.search(r"^package (\S+)$", path.read_text(), re.M).group(1) == names.APP_PACKAGE, path
    catalog = (DEMO / "gradle" / "libs.versions.toml").read_text()
    assert re.search(r'litert = \{ group = "com\.google\.ai\.edge\.litert", name = "litert", version\.ref = "litert" \}',
                     catalog)
    assert re.search(r'^litert = "\d+\.\d+\.\d+"$', catalog, re.M), "pin the LiteRT version"
    # the weight cache's stamp names the runtime the app is built with
    assert re.search(r'const val LITERT_VERSION = "([^"]+)"', (SRC / "ZippedModel.kt").read_text()).group(1) == \
        re.search(r'^litert = "([^"]+)"$', catalog, re.M).group(1)
    wrapper = (DEMO / "gradle" / "wrapper" / "gradle-wrapper.properties").read_text()
    assert re.search(r"distributionUrl=.*gradle-\d+\.\d+(\.\d+)?-bin\.zip", wrapper)


def test_a_configuration_change_keeps_the_compiled_model():
    """Fold, resize and rotation keep the activity (configChanges); what recreates it (density, dark
    mode) hands the ModelHost on instead of compiling again (the JVM's LifecycleTest runs ModelHost)."""
    manifest = (APP / "src" / "main" / "AndroidManifest.xml").read_text()
    changes = set(re.search(r'android:configChanges="([^"]+)"', manifest).group(1).split("|"))
    assert {"orientation", "screenSize", "screenLayout", "smallestScreenSize", "keyboardHidden"} <= changes
    activity = KOTLIN["MainActivity.kt"]
    assert "override fun onRetainNonConfigurationInstance(): Any = host" in activity
    assert "lastNonConfigurationInstance as? ModelHost" in activity
    assert "if (!isChangingConfigurations) host.release()" in activity
    assert "host.attach {" in activity and "ZippedModel.open" not in activity  # every load goes through the host


# Gradle's published SHA-256 of the 8.14.3 wrapper jar and distribution
# (services.gradle.org/distributions/gradle-8.14.3-wrapper.jar.sha256, -bin.zip.sha256)
GRADLE_WRAPPER_JAR_SHA256 = "7d3a4ac4de1c32b59bc6a4eb8ecb8e612ccd0cf1ae1e99f66902da64df296172"
GRADLE_BIN_SHA256 = "bd71102213493060956ec229d946beee57158dbd89d0e62b91bca0fa2c5f3531"


def test_the_gradle_wrapper_is_gradles_and_verifies_what_it_downloads(tmp_path):
    """The committed wrapper jar is Gradle's official 8.14.3 one, the properties pin the
    distribution and its checksum, and ``./gradlew`` really runs the jar: pointed at a local file
    that is not the pinned distribution, it fetches it and refuses it on the checksum — offline."""
    jar = DEMO / "gradle" / "wrapper" / "gradle-wrapper.jar"
    assert hashlib.sha256(jar.read_bytes()).hexdigest() == GRADLE_WRAPPER_JAR_SHA256
    properties = (DEMO / "gradle" / "wrapper" / "gradle-wrapper.properties").read_text()
    assert "distributionUrl=https\\://services.gradle.org/distributions/gradle-8.14.3-bin.zip" in properties
    assert f"distributionSha256Sum={GRADLE_BIN_SHA256}" in properties
    for script in ("gradlew", "gradlew.bat"):
        assert "gradle-wrapper.jar" in (DEMO / script).read_text()
    if shutil.which("java") is None:
        pytest.fail("no java on PATH: tools/install.sh installs default-jre-headless")
    project = tmp_path / "project"
    shutil.copytree(DEMO / "gradle" / "wrapper", project / "gradle" / "wrapper")
    shutil.copy2(DEMO / "gradlew", project / "gradlew")
    fake = tmp_path / "gradle-8.14.3-bin.zip"
    fake.write_bytes(b"not a Gradle distribution")
    (project / "gradle" / "wrapper" / "gradle-wrapper.properties").write_text(
        re.sub(r"distributionUrl=.*", f"distributionUrl={fake.as_uri()}", properties))
    run = subprocess.run(["sh", str(project / "gradlew"), "--version"], cwd=project, capture_output=True, text=True,
                         timeout=120, env={"PATH": os.environ["PATH"], "GRADLE_USER_HOME": str(tmp_path / "home")})
    out = run.stdout + run.stderr
    assert run.returncode != 0 and "Verification of Gradle distribution failed" in out, out[-2000:]
    assert GRADLE_BIN_SHA256 in out, out[-2000:]


def test_generated_assets_stay_out_of_git():
    ignored = (DEMO / ".gitignore").read_text().split()
    rel = (REPO / tool.DEFAULT_ASSETS).relative_to(DEMO).as_posix()
    assert f"{rel}/{names.DEVICE_MODEL_NAME}" in ignored
    assert f"{rel}/{tool.SAMPLES_NAME}" in ignored
    assert REPO / tool.DEFAULT_ASSETS == APP / "src" / "main" / "assets"


def test_the_app_preprocesses_as_the_manifest_says():
    """ModelInput.preprocess itself is run against app_input on the JVM (tests/test_kotlin_jvm.py);
    the Android-only ZippedModel.kt, which cannot be compiled here, must feed what it returns."""
    root = load_schema()
    assert "(raw value - mean) * scale" in root["$defs"]["task"]["properties"]["preprocessing"]["description"]
    zipped = KOTLIN["ZippedModel.kt"]
    assert len(re.findall(r"\.writeFloat\(ModelInput\.preprocess\(raw, ", zipped)) == 2  # run, runJoint
    assert len(re.findall(r"\.writeFloat\(", zipped)) == 2
    assert "ManifestParser.readEmbedded(file.bytes, file.description)" in zipped
    assert "BenchmarkStats.summarize(" in KOTLIN["Benchmark.kt"]
    raw = np.arange(6, dtype=np.float32)
    x = tool.app_input(raw, {"mean": 1.0, "scale": 0.5}, [1, 6])
    assert x.dtype == np.float32 and np.array_equal(x, ((raw - 1) * 0.5)[None])


# --- (c) the exporter writes what the app reads ---------------------------------------------------

def test_exported_assets_hold_what_the_app_reads(converted, tmp_path):
    paths = tool.export_assets(converted, tmp_path, per_source=6)
    assert paths["model"].read_bytes() == converted.read_bytes()
    samples = json.loads(paths["samples"].read_text())
    manifest = read_manifest(fb.load_model(converted))

    # the app's SampleSet.parse reads such a file on the JVM: tests/test_kotlin_jvm.py
    assert samples["format"] == tool.SAMPLES_FORMAT
    assert samples["model_sha256"] == hashlib.sha256(converted.read_bytes()).hexdigest()
    assert len(samples["samples"]) == 6
    for s in samples["samples"]:
        assert all(isinstance(v, int) and 0 <= v <= 255 for v in s["pixels"])
        for task in manifest["tasks"]:
            assert int(np.prod(task["input"]["shape"])) == len(s["pixels"]) == int(np.prod(s["shape"]))
            assert s["truth"][task["name"]] in task["labels"]
            out = np.asarray(s["expected"][task["name"]])
            assert out.shape == (int(np.prod(task["output"]["shape"])),)
            assert abs(out.sum() - 1) < 1e-4
    # one image per class first: six different true labels
    assert len({s["truth"]["a"] for s in samples["samples"]}) == 6


def test_a_coarse_task_gets_its_own_truth_for_the_same_image(converted):
    """Tasks on the same images with different label spaces share each sample, each with its label."""
    from mtz_mobile.data import COARSE_LABELS, COARSE_OF_FINE, FASHION_LABELS

    manifest = read_manifest(fb.load_model(converted))
    manifest["tasks"][1]["labels"] = list(COARSE_LABELS)  # as a coarse model's manifest says
    specs = tool.task_specs(manifest)
    assert specs == {"a": "fashion-mnist", "b": "fashion-mnist-coarse"}
    samples = tool.build_samples(converted.read_bytes(), manifest, specs, per_source=10)["samples"]
    assert len(samples) == 10 and {s["source"] for s in samples} == {"fashion-mnist"}
    for s in samples:
        fine = FASHION_LABELS.index(s["truth"]["a"])
        assert s["truth"]["b"] == COARSE_LABELS[COARSE_OF_FINE[fine]]
    assert {s["truth"]["a"] for s in samples} == set(FASHION_LABELS)
    assert tool.pick_indices(np.array([3, 1, 3, 0, 1]), 4) == [0, 1, 3, 4]


def test_export_refuses_a_model_without_manifest(converted, tmp_path):
    from mtz_mobile.errors import MTZError

    model = fb.parse_model(converted.read_bytes())
    model.metadata = None
    bare = tmp_path / "bare.tflite"
    bare.write_bytes(fb.serialize(model))
    with pytest.raises(MTZError, match="mtz_manifest"):
        tool.export_assets(bare, tmp_path / "assets")
    assert not (tmp_path / "assets" / names.DEVICE_MODEL_NAME).exists()

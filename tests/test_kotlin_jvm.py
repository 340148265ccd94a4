"""The Android app's pure-Kotlin parts (manifest reader and parser, Contract names, input
preprocessing, samples, benchmark statistics, the weight cache, and the lifecycle and failure paths
of the model, its host and the benchmark behind a small interface over LiteRT), compiled with JetBrains' Kotlin compiler and run
under JUnit 4 on the JVM against real .tflite files the converter writes here, damaged and edited
copies of them, and the Python side's own numbers.

The JUnit tests are Kotlin, in tests/jvm/src; the cases they run are in the plan this module writes
(-Dmtz.plan); tests/jvm/kotlin_cases.py builds them. Needs the toolchain tools/install.sh installs
(tests/jvm/node_modules' kotlin-compiler, Debian's junit4, libhamcrest-java, libandroid-json-java,
a Java 17+ runtime): without it every test here fails with a one-line reason, none is skipped. The compiled jar
is cached in tests/jvm/build/ under the hash of its sources."""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
JVM = REPO / "tests" / "jvm"
APP_SRC = REPO / "android_demo" / "app" / "src" / "main" / "java" / "dev" / "mtzmobile" / "demo"
KOTLIN_HOME = JVM / "node_modules" / "kotlin-compiler"
KOTLINC = KOTLIN_HOME / "bin" / "kotlinc"
STDLIB = KOTLIN_HOME / "lib" / "kotlin-stdlib.jar"
CACHE = JVM / "build"
JARS = {  # what: path (Debian's packages, installed by tools/install.sh)
    "junit4": Path("/usr/share/java/junit4.jar"),
    "libhamcrest-java": Path("/usr/share/java/hamcrest.jar"),
    "libandroid-json-java": Path("/usr/share/java/com.android.json.jar"),
}
ANDROID_IMPORT = re.compile(r"^import (android|androidx|com\.google\.ai\.edge)\.", re.M)
# The Android-free app files the JVM tests exercise (every other app file imports Android or LiteRT).
PURE = {"Contract.kt", "Manifest.kt", "TfliteMetadata.kt", "ModelInput.kt", "BenchmarkStats.kt", "Samples.kt",
        "WeightCache.kt", "Engine.kt", "ModelFile.kt", "ZippedModel.kt", "Benchmark.kt", "ModelHost.kt"}
# The files that import Android or LiteRT: the activity, the Context/Debug calls, LiteRT behind Engine.
ANDROID_ONLY = {"MainActivity.kt", "AndroidPlatform.kt", "LiteRtEngine.kt"}
MAIN_CLASS = "dev.mtzmobile.demo.JvmTests"


def _load_cases():
    spec = importlib.util.spec_from_file_location("kotlin_cases", JVM / "kotlin_cases.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


cases = _load_cases()


def pure_sources() -> list[Path]:
    return sorted(p for p in APP_SRC.glob("*.kt") if not ANDROID_IMPORT.search(p.read_text()))


def test_android_free_app_code_is_in_android_free_files():
    """What the JVM compiles: the app files that import neither Android nor LiteRT."""
    names = {p.name for p in pure_sources()}
    assert names == PURE, f"Android-free app files changed: {sorted(names ^ PURE)}; update PURE and the JVM tests"
    assert {p.name for p in APP_SRC.glob("*.kt")} - names == ANDROID_ONLY
    litert = {p.name for p in APP_SRC.glob("*.kt") if "import com.google.ai.edge.litert" in p.read_text()}
    assert litert == {"LiteRtEngine.kt"}, f"LiteRT imported outside its adapter: {litert}"


# --- the toolchain and the compiled jar ----------------------------------------------------------

def missing_toolchain() -> str | None:
    """One line naming what is missing, or None."""
    missing = [f"{what} ({path})" for what, path in JARS.items() if not path.is_file()]
    if not (KOTLINC.is_file() and STDLIB.is_file()):
        missing.insert(0, f"the Kotlin compiler ({KOTLINC}: npm ci in tests/jvm)")
    if shutil.which("java") is None:  # kotlinc and JUnit need a Java runtime (17+), not javac
        missing.append("a Java runtime (java not on PATH)")
    if missing:
        return f"the JVM test toolchain is missing: {', '.join(missing)}; run tools/install.sh"
    return None


def classpath(*extra: Path) -> str:
    return os.pathsep.join(str(p) for p in (*extra, STDLIB, *JARS.values()))


def compile_tests() -> Path:
    """The app's Android-free sources and the JUnit tests, compiled once per content (cached jar)."""
    sources = pure_sources() + sorted((JVM / "src").rglob("*.kt"))
    key = hashlib.sha256(json.loads((KOTLIN_HOME / "package.json").read_text())["version"].encode())
    for path in sources:
        key.update(str(path.relative_to(REPO)).encode() + b"\0" + path.read_bytes() + b"\0")
    for path in JARS.values():
        key.update(f"{path.resolve()}:{path.stat().st_size}".encode())
    jar = CACHE / f"jvm-tests-{key.hexdigest()[:20]}.jar"
    if jar.is_file():
        return jar
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = jar.with_name(f"{jar.stem}.{os.getpid()}.partial.jar")
    proc = subprocess.run([str(KOTLINC), "-jvm-target", "17", "-nowarn", "-cp", classpath(), "-d", str(partial),
                           *map(str, sources)], capture_output=True, text=True, timeout=600)
    if proc.returncode != 0 or not partial.is_file():
        partial.unlink(missing_ok=True)
        pytest.fail(f"kotlinc failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}", pytrace=False)
    os.replace(partial, jar)
    for old in CACHE.glob("jvm-tests-*.jar"):  # older versions of the sources
        if old != jar and not old.name.endswith(".partial.jar"):
            old.unlink(missing_ok=True)
    return jar


# --- the files and the plan ----------------------------------------------------------------------

@pytest.fixture(scope="module")
def plan(tmp_path_factory, request):
    if missing_toolchain():  # do not train and convert models for tests that cannot run
        return None
    root = tmp_path_factory.mktemp("kotlin_jvm")
    return cases.write_plan(root, request.getfixturevalue("small_models"), request.getfixturevalue("fmnist"))


@pytest.fixture(scope="module")
def junit(plan):
    """JUnit's result per test ({class: {test: (ok, message)}}), or the one-line reason it could not run."""
    reason = missing_toolchain()
    if reason:
        return reason
    jar = compile_tests()
    results = plan["path"].with_name("results.json")
    proc = subprocess.run(["java", "-Xss1m", f"-Dmtz.plan={plan['path']}", f"-Dmtz.results={results}",
                           "-cp", classpath(jar), MAIN_CLASS], capture_output=True, text=True, timeout=300)
    if not results.is_file():
        return f"JUnit wrote no results (exit {proc.returncode}): {(proc.stderr or proc.stdout).strip()[-2000:]}"
    out: dict[str, dict[str, tuple[bool, str]]] = {}
    for t in json.loads(results.read_text())["tests"]:
        out.setdefault(t["class"], {})[t["test"]] = (t["ok"], t.get("message", ""))
    return out


def check(junit, plan, test_class: str, group: str | None = None) -> int:
    """Every case of the plan ran in ``test_class`` and passed; returns how many."""
    if isinstance(junit, str):
        pytest.fail(junit, pytrace=False)
    ran = junit.get(test_class, {})
    if group is not None:
        ran = {k: v for k, v in ran.items() if f"[{group}/" in k}
    failed = [f"{name}: {message}" for name, (ok, message) in sorted(ran.items()) if not ok]
    assert not failed, f"{len(failed)} of {len(ran)} JUnit tests failed:\n" + "\n".join(failed)
    want = plan["counts"][test_class] if group is None else plan["counts"][f"{test_class}/{group}"]
    assert len(ran) == want, f"{test_class}: {len(ran)} JUnit tests ran, the plan has {want}"
    return len(ran)


def test_the_jvm_toolchain_is_installed():
    reason = missing_toolchain()
    if reason:
        pytest.fail(reason, pytrace=False)


def test_contract_names_equal_the_python_constants(junit, plan):
    check(junit, plan, "ContractTest")


def test_the_reader_gives_each_converted_models_manifest(junit, plan):
    """Two tasks with and without `all`, fp16, three tasks, the manifest after the flatbuffer: the
    Kotlin reader's manifest equals the JSON the converter embedded, value and type."""
    assert check(junit, plan, "ModelFilesTest", "good") >= 5


def test_the_app_keeps_or_knowingly_ignores_every_field_the_converter_writes(plan):
    """A field renamed on one side only cannot hide as 'optional and absent' from the comparison above."""
    if plan is None:
        pytest.fail(missing_toolchain(), pytrace=False)
    for name, manifest in plan["manifests"].items():
        unaccounted = cases.unaccounted_fields(manifest)
        assert not unaccounted, f"{name}: {unaccounted} neither read by the app (APP_VIEW) nor in APP_IGNORES"


def test_damaged_files_get_the_readers_own_exceptions(junit, plan):
    """Truncated, another identifier, offsets and buffer indices out of range, no manifest, random
    bytes: MalformedModelException or ManifestException, never another exception."""
    assert check(junit, plan, "ModelFilesTest", "damaged") >= 10
    check(junit, plan, "FuzzTest")


def test_schema_valid_manifests_are_read_and_invalid_ones_rejected(junit, plan):
    """Each field of a real manifest removed in turn (the app reads every schema-valid one, and
    rejects with ManifestException one missing a required field it reads), and hand-made
    violations of the schema."""
    assert check(junit, plan, "ModelFilesTest", "schema") >= 40
    assert not plan["schema_accepts"], f"the schema accepts these hand-made violations: {plan['schema_accepts']}"


def test_app_input_equals_the_python_sides(junit, plan):
    check(junit, plan, "PreprocessingTest")
    check(junit, plan, "ModelInputTest")


def test_the_app_reads_exported_samples(junit, plan):
    check(junit, plan, "SamplesTest")


def test_benchmark_statistics_equal_pythons(junit, plan):
    check(junit, plan, "BenchmarkStatsTest")


def test_the_apps_weight_cache_check_agrees_with_the_benchs(junit, plan):
    """The app's WeightCache.check on a real XNNPACK cache file and damaged copies (model changed,
    truncated, a byte flipped, no stamp, an unreadable stamp, another runtime, no cache) says what
    the bench's check says and deletes what is not valid; a stamp the app writes, the bench accepts."""
    from mtz_mobile.bench import weight_cache

    check(junit, plan, "WeightCacheTest")
    stamped = next(c for c in plan["weight_caches"] if c["expect"] == "stamp")
    assert weight_cache.check(stamped["model"]) == "valid"


# --- the app's failure paths and lifecycle (LifecycleTest: a double stands for LiteRT only) -------

def check_lifecycle(junit, group: str) -> None:
    if isinstance(junit, str):
        pytest.fail(junit, pytrace=False)
    ran = junit.get("LifecycleTest", {})
    assert set(ran) == {t for names in cases.LIFECYCLE_TESTS.values() for t in names}, sorted(ran)
    failed = [f"{name}: {ran[name][1]}" for name in cases.LIFECYCLE_TESTS[group] if not ran[name][0]]
    assert not failed, "\n".join(failed)


def test_native_and_memory_errors_become_one_line_and_the_worker_survives(junit):
    """UnsatisfiedLinkError and OutOfMemoryError from the compile: "The model could not be loaded: …"
    in one line, and the next load works."""
    check_lifecycle(junit, "errors")


def test_every_resource_is_released_on_failure(junit):
    """A stamp that cannot be written closes the compiled model; an output buffer that cannot be
    created closes the input buffer made before it."""
    check_lifecycle(junit, "leaks")


def test_a_failed_benchmark_leaves_the_tasks_running(junit):
    check_lifecycle(junit, "benchmark")


def test_the_benchmark_reports_hashing_compile_and_first_inference_apart_at_1_and_n_threads(junit):
    check_lifecycle(junit, "timings")
    check_lifecycle(junit, "threads")


def test_cache_files_xnnpack_rewrites_or_extends_are_stamped_again(junit, plan):
    """A stamped cache XNNPACK rejected and rebuilt is stamped again (not rebuilt on every start); a
    cache XNNPACK flagged stale at close (weights missing from it) or left unfinished (header version
    0) is named so, not "corrupted", and rebuilt (WeightCacheTest's xnnpack_* cases, on LiteRT's file)."""
    check_lifecycle(junit, "cache_states")
    for name in ("xnnpack_stale", "xnnpack_unfinished"):
        ok, message = junit["WeightCacheTest"][f"check_cache[{name}]"]
        assert ok, message


def test_one_compile_survives_recreation_and_one_writer_holds_the_cache_file(junit):
    check_lifecycle(junit, "recreation")

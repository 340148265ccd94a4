"""`mtz-mobile phone-check`: what the Android demo claims, checked on a phone in a few minutes.

It installs the debug APKs when they are built (android_demo/app/build/outputs/apk/), pushes the
model into the app's files (checksum-verified), starts the app twice, runs the instrumented tests
(ModelSignaturesTest and PhoneClaimsTest), and judges what the app and the tests logged:

    outputs      every signature runs, and the device's outputs are within 1e-4 of the host's
    warm_start   the second start finds its XNNPACK weight cache file "valid"
    cache_kept   the cache file's size and sha256 are the same after every signature ran
    file_backed  loading and running grows RssFile at least FILE_BACKED_RATIO x RssAnon
    no_recompile twenty task switches, one compile
    pss_flat     PSS over ten Reload + Benchmark cycles grows at most PSS_FLAT_KB (or PSS_FLAT_FRACTION)
    no_cache_log no "weight cache could neither be loaded" and no "stale" line in logcat

Each claim gets PASS, FAIL or NOT CHECKED (and why). The thresholds live here, not on the phone.
"""

from __future__ import annotations

import json
import re
import shlex
import time
from dataclasses import dataclass
from pathlib import Path

from .contract import APP_PACKAGE, DEVICE_MODEL_NAME, XNNPACK_CACHE_SUFFIX
from .device import Adb, check_abi, device_info, push_to_app
from .errors import MTZError

APK_DIR = Path(__file__).resolve().parents[1] / "android_demo" / "app" / "build" / "outputs" / "apk"
APP_APK = Path("debug") / "app-debug.apk"
TEST_APK = Path("androidTest") / "debug" / "app-debug-androidTest.apk"
ACTIVITY = f"{APP_PACKAGE}/.MainActivity"
RUNNER = f"{APP_PACKAGE}.test/androidx.test.runner.AndroidJUnitRunner"
TEST_CLASSES = (f"{APP_PACKAGE}.ModelSignaturesTest", f"{APP_PACKAGE}.PhoneClaimsTest")
HOST_MATCH_TEST = (f"{APP_PACKAGE}.ModelSignaturesTest", "deviceMatchesTheHostOnTheExportedSamples")
SIGNATURES_TEST = (f"{APP_PACKAGE}.ModelSignaturesTest", "everySignatureInTheManifestRuns")
CACHE_FILE = f"files/{DEVICE_MODEL_NAME}{XNNPACK_CACHE_SUFFIX}"
LOAD_TAG, CHECK_TAG = "MtzLoad", "MtzCheck"
# XNNPACK's own words (LiteRT 2.2.0, tflite/delegates/xnnpack/): the cache unusable, or flagged stale
CACHE_TROUBLE = re.compile(r"weight cache could neither be loaded|Cache file is stale|marked as stale", re.I)

FILE_BACKED_RATIO = 4.0    # RssFile growth over RssAnon growth, load + one run of each signature
PSS_FLAT_KB = 2048         # PSS growth allowed from the 2nd to the 10th Reload + Benchmark cycle…
PSS_FLAT_FRACTION = 0.02   # …or this fraction of the 2nd cycle's PSS, whichever is larger
START_TIMEOUT_S = 90       # the app's load line after `am start`

# AndroidJUnitRunner's status codes (InstrumentationResultPrinter)
_STATUS = {0: "passed", -1: "error", -2: "failed", -3: "ignored", -4: "skipped (assumption)"}


@dataclass
class Verdict:
    claim: str
    state: str  # PASS, FAIL, NOT CHECKED
    detail: str

    def line(self) -> str:
        return f"{self.state:<11} {self.claim:<12} {self.detail}"


# --- parsing what the device printed ------------------------------------------------------------

def parse_instrumentation(text: str) -> dict:
    """`am instrument -r` output: {(class, test): (status, message)}, and the run's result line."""
    tests, current = {}, {}
    result = None
    for line in text.splitlines():
        if line.startswith("INSTRUMENTATION_STATUS: "):
            key, _, value = line[len("INSTRUMENTATION_STATUS: "):].partition("=")
            current[key] = value  # a stack's first line: the exception and its message
        elif line.startswith("INSTRUMENTATION_STATUS_CODE: "):
            code = int(line.split(":", 1)[1])
            name = (current.get("class", ""), current.get("test", ""))
            if code != 1:
                message = re.sub(r"^[\w.$]+(Exception|Error): ", "", (current.get("stack") or "").strip())
                tests[name] = (_STATUS.get(code, f"code {code}"), message)
            current = {}
        elif line.startswith(("OK (", "FAILURES!!!")) or "INSTRUMENTATION_FAILED" in line or "Process crashed" in line:
            result = line.strip()
    return {"tests": tests, "result": result}


def tag_lines(logcat: str, tag: str) -> list[dict]:
    """The JSON objects logged under ``tag``, in order (logcat's threadtime or brief format)."""
    out = []
    for line in logcat.splitlines():
        m = re.search(rf"\b[VDIWEF][ /]{re.escape(tag)}\s*(?:\(\s*\d+\))?\s*: (\{{.*\}})\s*$", line)
        if m:
            try:
                out.append(json.loads(m.group(1)))
            except json.JSONDecodeError:
                continue
    return out


# --- judging -----------------------------------------------------------------------------------

def judge_outputs(tests: dict) -> Verdict:
    every = tests.get(SIGNATURES_TEST)
    host = tests.get(HOST_MATCH_TEST)
    if every is None or every[0] != "passed":
        return Verdict("outputs", "FAIL", f"{SIGNATURES_TEST[1]}: {every[0] + ': ' + every[1] if every else 'did not run'}")
    if host is None:
        return Verdict("outputs", "FAIL", f"{HOST_MATCH_TEST[1]} did not run")
    if host[0] == "passed":
        return Verdict("outputs", "PASS", "every signature ran; outputs within 1e-4 of the host's on the exported samples")
    if host[0].startswith("skipped"):
        return Verdict("outputs", "NOT CHECKED", f"every signature ran; no host comparison: {host[1]}")
    return Verdict("outputs", "FAIL", f"{host[0]}: {host[1]}")


def judge_warm_start(loads: list[dict], pushed_sha256: str) -> Verdict:
    if len(loads) < 2:
        return Verdict("warm_start", "FAIL", f"the app logged {len(loads)} load(s) for two starts")
    first, second = loads[-2], loads[-1]
    if not second.get("ok"):
        return Verdict("warm_start", "FAIL", f"second start: {second.get('error')}")
    if second.get("model_sha256") != pushed_sha256:
        return Verdict("warm_start", "FAIL", f"the app loaded another model (sha256 {str(second.get('model_sha256'))[:12]}…, "
                                            f"pushed {pushed_sha256[:12]}…)")
    found = second.get("xnnpack_weight_cache_found")
    state = "PASS" if found == "valid" else "FAIL"
    return Verdict("warm_start", state, f"first start: {first.get('xnnpack_weight_cache_found')}; second start: {found}")


def judge_cache_kept(before: tuple, after: tuple, tests: dict) -> Verdict:
    if before[0] is None:
        return Verdict("cache_kept", "FAIL", f"no {CACHE_FILE} after two starts")
    ran = tests.get(SIGNATURES_TEST, ("did not run",))[0]
    if ran != "passed":
        return Verdict("cache_kept", "NOT CHECKED", f"the signatures did not all run ({ran})")
    if before == after:
        return Verdict("cache_kept", "PASS", f"{before[1]:,} bytes, sha256 {before[0][:12]}… before and after")
    return Verdict("cache_kept", "FAIL", f"{before[1]} bytes {before[0][:12]}… -> {after[1]} bytes {(after[0] or 'gone')[:12]}…")


def judge_checks(checks: list[dict]) -> list[Verdict]:
    """PhoneClaimsTest's lines: memory (file_backed), switch (no_recompile), cycles (pss_flat)."""
    by = {c.get("check"): c for c in checks}
    out = []
    m = by.get("memory")
    if m is None:
        out.append(Verdict("file_backed", "FAIL", "PhoneClaimsTest logged no memory line"))
    else:
        d_file = (m["after"]["rss_file_kb"] or 0) - (m["before"]["rss_file_kb"] or 0)
        d_anon = (m["after"]["rss_anon_kb"] or 0) - (m["before"]["rss_anon_kb"] or 0)
        ok = d_file >= FILE_BACKED_RATIO * max(d_anon, 1)
        out.append(Verdict("file_backed", "PASS" if ok else "FAIL",
                           f"load + one run per signature ({m.get('found')}): RssFile +{d_file:,} kB, RssAnon +{d_anon:,} kB "
                           f"(needs >= {FILE_BACKED_RATIO:g}x)"))
    s = by.get("switch")
    if s is None:
        out.append(Verdict("no_recompile", "FAIL", "PhoneClaimsTest logged no switch line"))
    else:
        out.append(Verdict("no_recompile", "PASS" if s["compiles"] == 1 else "FAIL",
                           f"{s['switches']} switches over {s['tasks']} tasks: {s['compiles']} compile(s)"))
    c = by.get("cycles")
    if c is None or len(c["pss_kb"]) < 10:
        out.append(Verdict("pss_flat", "FAIL", "PhoneClaimsTest logged no ten-cycle PSS line"))
    else:
        pss = c["pss_kb"]
        allowed = max(PSS_FLAT_KB, PSS_FLAT_FRACTION * pss[1])
        growth = pss[-1] - pss[1]
        out.append(Verdict("pss_flat", "PASS" if growth <= allowed else "FAIL",
                           f"PSS {pss[1]:,} kB after cycle 2, {pss[-1]:,} kB after cycle 10 ({growth:+,} kB, "
                           f"allowed {allowed:,.0f})"))
    return out


def judge_log(logcat: str) -> Verdict:
    bad = [line.strip() for line in logcat.splitlines() if CACHE_TROUBLE.search(line)]
    if bad:
        return Verdict("no_cache_log", "FAIL", f"{len(bad)} line(s), first: {bad[0]}")
    return Verdict("no_cache_log", "PASS", "no weight-cache error or stale line in logcat")


# --- running it --------------------------------------------------------------------------------

def install(adb: Adb, apk_dir: Path = APK_DIR) -> str:
    """Installs the debug APK and its test APK when both are built; else checks they are installed."""
    app, test = apk_dir / APP_APK, apk_dir / TEST_APK
    if app.is_file() and test.is_file():
        for apk in (app, test):
            out = adb.run("install", "-r", "-t", str(apk)).stdout
            if "Success" not in out:
                raise MTZError(f"`adb install {apk.name}` did not succeed ({out.strip().splitlines()[-1:]}): "
                               "uninstall the app (`adb uninstall dev.mtzmobile.demo`) and run again")
        return f"installed {app.name} and {test.name}"
    _, listed = adb.shell("pm list instrumentation", check=False)
    if RUNNER not in listed:
        raise MTZError(f"the demo and its instrumented test are neither built ({app.parent.parent}) nor installed: "
                       "run `./gradlew assembleDebug assembleDebugAndroidTest` in android_demo and run again")
    return "using the installed app and test (no APK built here)"


def _logcat(adb: Adb, tag: str | None = None) -> str:
    return adb.shell("logcat -d" + (f" -s {tag}:I" if tag else ""), check=False)[1]


def start_twice(adb: Adb, timeout_s: float = START_TIMEOUT_S, poll_s: float = 1.0) -> list[dict]:
    """Force-stops and starts the app twice; its load line (MtzLoad) after each start."""
    adb.shell("logcat -c", check=False)
    loads: list[dict] = []
    for start in (1, 2):
        adb.shell(f"am force-stop {APP_PACKAGE}", check=False)
        rc, out = adb.shell(f"am start -W -n {ACTIVITY}", check=False)
        if rc != 0 or "Error" in out:
            raise MTZError(f"`am start` failed ({out.strip().splitlines()[-1] if out.strip() else rc}): is the app installed?")
        deadline = time.monotonic() + timeout_s
        while len(loads) < start:
            loads = tag_lines(_logcat(adb, LOAD_TAG), LOAD_TAG)
            if len(loads) >= start:
                break
            if time.monotonic() > deadline:
                raise MTZError(f"the app logged no {LOAD_TAG} line {timeout_s:.0f} s after start {start}: "
                               f"see `adb logcat -s MtzDemo`")
            time.sleep(poll_s)
    return loads


def cache_state(adb: Adb) -> tuple:
    """(sha256, bytes) of the app's weight cache file, (None, None) when there is none."""
    sha = adb.sha256(CACHE_FILE, run_as=APP_PACKAGE)
    if sha is None:
        return None, None
    _, out = adb.shell(f"run-as {APP_PACKAGE} stat -c %s {shlex.quote(CACHE_FILE)}")
    return sha, int(out.split()[0])


def phone_check(model, serial: str | None = None, adb: Adb | None = None, apk_dir: Path = APK_DIR,
                poll_s: float = 1.0, start_timeout_s: float = START_TIMEOUT_S) -> tuple[list[str], list[Verdict]]:
    """Runs the check; (what was done, one verdict per claim)."""
    model = Path(model)
    if not model.is_file():
        raise MTZError(f"model {model} not found: give the .tflite the app should load")
    adb = adb or Adb.connect(serial)
    info = device_info(adb)
    check_abi(info)
    steps = [f"device {info['serial']}: {info['model']}, Android {info['android_release']}", install(adb, apk_dir)]
    pushed = push_to_app(adb, model, APP_PACKAGE)
    steps.append(f"model {'already there' if pushed.skipped else 'pushed'}: {pushed.bytes:,} bytes, sha256 {pushed.sha256[:12]}…")
    loads = start_twice(adb, start_timeout_s, poll_s)
    before = cache_state(adb)
    classes = ",".join(TEST_CLASSES)
    _, out = adb.shell(f"am instrument -w -r -e class {classes} {RUNNER}", check=False, timeout_s=1800)
    run = parse_instrumentation(out)
    steps.append(f"instrumented tests: {run['result'] or 'no result line'}")
    after = cache_state(adb)
    logcat = _logcat(adb)
    verdicts = [judge_outputs(run["tests"]), judge_warm_start(loads, pushed.sha256), judge_cache_kept(before, after, run["tests"]),
                *judge_checks(tag_lines(logcat, CHECK_TAG)), judge_log(logcat)]
    return steps, verdicts

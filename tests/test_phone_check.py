"""`mtz-mobile phone-check` against the fake adb (tests/fakes/adb.py, through test_device's
FakeDevice): pushes and run-as commands run for real on the fake device's directory; what only a
phone prints (`am start -W`, `am instrument -r`, `logcat`, `adb install`) is replayed from the
transcripts in tests/data/adb/ (tests/data/README.md says how each was made)."""

from __future__ import annotations

import hashlib
import shlex

import pytest

from mtz_mobile import phone_check as pc
from mtz_mobile.cli import main
from mtz_mobile.contract import APP_PACKAGE
from mtz_mobile.device import Adb
from mtz_mobile.errors import MTZError

from test_device import DATA, FakeDevice

ADB = DATA / "adb"
SERIAL = "R5CT1234ABC"  # devices_one.txt
CACHE = f"/data/data/{APP_PACKAGE}/files/model.tflite.xnnpack_cache"
# The model the transcripts' MtzLoad lines name (their model_sha256 is this file's)
MODEL_BYTES = b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 16


def t(name):
    return str(ADB / name)


@pytest.fixture
def phone(tmp_path, monkeypatch):
    device = FakeDevice(tmp_path, monkeypatch)
    device.add_app(APP_PACKAGE)
    return device


@pytest.fixture
def model(tmp_path):
    path = tmp_path / "model.tflite"
    path.write_bytes(MODEL_BYTES)
    return path


@pytest.fixture
def apks(tmp_path):
    root = tmp_path / "apk"
    for rel in (pc.APP_APK, pc.TEST_APK):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"PK\x03\x04 not a real apk")
    return root


def replay(instrument="constructed_am_instrument_all_passed.txt", loads="constructed_logcat_mtzload_start2.txt",
           full="constructed_logcat_full_good.txt", cache_changes=False):
    """The phone's answers, in the order phone_check asks (the app writes its cache at the first start)."""
    write_cache = f"mkdir -p {shlex.quote(CACHE.rsplit('/', 1)[0])} && printf 'packed weights v4' > {CACHE}"
    return {
        "install": [t("constructed_install_success.txt")] * 2,
        "pm list instrumentation": [t("constructed_pm_list_instrumentation.txt")],
        "logcat -c": [None],
        f"am force-stop {APP_PACKAGE}": [None],
        f"am start -W -n {pc.ACTIVITY}": [{"file": t("constructed_am_start_cold.txt"), "then": write_cache},
                                          t("constructed_am_start_cold.txt")],
        # the first poll comes before the app has logged its load
        f"logcat -d -s {pc.LOAD_TAG}:I": [t("constructed_logcat_mtzload_none.txt"),
                                          t("constructed_logcat_mtzload_start1.txt"), t(loads)],
        "am instrument": [{"file": t(instrument), "then": f"printf x >> {CACHE}" if cache_changes else None}],
        "logcat -d": [t(full)],
    }


def shell_commands(device):
    return [" ".join(c[3:]).split("; echo __MTZ_RC=")[0] for c in device.calls() if c[2:3] == ["shell"]]


def test_every_claim_passes_and_the_commands_are_the_documented_ones(phone, model, apks):
    phone.update(replay=replay())
    steps, verdicts = pc.phone_check(model, serial=SERIAL, apk_dir=apks, poll_s=0)
    assert {v.claim: v.state for v in verdicts} == {c: "PASS" for c in (
        "outputs", "warm_start", "cache_kept", "file_backed", "no_recompile", "pss_flat", "no_cache_log")}
    by = {v.claim: v.detail for v in verdicts}
    assert by["warm_start"] == "first start: model changed; second start: valid"
    assert by["file_backed"].startswith("load + one run per signature (valid): RssFile +6,800 kB, RssAnon +726 kB")
    assert "20 switches over 2 tasks: 1 compile(s)" == by["no_recompile"]
    assert "OK (7 tests)" in steps[-1] and "installed app-debug.apk and app-debug-androidTest.apk" in steps
    # the model is in the app's files, verified, and the app loaded that file
    assert (phone.root / "data" / "data" / APP_PACKAGE / "files" / "model.tflite").read_bytes() == MODEL_BYTES
    installs = [c[2:] for c in phone.calls() if c[2:3] == ["install"]]
    assert installs == [["install", "-r", "-t", str(apks / pc.APP_APK)], ["install", "-r", "-t", str(apks / pc.TEST_APK)]]
    shell = shell_commands(phone)
    assert shell.count(f"am start -W -n {APP_PACKAGE}/.MainActivity") == 2
    assert shell.count(f"am force-stop {APP_PACKAGE}") == 2
    assert (f"am instrument -w -r -e class {APP_PACKAGE}.ModelSignaturesTest,{APP_PACKAGE}.PhoneClaimsTest "
            f"{APP_PACKAGE}.test/androidx.test.runner.AndroidJUnitRunner") in shell
    assert shell.count(f"run-as {APP_PACKAGE} sha256sum files/model.tflite.xnnpack_cache") == 2
    assert not phone.leftovers()


def test_a_phone_that_breaks_every_claim_gets_FAIL_and_exit_1(phone, model, capsys):
    phone.update(replay=replay("constructed_am_instrument_host_skipped.txt", "constructed_logcat_mtzload_cold_twice.txt",
                               "constructed_logcat_full_bad.txt", cache_changes=True))
    code = main(["phone-check", str(model), "--serial", SERIAL])  # no APK built here: uses the installed app
    out = capsys.readouterr().out
    states = {line[12:24].strip(): line[:11].strip() for line in out.splitlines() if line.startswith(("PASS", "FAIL", "NOT"))}
    assert code == 1
    assert states == {"outputs": "NOT CHECKED", "warm_start": "FAIL", "cache_kept": "FAIL", "file_backed": "FAIL",
                      "no_recompile": "FAIL", "pss_flat": "FAIL", "no_cache_log": "FAIL"}
    assert "no host comparison: samples.json was exported with another model" in out
    assert "second start: contents changed (corrupted?)" in out
    assert "Cache file is stale. Setting stale flag." in out
    assert "using the installed app and test (no APK built here)" in out


def test_thresholds_decide_flat_and_file_backed():
    memory = {"check": "memory", "found": "valid", "before": {"rss_file_kb": 1000, "rss_anon_kb": 1000},
              "after": {"rss_file_kb": 1400, "rss_anon_kb": 1100}}
    cycles = {"check": "cycles", "pss_kb": [90_000, 100_000] + [100_000 + pc.PSS_FLAT_KB] * 8}
    switch = {"check": "switch", "switches": 20, "tasks": 3, "compiles": 1}
    states = {v.claim: v.state for v in pc.judge_checks([memory, cycles, switch])}
    assert states == {"file_backed": "PASS", "pss_flat": "PASS", "no_recompile": "PASS"}  # exactly 4x, exactly at the limit
    memory["after"]["rss_anon_kb"] += 1
    cycles["pss_kb"][-1] += 1
    states = {v.claim: v.state for v in pc.judge_checks([memory, cycles, switch])}
    assert states == {"file_backed": "FAIL", "pss_flat": "FAIL", "no_recompile": "PASS"}
    assert [v.state for v in pc.judge_checks([])] == ["FAIL"] * 3


def test_instrumentation_output_is_read_per_test():
    run = pc.parse_instrumentation((ADB / "constructed_am_instrument_host_skipped.txt").read_text())
    assert run["result"] == "OK (7 tests)" and len(run["tests"]) == 7
    assert run["tests"][pc.HOST_MATCH_TEST] == ("skipped (assumption)", "samples.json was exported with another model")
    failed = (ADB / "constructed_am_instrument_all_passed.txt").read_text().replace(
        "INSTRUMENTATION_STATUS: test=everySignatureInTheManifestRuns\nINSTRUMENTATION_STATUS_CODE: 0",
        "INSTRUMENTATION_STATUS: stack=java.lang.AssertionError: task a: output NaN is not finite\n"
        "\tat org.junit.Assert.fail(Assert.java:89)\n"
        "INSTRUMENTATION_STATUS: test=everySignatureInTheManifestRuns\nINSTRUMENTATION_STATUS_CODE: -2")
    verdict = pc.judge_outputs(pc.parse_instrumentation(failed)["tests"])
    assert (verdict.state, verdict.detail) == ("FAIL", "everySignatureInTheManifestRuns: failed: task a: output NaN is not finite")
    brief = 'I/MtzLoad(12873): {"ok": true}\nW/tflite  (12873): Cache file is stale. Setting stale flag.\n'
    assert pc.tag_lines(brief, "MtzLoad") == [{"ok": True}] and pc.judge_log(brief).state == "FAIL"
    assert pc.judge_log("12-07 21:40:11.102  1543  1602 I PackageManager: Removing stale dex files\n").state == "PASS"


def test_neither_built_nor_installed_is_one_line_before_anything_is_pushed(phone, model, capsys):
    phone.update(replay={**replay(), "pm list instrumentation": [None]})
    code = main(["phone-check", str(model), "--serial", SERIAL])
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mtz-mobile")]
    assert code == 2 and len(err) == 1 and "./gradlew assembleDebug assembleDebugAndroidTest" in err[0]
    assert not (phone.root / "data" / "data" / APP_PACKAGE / "files" / "model.tflite").exists()


def test_an_app_that_never_logs_its_load_is_reported(phone):
    phone.update(replay={**replay(), f"logcat -d -s {pc.LOAD_TAG}:I": [t("constructed_logcat_mtzload_none.txt")]})
    with pytest.raises(MTZError, match=r"the app logged no MtzLoad line 0 s after start 1: see `adb logcat -s MtzDemo`"):
        pc.start_twice(Adb.connect(SERIAL), timeout_s=0, poll_s=0)


def test_the_transcripts_name_the_model_the_tests_push():
    sha = hashlib.sha256(MODEL_BYTES).hexdigest()
    for name in ("constructed_logcat_mtzload_start2.txt", "constructed_logcat_full_good.txt"):
        assert all(line["model_sha256"] == sha for line in pc.tag_lines((ADB / name).read_text(), pc.LOAD_TAG))


def test_a_warm_start_of_another_model_than_the_pushed_one_fails():
    loads = pc.tag_lines((ADB / "constructed_logcat_mtzload_start2.txt").read_text(), pc.LOAD_TAG)
    sha = hashlib.sha256(MODEL_BYTES).hexdigest()
    assert pc.judge_warm_start(loads, sha).state == "PASS"
    verdict = pc.judge_warm_start(loads, "0" * 64)
    assert verdict.state == "FAIL" and "the app loaded another model" in verdict.detail
    assert pc.judge_warm_start(loads[:1], sha).detail == "the app logged 1 load(s) for two starts"

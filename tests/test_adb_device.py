"""mtz_mobile/device.py's adb layer against the fake adb of test_device.py (a device that is a
folder, its shell commands run for real under bash): the device's properties, the state of each
listed device, adb's own failures turned into one line, the shell's exit status, checksums and
the staged push. No phone here: the fake stands at the subprocess boundary only."""

from __future__ import annotations

import hashlib
import stat

import pytest

from mtz_mobile.device import (Adb, DeviceEntry, _adb_failure, _state_error, check_abi, device_info, push_file,
                               push_model, push_to_app)
from mtz_mobile.errors import MTZError
from test_device import GOOD_PROPS, FakeDevice

SERIAL = "R5CT1234ABC"


@pytest.fixture
def device(tmp_path, monkeypatch):
    return FakeDevice(tmp_path, monkeypatch)


def listing(*rows: str) -> str:
    return "List of devices attached\n" + "".join(f"{row}\n" for row in rows)


def test_device_info_reads_each_property_and_names_what_is_missing(device):
    info = device_info(Adb.connect())
    assert info == {"kind": "android", "serial": SERIAL, "model": "Pixel 7", "abi": "arm64-v8a", "soc": "GS201",
                    "board_platform": "gs201", "android_release": "14", "sdk": "34"}
    check_abi(info)
    device.set_props({"ro.product.cpu.abi": "x86_64"})
    info = device_info(Adb.connect())
    assert info["model"] == "unknown" and info["soc"] is None and info["sdk"] is None
    with pytest.raises(MTZError) as err:
        check_abi(info)
    assert str(err.value) == (f"device {SERIAL} reports ABI x86_64, not arm64-v8a: LiteRT's arm64 benchmark_model "
                              "and the demo app need a 64-bit ARM device")
    with pytest.raises(MTZError, match=f"^device {SERIAL} reports ABI unknown, not arm64-v8a"):
        check_abi({"serial": SERIAL})


@pytest.mark.parametrize("state, says", [
    ("offline", "is offline: replug it or restart adb (`adb kill-server`), then run again"),
    ("unauthorized", "is unauthorized: unlock it and accept the 'Allow USB debugging?' prompt"),
    ("no permissions (user in plugdev group)", "adb has no permission to open device"),
    ("recovery", "is in state 'recovery', not booted into Android: boot it normally and run again"),
])
def test_each_state_of_the_chosen_device_is_one_line(device, monkeypatch, state, says):
    device.update(devices=listing(f"OTHER  device", f"{SERIAL}  {state} usb:1-1"))
    monkeypatch.setenv("ANDROID_SERIAL", SERIAL)   # chosen by the environment, as adb itself does
    with pytest.raises(MTZError) as err:
        Adb.connect()
    assert says in str(err.value) and SERIAL in str(err.value) and "\n" not in str(err.value)
    assert Adb.connect("OTHER").serial == "OTHER"   # --serial wins over the environment


def test_the_only_device_and_the_named_one(device):
    adb = Adb.connect(timeout_s=30.0)
    assert (adb.serial, adb.timeout_s) == (SERIAL, 30.0)
    assert _state_error(DeviceEntry(SERIAL, "device")) is None
    device.update(devices=listing())
    with pytest.raises(MTZError, match="^no Android device found"):
        Adb.connect()
    device.update(devices=listing(f"{SERIAL}  device"))
    with pytest.raises(MTZError, match=rf"^device X1 not found \(adb devices lists: {SERIAL} \(device\)\): check --serial$"):
        Adb.connect("X1")


def test_adbs_own_failures_become_one_line_that_says_what_to_do(device, tmp_path):
    gone = Adb("GONE1")   # not listed: the fake answers as adb does, "error: device 'GONE1' not found"
    with pytest.raises(MTZError) as err:
        gone.push(tmp_path / "x", "/data/local/tmp/x")
    assert str(err.value) == "device GONE1 is gone (error: device 'GONE1' not found): reconnect it and run again"
    with pytest.raises(MTZError, match="^device GONE1 is gone"):   # a shell whose marker never came back
        gone.shell("true")
    with pytest.raises(MTZError) as err:
        Adb(SERIAL).run("frobnicate")
    assert str(err.value) == f"`adb frobnicate` failed on {SERIAL} (adb: unknown command frobnicate)"
    device.update(devices=listing(f"LOCKED  unauthorized"))
    with pytest.raises(MTZError, match="^device LOCKED is unauthorized: unlock it"):
        Adb("LOCKED").push(tmp_path / "x", "/data/local/tmp/x")


def test_adb_failure_takes_the_first_line_that_is_not_adbs_chatter():
    assert _adb_failure("* daemon started successfully\n\n  error: closed  \nmore") == "error: closed"
    assert _adb_failure("", "only on stdout\n") == "only on stdout"
    assert _adb_failure("* daemon not running\n", "") == "no output"
    assert _adb_failure("first\n", "second\n") == "first"


def test_the_shells_exit_status_and_output(device):
    adb = Adb.connect()
    assert adb.shell("printf 'one\\r\\ntwo\\n'; false", check=False) == (1, "one\ntwo")
    assert adb.shell("echo hi; (exit 3)", check=False) == (3, "hi")
    assert adb.shell("true") == (0, "")
    with pytest.raises(MTZError) as err:
        adb.shell("ls /no/such/dir")
    assert str(err.value).startswith(f"`ls` failed on {SERIAL} (exit 2: ls: cannot access")
    with pytest.raises(MTZError, match=rf"^`false` failed on {SERIAL} \(exit 1: no output\)$"):
        adb.shell("false")
    assert adb.getprop("ro.build.version.sdk") == "34" and adb.getprop("ro.nothing") == ""


def test_checksums_on_the_device(device):
    adb = Adb.connect()
    (device.root / "data" / "local" / "tmp" / "f").write_bytes(b"bytes on the device")
    assert adb.sha256("/data/local/tmp/f") == hashlib.sha256(b"bytes on the device").hexdigest()
    assert adb.sha256("/data/local/tmp/missing") is None
    with pytest.raises(MTZError, match=rf"^cannot checksum /data/local/tmp on {SERIAL} \(sha256sum: .*Is a directory\)$"):
        adb.sha256("/data/local/tmp")
    app = device.add_app("dev.example")
    (app / "files").mkdir()
    (app / "files" / "m").write_bytes(b"app's")
    assert adb.sha256("files/m", run_as="dev.example") == hashlib.sha256(b"app's").hexdigest()
    with pytest.raises(MTZError, match="^cannot write into dev.other's files .*run-as: unknown package: dev.other"):
        adb.sha256("files/m", run_as="dev.other")


def test_a_staged_push_sets_the_mode_and_skips_what_is_there(device, tmp_path):
    adb = Adb.connect()
    local = tmp_path / "w.bin"
    local.write_bytes(b"\x01" * 1000)
    result = push_file(adb, local, "/data/local/tmp/sub/w.bin", mode="600")
    on_device = device.root / "data" / "local" / "tmp" / "sub" / "w.bin"
    assert on_device.read_bytes() == local.read_bytes() and stat.S_IMODE(on_device.stat().st_mode) == 0o600
    assert (result.remote, result.bytes, result.skipped, result.sha256) == (
        "/data/local/tmp/sub/w.bin", 1000, False, hashlib.sha256(local.read_bytes()).hexdigest())
    assert push_file(adb, local, "/data/local/tmp/sub/w.bin").skipped
    again = push_file(adb, local, "/data/local/tmp/sub/w.bin", skip_if_same=False)
    assert again.skipped is False and len([c for c in device.calls() if "push" in c]) == 2
    assert not device.leftovers()
    with pytest.raises(MTZError, match=f"^{tmp_path / 'none.bin'} not found: give an existing file$"):
        push_file(adb, tmp_path / "none.bin", "/data/local/tmp/none.bin")


def test_a_push_into_an_app_result_and_its_staging(device, tmp_path):
    adb = Adb.connect()
    app = device.add_app("dev.example")
    local = tmp_path / "m.tflite"
    local.write_bytes(b"model bytes")
    result = push_to_app(adb, local, "dev.example", name="m.tflite")
    assert (result.remote, result.app, result.skipped, result.bytes) == ("files/m.tflite", "dev.example", False, 11)
    assert (app / "files" / "m.tflite").read_bytes() == b"model bytes"
    assert not device.leftovers() and not list((device.root / "data" / "local" / "tmp").iterdir())
    staged = [c for c in device.calls() if c[2:3] == ["push"]]
    assert len(staged) == 1 and staged[0][-1].startswith("/data/local/tmp/mtz-stage-")
    skipped = push_to_app(adb, local, "dev.example", name="m.tflite")
    assert skipped.skipped and skipped.sha256 == hashlib.sha256(b"model bytes").hexdigest()
    assert not push_to_app(adb, local, "dev.example", name="m.tflite", skip_if_same=False).skipped
    with pytest.raises(MTZError, match=f"^{tmp_path / 'none'} not found: give an existing file$"):
        push_to_app(adb, tmp_path / "none", "dev.example")


def test_a_damaged_copy_into_the_app_names_both_checksums(device, tmp_path):
    device.update(corrupt_run_as_copy=True)   # the fake flips the first byte of the copy in the app's files
    device.add_app("dev.example")
    local = tmp_path / "m.tflite"
    local.write_bytes(b"model bytes")
    damaged = hashlib.sha256(b"\x92" + b"odel bytes").hexdigest()   # ord("m") ^ 0xFF
    want = hashlib.sha256(b"model bytes").hexdigest()
    with pytest.raises(MTZError) as err:
        push_to_app(Adb.connect(), local, "dev.example")
    assert str(err.value) == f"checksum mismatch in dev.example's files ({damaged[:12]}… vs {want[:12]}…): push again"


@pytest.fixture
def scripted(tmp_path):
    """An adb that answers every call with a set text and exit status: what a device gives that the
    folder-backed fake cannot (a shell without sha256sum, an empty answer, adb's own failure)."""
    answer = tmp_path / "answer"
    adb = tmp_path / "scripted-adb"
    adb.write_text(f"#!/bin/sh\ncat {answer}\nexit $(cat {answer}.rc)\n")
    adb.chmod(0o755)

    def say(text: str, rc: int = 0) -> Adb:
        answer.write_text(text)
        (tmp_path / "answer.rc").write_text(str(rc))
        return Adb(SERIAL, adb=str(adb))
    return say


def test_what_sha256sum_can_answer(scripted):
    with pytest.raises(MTZError, match=f"^device {SERIAL} has no sha256sum \\(toybox has it from Android 7\\)"):
        scripted("/system/bin/sh: sha256sum: not found\n__MTZ_RC=127\n").sha256("/data/local/tmp/f")
    with pytest.raises(MTZError, match=f"^unexpected sha256sum output on {SERIAL} \\(''\\)$"):
        scripted("__MTZ_RC=0\n").sha256("/data/local/tmp/f")
    with pytest.raises(MTZError, match=f"^unexpected sha256sum output on {SERIAL} \\('abcdef'\\)$"):
        scripted("abcdef\n__MTZ_RC=0\n").sha256("/data/local/tmp/f")
    assert scripted("AB" * 32 + "  f\n__MTZ_RC=0\n").sha256("/data/local/tmp/f") == "ab" * 32
    with pytest.raises(MTZError, match=f"^cannot checksum /data/local/tmp/f on {SERIAL} \\(3\\)$"):
        scripted("__MTZ_RC=3\n").sha256("/data/local/tmp/f")


def test_a_shell_adb_could_not_open_is_adbs_failure(scripted):
    with pytest.raises(MTZError) as err:
        scripted("error: closed\n", rc=1).shell("true")
    assert str(err.value) == f"`adb shell` failed on {SERIAL} (error: closed)"
    with pytest.raises(MTZError) as err:
        scripted("__MTZ_RC=x\n").shell("true")   # a marker without a status: the shell's end was not seen
    assert str(err.value) == f"`adb shell` failed on {SERIAL} (__MTZ_RC=x)"
    with pytest.raises(MTZError, match="^several devices attached: choose one with --serial SERIAL$"):
        scripted("error: more than one device/emulator\n", rc=1).run("push", "a", "b")


def test_a_command_that_runs_past_its_time_is_one_line(device):
    adb = Adb(SERIAL, timeout_s=600.0)
    with pytest.raises(MTZError) as err:
        adb.shell("sleep 3", timeout_s=0.5)
    assert str(err.value) == ("`adb shell sleep 3; echo __MTZ_RC=$?` ran past 0 s: check the device, "
                              "or use fewer --runs")


def test_adb_devices_failing_and_the_model_checked_before_adb(scripted, tmp_path):
    adb = scripted("* daemon not running\n", rc=1).adb   # stdout: nothing but adb's chatter
    with pytest.raises(MTZError) as err:
        Adb.devices(adb)
    assert str(err.value) == "`adb devices` failed (no output): restart the adb server (`adb kill-server`) and retry"
    script = tmp_path / "stderr-adb"
    script.write_text("#!/bin/sh\necho 'error: protocol fault' >&2\nexit 1\n")
    script.chmod(0o755)
    with pytest.raises(MTZError, match=r"^`adb devices` failed \(error: protocol fault\): restart the adb server"):
        Adb.devices(str(script))
    with pytest.raises(MTZError) as err:
        push_model(tmp_path / "none.tflite")
    assert str(err.value) == f"model {tmp_path / 'none.tflite'} not found: give the .tflite to push"


def test_no_device_listed_says_how_to_attach_one(device):
    device.update(devices=listing())
    with pytest.raises(MTZError) as err:
        Adb.connect()
    assert str(err.value) == ("no Android device found (`adb devices` lists none): connect one with USB debugging "
                              "on, or start an emulator, then run again")


def test_an_apps_checksum_failing_for_another_reason_is_not_run_as(device):
    app = device.add_app("dev.example")
    (app / "files").mkdir()
    with pytest.raises(MTZError, match=f"^cannot checksum files on {SERIAL} \\(sha256sum: .*Is a directory\\)$"):
        Adb.connect().sha256("files", run_as="dev.example")

"""Android side: the real adb where it can run here (absent, no device), and a fake adb at the
subprocess boundary (tests/fakes/adb.py) replaying recorded benchmark_model output
(tests/data/README.md names the sources) for devices, pushes and benchmark runs."""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mtz_mobile.bench.android import check_benchmark_binary, parse_benchmark_output, parse_signature_list
from mtz_mobile.bench.report import read_report, validate_report
from mtz_mobile.cli import main
from mtz_mobile.device import Adb, find_adb, parse_devices, push_model
from mtz_mobile.errors import MTZError

DATA = Path(__file__).parent / "data"
TRANSCRIPTS = DATA / "benchmark_model"
FAKE_ADB = Path(__file__).parent / "fakes" / "adb.py"
GOOD_PROPS = {"ro.product.model": "Pixel 7", "ro.product.cpu.abi": "arm64-v8a", "ro.soc.model": "GS201",
              "ro.board.platform": "gs201", "ro.build.version.release": "14", "ro.build.version.sdk": "34"}


def one_line_error(capsys, argv) -> str:
    code = main(argv)
    err = [l for l in capsys.readouterr().err.splitlines() if l.startswith("mtz-mobile")]
    assert code == 2 and len(err) == 1, err
    return err[0]


# ---------------------------------------------------------------- parsing the recorded transcripts

def test_parse_current_format_with_memory_delta():
    p = parse_benchmark_output((TRANSCRIPTS / "tf61946_desktop_delta.txt").read_text())
    assert p["format"] == "modern" and p["memory_line"] == "delta"
    assert (p["init_us"], p["first_us"], p["warmup_avg_us"], p["inference_avg_us"]) == (530, 124020, 117225, 116066)
    assert (p["init_mb"], p["overall_mb"], p["peak_mb"]) == (3.75, 12.1914, None)
    assert (p["count"], p["min_us"], p["max_us"], p["std_us"]) == (50, 111222, 121324, 1906)  # the timed runs
    assert p["median_us"] is None and p["model_size_mb"] == 4.27635


def test_parse_older_peak_footprint_line_without_prefix():
    p = parse_benchmark_output((TRANSCRIPTS / "tf42507_android_old_peak_line.txt").read_text())
    assert p["format"] == "modern" and p["memory_line"] == "peak-footprint-old"
    assert (p["init_mb"], p["overall_mb"], p["peak_mb"]) == (0.0, 12.8672, None)
    assert p["inference_avg_us"] == 33209.4 and p["count"] == 50


def test_parse_periodic_peak_line():
    p = parse_benchmark_output((TRANSCRIPTS / "olv_notes_cros_cpu_peak.txt").read_text())
    assert p["peak_mb"] == 93.2383 and p["memory_line"] is None and p["init_mb"] is None
    assert p["inference_avg_us"] == 56265.8 and p["count"] == 1061


@pytest.mark.parametrize("name,expected", [("yuenshome77_android_average_timings.txt", (76605.9, 9933, 66767.6)),
                                           ("litert_readme_op_profiling_tail.txt", (83235, 38467, 79760.9))])
def test_parse_average_timings_format(name, expected):
    p = parse_benchmark_output((TRANSCRIPTS / name).read_text())
    assert p["format"] == "average-timings" and p["first_us"] is None
    assert (p["warmup_avg_us"], p["init_us"], p["inference_avg_us"]) == expected
    assert p["overall_mb"] is None and p["peak_mb"] is None


def test_parse_failure_is_one_line_with_the_tools_error():
    with pytest.raises(MTZError, match="Could not open"):
        parse_benchmark_output("INFO: STARTING!\nERROR: Could not open '/data/local/tmp/x.tflite'.\n")
    assert parse_signature_list((TRANSCRIPTS / "constructed_list_signatures_abc.txt").read_text()) == ["a", "all", "b"]


def test_parse_devices_listing_and_daemon_lines():
    entries = parse_devices((DATA / "adb" / "devices_one.txt").read_text())
    assert [(e.serial, e.state) for e in entries] == [("R5CT1234ABC", "device")]
    assert parse_devices((DATA / "adb" / "devices_none_recorded.txt").read_text()) == []
    listing = "List of devices attached\nNOPERM                 no permissions (user in plugdev group)\n"
    assert parse_devices(listing)[0].state == "no permissions"


# ---------------------------------------------------------------- the real adb

def test_no_adb_on_path(tmp_path, monkeypatch, capsys, arm64_binary):
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(MTZError, match=r"no `adb` on PATH: install it with `apt-get install adb`"):
        find_adb()
    line = one_line_error(capsys, ["push", str(arm64_binary)])
    assert "not a .tflite" in line  # the file is checked before adb is looked for
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\0\0\0\0TFL3" + bytes(32))
    assert "apt-get install adb" in one_line_error(capsys, ["push", str(model)])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_real_adb_without_a_device(tmp_path, monkeypatch, capsys):
    adb = shutil.which("adb")
    if adb is None:
        pytest.skip("adb is not installed on this machine (apt-get install adb)")
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(_free_port()))  # a private server, ended below
    monkeypatch.delenv("ANDROID_SERIAL", raising=False)
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\0\0\0\0TFL3" + bytes(32))
    try:
        assert Adb.devices() == []
        line = one_line_error(capsys, ["push", str(model)])
        assert "no Android device found" in line
        line = one_line_error(capsys, ["push", str(model), "--serial", "emulator-5554"])
        assert "device emulator-5554 not found" in line
    finally:
        subprocess.run([adb, "kill-server"], capture_output=True, timeout=60, env=dict(os.environ))


# ---------------------------------------------------------------- a fake adb at the subprocess boundary

class FakeDevice:
    def __init__(self, tmp_path: Path, monkeypatch):
        self.root = tmp_path / "device"
        (self.root / "data" / "local" / "tmp").mkdir(parents=True)
        (self.root / "props").mkdir()
        bindir = tmp_path / "bin"
        bindir.mkdir()
        adb = bindir / "adb"
        adb.write_text(f"#!{sys.executable}\n" + FAKE_ADB.read_text())
        adb.chmod(adb.stat().st_mode | stat.S_IEXEC)
        self.scenario_path = tmp_path / "scenario.json"
        self.log = tmp_path / "adb.log"
        self.scenario = {"root": str(self.root), "log": str(self.log),
                         "devices": (DATA / "adb" / "devices_one.txt").read_text(),
                         "list_signatures": str(TRANSCRIPTS / "constructed_list_signatures_abc.txt"),
                         "transcripts": {"*": str(TRANSCRIPTS / "tf61946_desktop_delta.txt")}}
        self.set_props(GOOD_PROPS)
        self.save()
        monkeypatch.setenv("PATH", f"{bindir}{os.pathsep}{os.environ['PATH']}")
        monkeypatch.setenv("FAKE_ADB_SCENARIO", str(self.scenario_path))
        monkeypatch.delenv("ANDROID_SERIAL", raising=False)

    def save(self):
        self.scenario_path.write_text(json.dumps(self.scenario))

    def update(self, **changes):
        self.scenario.update(changes)
        self.save()

    def set_props(self, props):
        for f in (self.root / "props").iterdir():
            f.unlink()
        for key, value in props.items():
            (self.root / "props" / key).write_text(value)

    def add_app(self, package, debuggable=True):
        d = self.root / "data" / "data" / package
        d.mkdir(parents=True)
        if not debuggable:
            (d / ".not_debuggable").write_text("")
        return d

    def calls(self):
        return [json.loads(l) for l in self.log.read_text().splitlines()] if self.log.exists() else []

    def leftovers(self):
        return [p for p in self.root.rglob("*") if ".part" in p.name or "mtz-stage" in p.name]


@pytest.fixture
def device(tmp_path, monkeypatch):
    return FakeDevice(tmp_path, monkeypatch)


@pytest.fixture
def tflite(tmp_path):
    path = tmp_path / "z.tflite"
    path.write_bytes(b"\x1c\0\0\0TFL3" + os.urandom(3000))
    return path


def test_unauthorized_device(device, capsys, tflite):
    device.update(devices=(DATA / "adb" / "devices_unauthorized.txt").read_text())
    line = one_line_error(capsys, ["push", str(tflite)])
    assert "5LM0215C15000924 is unauthorized" in line and "Allow USB debugging" in line


def test_several_devices_need_a_serial(device, capsys, tflite):
    device.update(devices=(DATA / "adb" / "devices_several.txt").read_text())
    line = one_line_error(capsys, ["push", str(tflite)])
    assert "2 devices attached (emulator-5554 (device), R5CT1234ABC (device))" in line and "--serial" in line
    assert main(["push", str(tflite), "--serial", "R5CT1234ABC"]) == 0
    assert ["-s", "R5CT1234ABC", "push"] == device.calls()[-4][:3] or any(
        c[:3] == ["-s", "R5CT1234ABC", "push"] for c in device.calls())


def test_push_verifies_checksum_and_renames(device, tflite, capsys):
    assert main(["push", str(tflite)]) == 0
    dest = device.root / "data" / "local" / "tmp" / "z.tflite"
    assert dest.read_bytes() == tflite.read_bytes()
    assert not device.leftovers()
    pushes = [c for c in device.calls() if "push" in c]
    assert len(pushes) == 1 and ".part-" in pushes[0][-1]  # pushed under a temporary name, then renamed
    assert "pushed and verified" in capsys.readouterr().out
    assert main(["push", str(tflite)]) == 0  # same bytes already there: nothing pushed
    assert "nothing pushed" in capsys.readouterr().out
    assert len([c for c in device.calls() if "push" in c]) == 1


def test_damaged_transfer_leaves_nothing_where_it_is_read(device, tflite, capsys):
    device.update(corrupt_push=True)
    line = one_line_error(capsys, ["push", str(tflite)])
    assert "checksum mismatch" in line
    assert not (device.root / "data" / "local" / "tmp" / "z.tflite").exists()
    assert not device.leftovers()


def test_push_into_the_app_files_dir(device, tflite, capsys):
    from mtz_mobile.contract import APP_PACKAGE, DEVICE_MODEL_NAME

    app = device.add_app(APP_PACKAGE)
    (app / "files").mkdir()
    (app / "files" / DEVICE_MODEL_NAME).write_bytes(b"old model")
    assert main(["push", str(tflite), "--app"]) == 0
    assert (app / "files" / DEVICE_MODEL_NAME).read_bytes() == tflite.read_bytes()
    assert f"{APP_PACKAGE}:files/{DEVICE_MODEL_NAME}: pushed and verified" in capsys.readouterr().out
    assert not device.leftovers()
    result = push_model(tflite, app=APP_PACKAGE)
    assert result.skipped


@pytest.mark.parametrize("old", [None, b"old model"])
def test_damaged_copy_into_the_app_leaves_nothing_where_the_app_reads(device, tflite, capsys, old):
    """The staged file arrives intact; the run-as copy into the app's files dir is damaged."""
    from mtz_mobile.contract import APP_PACKAGE, DEVICE_MODEL_NAME

    app = device.add_app(APP_PACKAGE)
    final = app / "files" / DEVICE_MODEL_NAME
    if old is not None:
        final.parent.mkdir()
        final.write_bytes(old)
    device.update(corrupt_run_as_copy=True)
    line = one_line_error(capsys, ["push", str(tflite), "--app"])
    assert f"checksum mismatch in {APP_PACKAGE}'s files" in line and "push again" in line
    copies = [c for c in device.calls() if c[2:3] == ["shell"] and "cat > files/" in " ".join(c)]
    assert len(copies) == 1  # the copy ran (and was damaged): the mismatch is not the staging push's
    if old is None:
        assert not final.exists()
    else:
        assert final.read_bytes() == old
    assert not device.leftovers()
    with pytest.raises(MTZError, match="checksum mismatch"):
        push_model(tflite, app=APP_PACKAGE)


@pytest.mark.parametrize("debuggable,pattern", [(None, "unknown package"), (False, "not debuggable")])
def test_push_into_an_app_that_run_as_cannot_enter(device, tflite, capsys, debuggable, pattern):
    if debuggable is not None:
        device.add_app("com.example.release", debuggable=debuggable)
    line = one_line_error(capsys, ["push", str(tflite), "--app", "com.example.release"])
    assert pattern in line and "debuggable build" in line
    assert not device.leftovers()


def test_missing_and_wrong_benchmark_binary(device, tmp_path, capsys, tflite):
    line = one_line_error(capsys, ["bench", str(tflite), "--out", str(tmp_path / "r"), "--adb-serial", "X",
                                   "--benchmark-binary", str(tmp_path / "nope")])
    assert "benchmark binary" in line and "not found" in line
    with pytest.raises(MTZError, match="not an ELF"):
        check_benchmark_binary(tflite)
    with pytest.raises(MTZError, match="aarch64"):
        check_benchmark_binary(sys.executable)
    with pytest.raises(MTZError, match="--benchmark-binary"):
        check_benchmark_binary(None)


def test_wrong_abi(device, deployed, arm64_binary, tmp_path, capsys):
    device.set_props(dict(GOOD_PROPS, **{"ro.product.cpu.abi": "x86_64"}))
    line = one_line_error(capsys, ["bench", str(deployed.model), "--out", str(tmp_path / "r"),
                                   "--benchmark-binary", str(arm64_binary)])
    assert "reports ABI x86_64, not arm64-v8a" in line
    assert not (tmp_path / "r").exists()


DEVICE_DIR = "/data/local/tmp/mtz"


def benchmark_shell_commands(device) -> list[str]:
    """Every shell command the bench sent, without the exit-status marker Adb.shell appends."""
    return [" ".join(c[3:]).split("; echo __MTZ_RC=")[0] for c in device.calls() if c[2:3] == ["shell"]]


def test_android_bench_end_to_end(device, deployed, arm64_binary, tmp_path, capsys):
    t = {name: str(TRANSCRIPTS / name) for name in (
        "tf61946_desktop_delta.txt", "olv_notes_cros_cpu_peak.txt", "tf42507_android_old_peak_line.txt",
        "yuenshome77_android_average_timings.txt", "litert_readme_op_profiling_tail.txt")}
    device.update(transcripts={"model.tflite:a": t["tf61946_desktop_delta.txt"],
                               "model.tflite:b": t["olv_notes_cros_cpu_peak.txt"],
                               "model.tflite:all": t["tf42507_android_old_peak_line.txt"],
                               "a": t["yuenshome77_android_average_timings.txt"],
                               "*": t["litert_readme_op_profiling_tail.txt"]})
    out = tmp_path / "report"
    argv = ["bench", str(deployed.model), "--baselines", *map(str, deployed.baselines.values()), "--out", str(out),
            "--adb-serial", "R5CT1234ABC", "--benchmark-binary", str(arm64_binary), "--runs", "7", "--threads", "2"]
    assert main(argv) == 0
    report = read_report(out / "report.json")
    validate_report(report)
    assert report["mode"] == "android" and report["environment"]["model"] == "Pixel 7"
    s = report["settings"]
    assert report["environment"]["soc"] == "GS201"
    assert (s["xnnpack_cache"], s["xnnpack_cache_path"], s["xnnpack_cache_chosen_by"]) == \
        ("all", f"{DEVICE_DIR}/MODEL.SIGNATURE.xnnpack_cache", "default")
    runs = report["android"]["runs"]
    # 5 jobs (zipped a, b, all; baselines a, b) in each of off, on, file; file adds a cold run per job
    assert len(runs) == 3 * 5 + 5 and report["android"]["listed_signatures"] == ["a", "all", "b"]
    phases = [("off", "measured")] * 5 + [("on", "measured")] * 5 + [("file", "cold"), ("file", "measured")] * 5
    assert [(r["xnnpack_cache"], r["phase"]) for r in runs] == phases
    by = {(r["variant"], r["signature"], r["xnnpack_cache"]): r["parsed"] for r in runs if r["phase"] == "measured"}
    assert by[("zipped", "a", "on")]["overall_mb"] == 12.1914
    assert by[("zipped", "b", "off")]["peak_mb"] == 93.2383
    assert by[("zipped", "all", "on")]["memory_line"] == "peak-footprint-old"
    assert by[("baselines", "a", "off")]["format"] == "average-timings"
    assert by[("baselines", "b", "file")]["inference_avg_us"] == 79760.9
    ratios = {(q["signature"], q["xnnpack_cache"]): q for q in report["latency"]["ratios"]}
    assert ratios[("a", "off")]["ratio"] == pytest.approx(116066 / 66767.6)
    assert ratios[("all", "on")]["baselines_us"] == pytest.approx(66767.6 + 79760.9)
    assert ratios[("a", "file")]["ratio"] == pytest.approx(116066 / 66767.6)
    entries = [(e["variant"], e["signature"]) for e in report["latency"]["entries"] if e["xnnpack_cache"] == "file"]
    assert entries == [("zipped", "a"), ("zipped", "b"), ("zipped", "all"), ("baselines", "a"), ("baselines", "b")]
    mem = {(q["task"], q["metric"], q["xnnpack_cache"]): q for q in report["memory"]["ratios"]}
    assert mem[("a", "overall_mb", "off")]["zipped"] == 12.1914 and mem[("a", "overall_mb", "off")]["ratio"] is None
    assert mem[("b", "peak_mb", "file")]["zipped"] == 93.2383
    assert [m["xnnpack_cache"] for m in report["memory"]["measurements"]].count("file") == 5
    assert report["storage"]["file_ratio"] < 1
    # the replayed transcript is the same for a job's cold and warm run: the ratio is 1, computed
    loads = {(q["variant"], q["signature"]): q for q in report["android"]["cache_loads"]}
    assert len(report["android"]["cache_loads"]) == 5
    assert loads[("zipped", "b")]["cache_file"] == f"{DEVICE_DIR}/model.tflite.b.xnnpack_cache"
    for key, init in ((("zipped", "a"), 530), (("zipped", "b"), 3337), (("zipped", "all"), 855),
                      (("baselines", "a"), 9933), (("baselines", "b"), 38467)):
        q = loads[key]
        assert (q["cold_init_us"], q["warm_init_us"]) == (init, init) and q["ratio"] == init / init == 1.0
    # the flags on the device: each signature in each state, binary and files pushed
    commands = benchmark_shell_commands(device)
    runs_cmd = [c for c in commands if "--signature_to_run_for=" in c]
    assert len(runs_cmd) == 20 and sum("--xnnpack_weight_cache_file_path=:memory" in c for c in runs_cmd) == 5
    assert sum(f"--xnnpack_weight_cache_file_path={DEVICE_DIR}/" in c for c in runs_cmd) == 10
    for flag in ("--num_threads=2", "--num_runs=7", "--use_xnnpack=true", "--report_peak_memory_footprint=true",
                 f"--graph={DEVICE_DIR}/model.tflite"):
        assert any(flag in c for c in runs_cmd), flag
    assert any("--list_signatures=true" in c for c in commands)
    cache = f"{DEVICE_DIR}/model.tflite.a.xnnpack_cache"
    i = commands.index(f"rm -f {cache}")
    run = (f"{DEVICE_DIR}/benchmark_model --graph={DEVICE_DIR}/model.tflite --signature_to_run_for=a "
           "--num_threads=2 --num_runs={} --warmup_runs={} --use_xnnpack=true --report_peak_memory_footprint=true "
           f"--xnnpack_weight_cache_file_path={cache}")
    assert commands[i:i + 3] == [f"rm -f {cache}", run.format(1, 0), run.format(7, 1)]  # delete, cold build, warm
    pushed = device.root / "data" / "local" / "tmp" / "mtz"
    assert (pushed / "benchmark_model").read_bytes() == arm64_binary.read_bytes()
    assert (pushed / "benchmark_model").stat().st_mode & 0o111
    assert (pushed / "model.tflite").read_bytes() == deployed.model.read_bytes()
    assert not list(pushed.glob("*.xnnpack_cache*"))  # nothing of the host's cache files goes to the device
    md = (out / "report.md").read_text()
    assert "benchmark_model runs" in md and "Pixel 7" in md and "| a | off | peak_mb |" in md
    assert "| zipped | a | file | cold |" in md and "| cold / warm |" in md
    assert f"| zipped | a | `{cache}` | 530.0 µs | 530.0 µs | 1.000× |" in md
    assert set(report["files"]["charts"]) >= {"storage.png", "latency.png", "memory.png"}


def test_android_bench_with_one_cache_state(device, deployed, arm64_binary, tmp_path):
    """--xnnpack-cache file runs the file state only: per job a delete, a cold run and the measured run."""
    from mtz_mobile.bench import AndroidSettings

    out = tmp_path / "report"
    argv = ["bench", str(deployed.model), "--baselines", *map(str, deployed.baselines.values()), "--out", str(out),
            "--adb-serial", "R5CT1234ABC", "--benchmark-binary", str(arm64_binary), "--runs", "3",
            "--xnnpack-cache", "file"]
    assert main(argv) == 0
    report = read_report(out / "report.json")
    s = report["settings"]
    assert (s["xnnpack_cache"], s["xnnpack_cache_path"], s["xnnpack_cache_chosen_by"]) == \
        ("file", f"{DEVICE_DIR}/MODEL.SIGNATURE.xnnpack_cache", "user")
    runs = [(r["xnnpack_cache"], r["phase"]) for r in report["android"]["runs"]]
    assert runs == [("file", "cold"), ("file", "measured")] * 5
    assert {e["xnnpack_cache"] for e in report["latency"]["entries"]} == {"file"}
    assert len(report["android"]["cache_loads"]) == 5
    commands = benchmark_shell_commands(device)
    runs_cmd = [c for c in commands if "--signature_to_run_for=" in c]
    assert len(runs_cmd) == 10 and not any(":memory" in c for c in runs_cmd)
    expected = [f"{DEVICE_DIR}/{name}.{key}.xnnpack_cache" for name, key in (
        ("model.tflite", "a"), ("model.tflite", "b"), ("model.tflite", "all"),
        ("model.baseline_a.tflite", "a"), ("model.baseline_b.tflite", "b"))]
    assert [c.split("=")[-1] for c in runs_cmd] == [p for p in expected for _ in range(2)]
    assert [c for c in commands if c.startswith("rm -f")] == [f"rm -f {p}" for p in expected]
    assert AndroidSettings(xnnpack_cache=("off", "on")).to_json()["xnnpack_cache"] == "both"
    assert AndroidSettings(xnnpack_cache=("off",)).to_json()["xnnpack_cache_path"] is None
    with pytest.raises(MTZError, match="distinct ones of off, on, file"):
        AndroidSettings(xnnpack_cache=("on", "on"), benchmark_binary=str(arm64_binary))


def test_deploy_push_resumes(device, deployed, small_models, fmnist):
    from mtz_mobile.bench import HostSettings
    from mtz_mobile.contract import APP_PACKAGE, DEVICE_MODEL_NAME
    from mtz_mobile.pipeline import deploy

    app = device.add_app(APP_PACKAGE)
    kwargs = dict(data={"a": fmnist, "b": fmnist}, bench=HostSettings(runtime="compiled", runs=3), progress=False,
                  retrain_iterations=0, calibration_samples=500, push=True, app=APP_PACKAGE)
    again = deploy(small_models, deployed.out_dir, **kwargs)
    assert again.stages == {"zip": "skipped", "convert": "skipped", "bench": "skipped", "push": "done"}
    assert (app / "files" / DEVICE_MODEL_NAME).read_bytes() == deployed.model.read_bytes()
    third = deploy(small_models, deployed.out_dir, **kwargs)
    assert third.stages["push"] == "skipped"

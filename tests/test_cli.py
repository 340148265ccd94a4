"""The command line on real files: bad input fails on one line, non-zero, leaving nothing behind."""

import json
import os
import re
import subprocess
import sys

import keras
import numpy as np
import pytest

from mtz_mobile.cli import main
from mtz_mobile.errors import MTZError


@pytest.fixture(scope="module")
def bad_models(tmp_path_factory, fmnist, train_mlp):
    root = tmp_path_factory.mktemp("bad")
    train_mlp(fmnist, root / "shallow.keras", seed=4, hidden=(32,), epochs=1)
    nan = train_mlp(fmnist, root / "nan.keras", seed=5, epochs=1)
    weights = nan.get_weights()
    weights[2][0, 0] = np.nan
    nan.set_weights(weights)
    nan.save(root / "nan.keras")
    odd = keras.Sequential([keras.Input((28, 28)), keras.layers.Flatten(), keras.layers.Dense(48),
                            keras.layers.LayerNormalization(name="norm_a"), keras.layers.Dense(24),
                            keras.layers.Dense(10, activation="softmax")])
    odd.save(root / "odd.keras")
    empty = root / "empty.npz"
    np.savez(empty, x_train=np.zeros((0, 28, 28), np.float32), y_train=np.zeros(0, np.int64),
             x_test=np.zeros((0, 28, 28), np.float32), y_test=np.zeros(0, np.int64))
    return root


def run_cli(args, capsys):
    code = main(args)
    err = capsys.readouterr().err.strip().splitlines()
    return code, [line for line in err if line.startswith("mtz-mobile")]


@pytest.mark.parametrize("case,extra,pattern", [
    ("depth", ["{bad}/shallow.keras"], "same depth"),
    ("layer", ["{bad}/odd.keras"], "unsupported layer 'norm_a' \\(LayerNormalization\\)"),
    ("nan", ["{bad}/nan.keras"], "NaN"),
    ("count", ["{b}", "--shared", "100"], "at most 48"),
    ("alpha", ["{b}", "--alpha", "1.5"], "alpha"),
    ("nodata", ["{b}", "--data", "npz:{bad}/empty.npz"], "no samples"),
    ("missing", ["{bad}/nope.keras"], "does not exist"),
])
def test_bad_input_one_line_error_and_no_output(case, extra, pattern, small_models, bad_models, tmp_path, capsys):
    a, b = small_models
    out = tmp_path / "out"
    args = ["zip", str(a)] + [e.format(bad=bad_models, b=b) for e in extra] + ["--out", str(out), "--quiet"]
    code, lines = run_cli(args, capsys)
    assert code == 2
    assert len(lines) == 1 and lines[0].startswith("mtz-mobile: error: ")
    import re

    assert re.search(pattern, lines[0]), lines[0]
    assert not out.exists() and not (tmp_path / "out.partial").exists()


def test_exit_code_and_stderr_of_a_real_process(small_models, bad_models, tmp_path):
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "mtz_mobile.cli", "zip", str(small_models[0]),
                           str(bad_models / "shallow.keras"), "--out", str(out)], capture_output=True, text=True)
    assert proc.returncode == 2
    ours = [line for line in proc.stderr.splitlines() if line.startswith("mtz-mobile")]
    assert ours == [line for line in ours if "same depth" in line] and len(ours) == 1
    assert proc.stdout == "" and not out.exists()


def test_zip_then_evaluate(small_models, tmp_path, capsys):
    out = tmp_path / "zipped"
    code = main(["zip", *map(str, small_models), "--out", str(out), "--retrain-iterations", "3",
                 "--retrain-schedule", "layer", "--calibration-samples", "500", "--quiet"])
    assert code == 0
    assert {p.name for p in out.iterdir()} == {"plan.json", "weights.npz", "sources"}
    plan = json.loads((out / "plan.json").read_text())
    assert [l["n_shared"] for l in plan["layers"]] == [48, 24]
    assert [l["retrain"]["iterations"] for l in plan["layers"]] == [3, 3]
    capsys.readouterr()
    assert main(["evaluate", str(out), "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert [r["task"] for r in results] == ["a", "b"]
    assert all(0.0 < r["zipped_error"] < 0.5 and r["samples"] == 10000 for r in results)
    # a second zip into the same place is refused rather than overwriting
    assert main(["zip", *map(str, small_models), "--out", str(out), "--quiet"]) == 2


# --- the parser is derived from the settings dataclasses and the API's keywords ---------------

def _option_entries(help_text: str) -> dict[str, str]:
    """--flag → its whole help entry (argparse may wrap it onto following lines)."""
    entries, current = {}, None
    for line in help_text.splitlines():
        if line.startswith("  -"):
            current = line.split()[0].rstrip(",")
            entries[current] = line
        elif current is not None and line.startswith("   "):
            entries[current] += " " + line.strip()
        else:
            current = None
    return {flag: " ".join(text.split()) for flag, text in entries.items()}


def _help(command, capsys, monkeypatch) -> dict[str, str]:
    monkeypatch.setenv("COLUMNS", "200")
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    return _option_entries(capsys.readouterr().out)


def _zip_settings():
    from dataclasses import MISSING, fields

    from mtz_mobile.zipper.config import RetrainSettings, ZipConfig

    for owner in (ZipConfig, RetrainSettings):
        for f in fields(owner):
            if f.name != "retrain":
                default = f.default if f.default is not MISSING else f.default_factory()
                yield f.metadata.get("flag") or "--" + f.name.replace("_", "-"), default


@pytest.mark.parametrize("command", ["zip", "deploy"])
def test_every_zip_setting_is_an_option_with_its_default(command, capsys, monkeypatch):
    entries = _help(command, capsys, monkeypatch)
    for flag, default in _zip_settings():
        shown = "none" if default is None else ",".join(map(str, default)) if isinstance(default, list) else default
        assert flag in entries, f"{flag} missing from `{command} --help`"
        # a setting the preset fills shows each preset's value instead
        assert f"(default: {shown})" in entries[flag] or (
            default is None and "(default: from --preset: mtz " in entries[flag]), entries[flag]


@pytest.mark.parametrize("command", ["train-reference", "zip", "evaluate", "convert", "inspect", "bench", "push",
                                     "deploy"])
def test_help_shows_every_default(command, capsys, monkeypatch):
    entries = _help(command, capsys, monkeypatch)
    assert "--verbose" in entries
    for flag, text in entries.items():
        required = text.split()[0] == "--out"
        assert flag == "-h" or required or "(default" in text, text


def test_zip_arguments_become_the_config_without_zipping():
    from mtz_mobile import api
    from mtz_mobile.cli import build_parser
    from mtz_mobile.zipper.config import RetrainSettings, ZipConfig

    for command in ("zip", "deploy"):
        args = build_parser().parse_args([command, "a.keras", "b.keras", "--out", "x", "--alpha", "0.3",
                                          "--retrain-iterations", "7"])
        config = api.config_from_options(vars(args))
        assert config.alpha == 0.3 and config.retrain.iterations == 7
        assert config == ZipConfig(alpha=0.3, retrain=RetrainSettings(iterations=7))
    args = build_parser().parse_args(["zip", "a.keras", "--out", "x", "--shared", "all,12,0.5", "--batch-size", "9",
                                      "--data", "npz:one", "--data", "npz:two"])
    config = api.config_from_options(vars(args))
    assert config.shared == ["all", 12, 0.5] and config.retrain.batch_size == 9
    assert args.data == ["npz:one", "npz:two"]


@pytest.mark.parametrize("argv,function", [
    (["zip", "a.keras", "b.keras", "--out", "x"], "mtz_mobile.api:zip_models"),
    (["train-reference", "--out", "x"], "mtz_mobile.api:train_reference"),
    (["evaluate", "z"], "mtz_mobile.api:evaluate"),
    (["convert", "z", "--out", "m.tflite"], "converters:convert_zip"),
    (["inspect", "m.tflite"], "converters.inspection:inspect_model"),
    (["push", "m.tflite"], "mtz_mobile.device:push_model"),
])
def test_parsed_arguments_are_keywords_of_the_commands_api(argv, function):
    import importlib
    import inspect

    from mtz_mobile import api
    from mtz_mobile.cli import build_parser
    from mtz_mobile.cli.options import api_kwargs

    module, name = function.split(":")
    accepted = set(inspect.signature(getattr(importlib.import_module(module), name)).parameters)
    accepted |= set(api.ZIP_OPTIONS) | set(api.SEARCH_OPTIONS) if argv[0] == "zip" else set()
    kwargs = api_kwargs(build_parser().parse_args(argv))
    assert set(kwargs) - {"json"} <= accepted


@pytest.mark.parametrize("argv,target,expected", [
    ([], "host", dict()),
    (["--runtime", "compiled", "--runs", "7", "--xnnpack-cache", "on", "--timeout", "30"], "host",
     dict(runtime="compiled", runs=7, xnnpack_cache="on", timeout_s=30.0)),
    (["--runtime", "web", "--trials", "2", "--warmup", "0"], "web", dict(trials=2, warmup=0)),
    (["--adb-serial", "S", "--threads", "2"], "android", dict(serial="S", threads=2)),
    (["--benchmark-binary", "bm", "--xnnpack-cache", "file"], "android", dict(benchmark_binary="bm",
                                                                             xnnpack_cache="file")),
])
def test_bench_options_become_the_targets_settings(argv, target, expected):
    """One settings class per target: the options given, over that class's own defaults."""
    from mtz_mobile.bench.settings import TARGETS
    from mtz_mobile.cli import build_parser
    from mtz_mobile.cli.device_commands import bench_target
    from mtz_mobile.cli.options import settings_from

    args = build_parser().parse_args(["bench", "m.tflite", "--out", "r", *argv])
    assert bench_target(args) == target
    assert settings_from(args, TARGETS[target]) == TARGETS[target](**expected)


def test_deploy_options_become_its_settings_objects():
    """deploy's bench flags make a HostSettings over deploy's own defaults (compiled)."""
    from mtz_mobile.bench.settings import HostSettings
    from mtz_mobile.cli import build_parser
    from mtz_mobile.cli.options import settings_from
    from mtz_mobile.pipeline import DEPLOY_BENCH

    parse = build_parser().parse_args
    args = parse(["deploy", "a.keras", "b.keras", "--out", "x", "--runs", "5", "--transient-indirection"])
    assert settings_from(args, HostSettings, DEPLOY_BENCH) == HostSettings(runtime="compiled", runs=5,
                                                                         transient_indirection=True)
    args = parse(["deploy", "a.keras", "b.keras", "--out", "x"])
    assert settings_from(args, HostSettings, DEPLOY_BENCH) == DEPLOY_BENCH and args.bench


def test_a_new_bench_setting_is_one_field(monkeypatch, capsys, tmp_path):
    """A field added to a target's settings class is an option of `bench`, with its help, its default
    and its check, without naming it anywhere else; a bad value is one line, before any work (the
    model does not even exist) and with nothing written."""
    from dataclasses import dataclass

    from mtz_mobile.bench import settings
    from mtz_mobile.cli import build_parser
    from mtz_mobile.cli.device_commands import bench_target
    from mtz_mobile.cli.options import settings_from
    from mtz_mobile.flat_options import option

    @dataclass(frozen=True)
    class Cooling(settings.HostSettings):
        cooldown_ms: int = option(250, "pause between timed runs", minimum=0)

    monkeypatch.setitem(settings.TARGETS, "host", Cooling)
    entries = _help("bench", capsys, monkeypatch)
    assert entries["--cooldown-ms"] == "--cooldown-ms COOLDOWN_MS host only: pause between timed runs (default: 250)"
    args = build_parser().parse_args(["bench", "m.tflite", "--out", "r", "--cooldown-ms", "5"])
    assert settings_from(args, settings.TARGETS[bench_target(args)]) == Cooling(cooldown_ms=5)
    args = build_parser().parse_args(["bench", "m.tflite", "--out", "r", "--runtime", "web", "--cooldown-ms", "5"])
    with pytest.raises(MTZError, match="^--cooldown-ms sets the host bench, not the browser one: drop --cooldown-ms$"):
        bench_target(args)
    out = tmp_path / "r"
    assert main(["bench", str(tmp_path / "absent.tflite"), "--out", str(out), "--cooldown-ms", "-1"]) == 2
    lines = [l for l in capsys.readouterr().err.splitlines() if l.strip()]
    assert lines == ["mtz-mobile: error: cooldown_ms must be a whole number >= 0, got -1: give --cooldown-ms 0 or "
                     "more"] and not out.exists()


# --- quiet by default ----------------------------------------------------------------------------

TF_LOG_MARKERS = re.compile(r"^[IWEF]\d{4} |absl::InitializeLog|oneDNN custom operations|cuInit|"
                            r"To enable the following instructions|use_unbounded_threadpool|XNNPACK delegate",
                            re.MULTILINE)


@pytest.fixture(scope="module")
def tiny_zip(small_models, tmp_path_factory):
    out = tmp_path_factory.mktemp("tiny") / "zip"
    assert main(["zip", *map(str, small_models), "--out", str(out), "--retrain-iterations", "1",
                 "--calibration-samples", "200", "--quiet"]) == 0
    return out


def test_tensorflow_logs_only_with_verbose(tiny_zip):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    runs = {}
    for extra in ([], ["--verbose"]):
        proc = subprocess.run([sys.executable, "-m", "mtz_mobile.cli", *extra, "evaluate", str(tiny_zip)],
                              capture_output=True, text=True, env=env)
        assert proc.returncode == 0, proc.stderr
        runs[bool(extra)] = proc
    assert not TF_LOG_MARKERS.search(runs[False].stderr), runs[False].stderr
    assert TF_LOG_MARKERS.search(runs[True].stderr)
    assert runs[False].stdout == runs[True].stdout and "zipped" in runs[False].stdout

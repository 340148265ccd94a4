"""CLI commands that measure and ship a converted model: bench, push, deploy.

Each handler is a thin layer over mtz_mobile.bench, mtz_mobile.device and mtz_mobile.pipeline,
which are usable the same way from a notebook. Defaults and choices come from those modules
(HostSettings, RUNTIMES, QUANTIZATIONS, the Android bench's CACHE_STATES, deploy's DEPLOY_RUNTIME) and
deploy's zip settings from ZipConfig.
"""

from __future__ import annotations

from dataclasses import fields

from converters.dry_run import ConversionCheck
from mtz_mobile.bench.android import CACHE_STATES as ANDROID_CACHE_STATES
from mtz_mobile.bench.host import CACHE_STATES, HostSettings
from mtz_mobile.bench.probe import RUNTIMES
from mtz_mobile.contract import APP_PACKAGE, QUANTIZATIONS
from mtz_mobile.errors import MTZError
from mtz_mobile.pipeline import DEPLOY_RUNTIME
from mtz_mobile.zipper.config import BudgetSearch, ZipConfig

from .options import add_dataclass_options, add_quiet, api_kwargs, command, positive_int
from .zip_commands import add_zip_inputs

HOST = {f.name: f.default for f in fields(HostSettings) if f.init}
WEB = "web"   # bench --runtime web: LiteRT.js in the browser (mtz_mobile.web.bench)
_ANDROID_ONLY = ("adb_serial", "benchmark_binary")
_WEB_ONLY = ("trials",)
# LiteRT.js: one thread, no cache or flags option
_HOST_ONLY = ("threads", "runtime", "xnnpack_cache", "transient_indirection", "switch_steps")


def add_commands(sub) -> None:
    p = command(sub, "bench", "measure a zipped .tflite against its separate baselines: storage, memory (fresh "
                              "process per figure), latency, task switching; host or Android", _bench)
    p.add_argument("model_path", metavar="model", help="the zipped .tflite")
    p.add_argument("--baselines", nargs="+", default=[], metavar="TFLITE",
                   help="the separate per-task models (OUT_STEM.baseline_TASK.tflite from convert --baselines)")
    p.add_argument("--out", dest="out_dir", metavar="OUT", required=True,
                   help="report directory: report.json, report.md, PNG charts")
    _add_host_settings(p, bench=True)
    p.add_argument("--warmup", type=int, default=HOST["warmup"],
                   help="warm-up runs before timing (default runs/5, 1..20)")
    p.add_argument("--trials", type=positive_int, default=3,
                   help="--runtime web: fresh browsers per set, zipped and separate (default 3)")
    p.add_argument("--switch-steps", type=int, default=HOST["switch_steps"],
                   help="task-switching steps A,B,A,B… (default min(runs, 50))")
    p.add_argument("--adb-serial", help="Android mode: the device to run benchmark_model on (default: none, the host bench)")
    p.add_argument("--benchmark-binary", help="Android mode: LiteRT's arm64 benchmark_model to push")
    add_quiet(p)

    p = command(sub, "push", "copy a model to an Android device, checksum-verified: /data/local/tmp, or the "
                             "app's files/model.tflite with --app", _push)
    p.add_argument("model", help="the .tflite to copy")
    _add_push_target(p)

    p = command(sub, "deploy", "zip → convert (with baselines) → bench on the host → push; resumes, skipping "
                               "stages whose output is complete", _deploy)
    add_zip_inputs(p, out_help="directory for zip/, model.tflite, baselines and bench/", models_dest="models")
    add_dataclass_options(p, ZipConfig)
    add_dataclass_options(p, BudgetSearch)
    add_dataclass_options(p, ConversionCheck)
    p.add_argument("--quantize", choices=QUANTIZATIONS, default="none", help="quantization of the converted model")
    p.add_argument("--no-bench", dest="bench", action="store_false", help="skip the host bench")
    _add_host_settings(p, runtime=DEPLOY_RUNTIME)
    p.add_argument("--push", action="store_true", help="push the model to the device at the end")
    _add_push_target(p)
    add_quiet(p)

    p = command(sub, "phone-check", "on an Android phone: install the demo app (when built), push the model, start "
                                    "the app twice, run its instrumented tests, and judge each of its claims", _phone_check)
    p.add_argument("model", help="the .tflite the app should load (pushed into its files)")
    p.add_argument("--serial", help="the device (default: the only one attached)")


def _add_host_settings(p, bench: bool = False, runtime: str = HOST["runtime"]) -> None:
    """bench=True: the bench command, which also runs in the browser and on Android (deploy does neither)."""
    p.add_argument("--threads", type=positive_int, default=HOST["threads"], help="LiteRT CPU threads")
    p.add_argument("--runs", type=positive_int, default=HOST["runs"], help="timed runs per signature")
    p.add_argument("--runtime", choices=tuple(RUNTIMES) + ((WEB,) if bench else ()), default=runtime,
                   help="host: LiteRT Interpreter (XNNPACK by default) or CompiledModel with CpuOptions"
                        + ("; web: LiteRT.js in headless chromium, against the baselines beside the model" if bench else ""))
    states = ", ".join(ANDROID_CACHE_STATES)
    p.add_argument("--xnnpack-cache", choices=CACHE_STATES, default=HOST["xnnpack_cache"],
                   help="XNNPACK weight cache: on = ':memory', file = MODEL.xnnpack_cache beside each model "
                        "(checked against its stamp, rebuilt when stale; compiled only) (default: file for compiled, "
                        "off for interpreter, which has no such option"
                        + (f"; Android: each of {states} unless given, file = one cache file per signature on the "
                           "device, built by a cold run before the measured one)" if bench else ")"))
    p.add_argument("--transient-indirection", action="store_true",
                   help="compiled runtime on the host: XNNPACK's TRANSIENT_INDIRECTION_BUFFER flag, convolutions "
                        "rebuild their indirection buffers on every run instead of holding them (less anonymous "
                        "memory, slower runs; docs/RESULTS.md, issue 16)")


def _add_push_target(p) -> None:
    p.add_argument("--serial", help="the device (default: the only one attached)")
    p.add_argument("--app", nargs="?", const=APP_PACKAGE, metavar="PACKAGE",
                   help=f"push into PACKAGE's files dir via run-as; PACKAGE defaults to {APP_PACKAGE} "
                        "(default: no app, /data/local/tmp)")


def _bench(args) -> int:
    if args.transient_indirection and (args.runtime == WEB or args.adb_serial is not None
                                       or args.benchmark_binary is not None):
        raise MTZError("--transient-indirection applies to the host's compiled runtime only (LiteRT.js and "
                       "benchmark_model are not given XNNPACK flags here): drop it")
    if args.runtime == WEB:
        return _bench_web(args)
    if args.adb_serial is not None or args.benchmark_binary is not None:
        report = _bench_android(args)
    else:
        from mtz_mobile.bench import bench_host

        report = bench_host(**api_kwargs(args, *_ANDROID_ONLY, *_WEB_ONLY))
    st = report["storage"]
    print(f"wrote {args.out_dir}/report.json, report.md and {len(report['files']['charts'])} charts")
    if st["file_ratio"] is not None:
        print(f"file bytes zipped/baselines {st['file_ratio']:.3f}; "
              + "; ".join(f"latency {q['signature']} ({q['xnnpack_cache']}) {q['ratio']:.3f}"
                          for q in report["latency"]["ratios"] if q["ratio"] is not None))
    return 0


def _bench_web(args) -> int:
    from mtz_mobile.web.bench import bench_web

    if args.adb_serial is not None or args.benchmark_binary is not None:
        raise MTZError("--runtime web runs in this machine's browser: drop --adb-serial/--benchmark-binary "
                       "(open `mtz-mobile serve` on the phone instead)")
    report = bench_web(**api_kwargs(args, *_ANDROID_ONLY, *_HOST_ONLY))
    print(f"wrote {args.out_dir}/report.json and report.md")
    print("; ".join(f"{name} {r['ratio']:.3f}" for name, r in report["figures"].items()
                    if r["ratio"] is not None and ("latency" in name or "heap top" in name)))
    return 0


def _bench_android(args) -> dict:
    from mtz_mobile.bench import bench_android

    if args.runtime != HOST["runtime"]:
        raise MTZError("--runtime applies to the host bench; on Android benchmark_model is the runtime: "
                       "drop --runtime")
    # benchmark_model runs in every weight-cache state unless one is asked for
    caches = ANDROID_CACHE_STATES if args.xnnpack_cache is None else (args.xnnpack_cache,)
    kwargs = api_kwargs(args, "runtime", "switch_steps", "xnnpack_cache", "transient_indirection", "adb_serial",
                        *_WEB_ONLY)
    return bench_android(serial=args.adb_serial, caches=caches, **kwargs)


def _push(args) -> int:
    from mtz_mobile.device import push_model

    result = push_model(**api_kwargs(args))
    where = f"{result.app}:{result.remote}" if result.app else result.remote
    state = "already there (same sha256), nothing pushed" if result.skipped else "pushed and verified"
    print(f"{where}: {state}, {result.bytes:,} bytes, sha256 {result.sha256}")
    return 0


def _deploy(args) -> int:
    from mtz_mobile.pipeline import deploy

    from mtz_mobile.deploy_summary import SUMMARY_NAME, summary_markdown

    result = deploy(**api_kwargs(args))
    print("stages: " + ", ".join(f"{stage} {state}" for stage, state in result.stages.items()))
    print(f"model {result.model}; baselines {', '.join(str(p) for p in result.baselines.values())}")
    print(summary_markdown(result.summary))
    print(f"(also in {result.out_dir / SUMMARY_NAME})")
    if result.pushed is not None:
        print(f"on device: {(result.pushed.app + ':') if result.pushed.app else ''}{result.pushed.remote}")
    return 0


def _phone_check(args) -> int:
    from mtz_mobile.phone_check import phone_check

    steps, verdicts = phone_check(args.model, serial=args.serial)
    for step in steps:
        print(step)
    for verdict in verdicts:
        print(verdict.line())
    return 1 if any(v.state == "FAIL" for v in verdicts) else 0

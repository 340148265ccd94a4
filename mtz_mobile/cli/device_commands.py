"""CLI commands that measure and ship a converted model: bench, push, deploy.

Each handler is a thin layer over mtz_mobile.bench, mtz_mobile.device and mtz_mobile.pipeline,
which are usable the same way from a notebook. The bench's options are the fields of its settings
classes (mtz_mobile.bench.settings: one per target), deploy's those of ZipConfig, BudgetSearch,
ConversionCheck and HostSettings (with deploy's defaults); the handlers build those objects, whose
checks run before any work.
"""

from __future__ import annotations

from converters.dry_run import ConversionCheck
from mtz_mobile.bench.settings import TARGETS, HostSettings
from mtz_mobile.contract import APP_PACKAGE, QUANTIZATIONS
from mtz_mobile.errors import MTZError
from mtz_mobile.flat_options import flat_fields
from mtz_mobile.pipeline import DEPLOY_BENCH
from mtz_mobile.zipper.config import BudgetSearch, ZipConfig

from .options import add_dataclass_options, add_quiet, add_settings_options, api_kwargs, command, given_options, \
    settings_from
from .zip_commands import add_zip_inputs

WEB = "web"   # bench --runtime web: the browser's bench (LiteRT.js), not a host runtime
# how --help and the errors name each target
LABELS = {"host": "host", "android": "Android", "web": "browser"}
ANDROID_KEYS = ("serial", "benchmark_binary")   # either one given: the bench runs on a phone


def add_commands(sub) -> None:
    p = command(sub, "bench", "measure a zipped .tflite against its separate baselines: storage, memory (fresh "
                              "process per figure), latency, task switching; on the host, on an Android phone "
                              "(--adb-serial/--benchmark-binary) or in the browser (--runtime web)", _bench)
    p.add_argument("model_path", metavar="model", help="the zipped .tflite")
    p.add_argument("--baselines", nargs="+", default=[], metavar="TFLITE",
                   help="the separate per-task models (OUT_STEM.baseline_TASK.tflite from convert --baselines)")
    p.add_argument("--out", dest="out_dir", metavar="OUT", required=True,
                   help="report directory: report.json, report.md, PNG charts")
    add_settings_options(p, {LABELS[t]: cls for t, cls in TARGETS.items()})
    runtime = next(a for a in p._actions if a.dest == "runtime")
    runtime.choices = (*runtime.choices, WEB)
    runtime.help = runtime.help.replace("host only: ", "host: ").replace(
        " (default:", "; web: LiteRT.js in headless chromium, against the baselines beside the model (default:")
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
    add_settings_options(p, {"host": HostSettings}, defaults=DEPLOY_BENCH)
    p.add_argument("--push", action="store_true", help="push the model to the device at the end")
    _add_push_target(p)
    add_quiet(p)

    p = command(sub, "phone-check", "on an Android phone: install the demo app (when built), push the model, start "
                                    "the app twice, run its instrumented tests, and judge each of its claims", _phone_check)
    p.add_argument("model", help="the .tflite the app should load (pushed into its files)")
    p.add_argument("--serial", help="the device (default: the only one attached)")


def _add_push_target(p) -> None:
    p.add_argument("--serial", help="the device (default: the only one attached)")
    p.add_argument("--app", nargs="?", const=APP_PACKAGE, metavar="PACKAGE",
                   help=f"push into PACKAGE's files dir via run-as; PACKAGE defaults to {APP_PACKAGE} "
                        "(default: no app, /data/local/tmp)")


def field_keys(cls) -> set[str]:
    return {key for key, _, _ in flat_fields(cls)}


def bench_target(args) -> str:
    """The target the options name: --runtime web the browser, --adb-serial or --benchmark-binary a
    phone, else the host; an option of another target is refused in one line."""
    web = getattr(args, "runtime", None) == WEB
    android = any(hasattr(args, key) for key in ANDROID_KEYS)
    if web and android:
        raise MTZError("--runtime web runs in this machine's browser: drop --adb-serial/--benchmark-binary "
                       "(open `mtz-mobile serve` on the phone instead)")
    target = WEB if web else "android" if android else "host"
    given = given_options(args, *TARGETS.values())
    if web:
        given.pop("runtime")   # the target itself
    foreign = {key: flag for key, flag in given.items() if key not in field_keys(TARGETS[target])}
    if foreign:
        flags = ", ".join(foreign.values())
        owners = [LABELS[t] for t, cls in TARGETS.items() if set(foreign) & field_keys(cls)]
        raise MTZError(f"{flags} set{'s' if len(foreign) == 1 else ''} the {' or '.join(owners)} bench, not the "
                       f"{LABELS[target]} one: drop {flags}")
    return target


def _bench(args) -> int:
    from mtz_mobile.bench import bench

    target = bench_target(args)
    settings = settings_from(args, TARGETS[target])
    report = bench(args.model_path, args.baselines, target, settings, args.out_dir, args.progress)
    if target == WEB:
        print(f"wrote {args.out_dir}/report.json and report.md")
        print("; ".join(f"{name} {r['ratio']:.3f}" for name, r in report["figures"].items()
                        if r["ratio"] is not None and ("latency" in name or "heap top" in name)))
        return 0
    st = report["storage"]
    print(f"wrote {args.out_dir}/report.json, report.md and {len(report['files']['charts'])} charts")
    if st["file_ratio"] is not None:
        print(f"file bytes zipped/baselines {st['file_ratio']:.3f}; "
              + "; ".join(f"latency {q['signature']} ({q['xnnpack_cache']}) {q['ratio']:.3f}"
                          for q in report["latency"]["ratios"] if q["ratio"] is not None))
    return 0


def _push(args) -> int:
    from mtz_mobile.device import push_model

    result = push_model(**api_kwargs(args))
    where = f"{result.app}:{result.remote}" if result.app else result.remote
    state = "already there (same sha256), nothing pushed" if result.skipped else "pushed and verified"
    print(f"{where}: {state}, {result.bytes:,} bytes, sha256 {result.sha256}")
    return 0


def _deploy(args) -> int:
    from mtz_mobile import api
    from mtz_mobile.deploy_summary import SUMMARY_NAME, summary_markdown
    from mtz_mobile.pipeline import deploy

    bench = settings_from(args, HostSettings, DEPLOY_BENCH)   # checked before the zip starts
    if not args.bench and given_options(args, HostSettings):
        raise MTZError(f"--no-bench skips the bench that {', '.join(given_options(args, HostSettings).values())} "
                       "set: drop one or the other")
    search, zip_options = api.split_search({k: v for k, v in vars(args).items()
                                            if k in api.ZIP_OPTIONS | api.SEARCH_OPTIONS})
    config = api.models_config(zip_options, args.models)
    result = deploy(args.models, args.out_dir, data=args.data, names=args.names, data_dir=args.data_dir,
                    config=config, search=search, bench=bench if args.bench else None, quantize=args.quantize,
                    push=args.push, serial=args.serial, app=args.app, progress=args.progress,
                    expected_errors=args.expected_errors, dry_run=args.dry_run)
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

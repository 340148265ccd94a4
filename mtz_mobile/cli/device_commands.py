"""CLI commands that measure and ship a converted model: bench, push, deploy.

Each handler is a thin layer over mtz_mobile.bench, mtz_mobile.device and mtz_mobile.deploy,
which are usable the same way from a notebook.
"""

from __future__ import annotations


def _positive_int(text: str) -> int:
    import argparse

    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text} must be >= 1")
    return value


def add_device_commands(sub) -> dict:
    """Register the subcommands on ``sub``; return {name: handler(args) -> exit code}."""
    from mtz_mobile.contract import APP_PACKAGE

    p = sub.add_parser("bench", help="measure a zipped .tflite against its separate baselines: storage, memory "
                                     "(fresh process per figure), latency, task switching; host or Android")
    p.add_argument("model", help="the zipped .tflite")
    p.add_argument("--baselines", nargs="+", default=[], metavar="TFLITE",
                   help="the separate per-task models (OUT_STEM.baseline_TASK.tflite from convert --baselines)")
    p.add_argument("--out", required=True, help="report directory: report.json, report.md, PNG charts")
    p.add_argument("--threads", type=_positive_int, default=1)
    p.add_argument("--runs", type=_positive_int, default=50, help="timed runs per signature")
    p.add_argument("--warmup", type=int, help="warm-up runs before timing (default runs/5, 1..20)")
    p.add_argument("--runtime", choices=["interpreter", "compiled"], default="interpreter",
                   help="host: LiteRT Interpreter (XNNPACK default) or CompiledModel with CpuOptions")
    p.add_argument("--xnnpack-cache", choices=["on", "off"],
                   help="XNNPACK weight cache (default: on for compiled, off for interpreter, which has no "
                        "such option; Android: both unless given)")
    p.add_argument("--switch-steps", type=int, help="task-switching steps A,B,A,B… (default min(runs, 50))")
    p.add_argument("--adb-serial", help="Android mode: the device to run benchmark_model on")
    p.add_argument("--benchmark-binary", help="Android mode: LiteRT's arm64 benchmark_model to push")
    p.add_argument("--quiet", action="store_true", help="no progress display")

    p = sub.add_parser("push", help="copy a model to an Android device, checksum-verified: /data/local/tmp, or "
                                    "the app's files/model.tflite with --app")
    p.add_argument("model")
    p.add_argument("--serial", help="the device (default: the only one attached)")
    p.add_argument("--app", nargs="?", const=APP_PACKAGE, metavar="PACKAGE",
                   help="push into PACKAGE's files dir via run-as (PACKAGE defaults to the demo app)")

    p = sub.add_parser("deploy", help="zip → convert (with baselines) → bench on the host → push; resumes, "
                                      "skipping stages whose output is complete")
    p.add_argument("models", nargs="+", help="the trained .keras models")
    p.add_argument("--out", required=True, help="directory for zip/, model.tflite, baselines and bench/")
    p.add_argument("--data", action="append", help="data spec per model or one for all (default fashion-mnist)")
    p.add_argument("--data-dir")
    p.add_argument("--names", type=lambda s: s.split(","), help="task names, comma-separated")
    p.add_argument("--retrain-iterations", type=int, help="joint retraining steps after each zipped layer")
    p.add_argument("--quantize", choices=["none", "fp16", "dynamic-int8", "int8"], default="none")
    p.add_argument("--no-bench", action="store_true", help="skip the host bench")
    p.add_argument("--threads", type=_positive_int, default=1)
    p.add_argument("--runs", type=_positive_int, default=50)
    p.add_argument("--runtime", choices=["interpreter", "compiled"], default="interpreter")
    p.add_argument("--xnnpack-cache", choices=["on", "off"])
    p.add_argument("--push", action="store_true", help="push the model to the device at the end")
    p.add_argument("--serial")
    p.add_argument("--app", nargs="?", const=APP_PACKAGE, metavar="PACKAGE")
    p.add_argument("--quiet", action="store_true")
    return {"bench": _bench, "push": _push, "deploy": _deploy}


def _bench(args) -> int:
    from mtz_mobile.errors import MTZError

    android = args.adb_serial is not None or args.benchmark_binary is not None
    if android:
        from mtz_mobile.bench import bench_android

        if args.runtime != "interpreter":
            raise MTZError("--runtime applies to the host bench; on Android benchmark_model is the runtime: "
                           "drop --runtime")
        caches = ("off", "on") if args.xnnpack_cache is None else (args.xnnpack_cache,)
        report = bench_android(args.model, args.baselines, serial=args.adb_serial,
                               benchmark_binary=args.benchmark_binary, threads=args.threads, runs=args.runs,
                               warmup=args.warmup, caches=caches, out_dir=args.out, progress=not args.quiet)
    else:
        from mtz_mobile.bench import bench_host

        report = bench_host(args.model, args.baselines, out_dir=args.out, progress=not args.quiet,
                            threads=args.threads, runs=args.runs, warmup=args.warmup, runtime=args.runtime,
                            xnnpack_cache=args.xnnpack_cache, switch_steps=args.switch_steps)
    st = report["storage"]
    print(f"wrote {args.out}/report.json, report.md and {len(report['files']['charts'])} charts")
    if st["file_ratio"] is not None:
        print(f"file bytes zipped/baselines {st['file_ratio']:.3f}; "
              + "; ".join(f"latency {q['signature']} ({q['xnnpack_cache']}) {q['ratio']:.3f}"
                          for q in report["latency"]["ratios"] if q["ratio"] is not None))
    return 0


def _push(args) -> int:
    from mtz_mobile.device import push_model

    result = push_model(args.model, serial=args.serial, app=args.app)
    where = f"{result.app}:{result.remote}" if result.app else result.remote
    state = "already there (same sha256), nothing pushed" if result.skipped else "pushed and verified"
    print(f"{where}: {state}, {result.bytes:,} bytes, sha256 {result.sha256}")
    return 0


def _deploy(args) -> int:
    from mtz_mobile.pipeline import deploy

    extra = {} if args.retrain_iterations is None else {"retrain_iterations": args.retrain_iterations}
    result = deploy(args.models, args.out, data=args.data or "fashion-mnist", names=args.names,
                    data_dir=args.data_dir, push=args.push, serial=args.serial,
                    app=args.app, quantize=args.quantize, bench=not args.no_bench,
                    threads=args.threads, runs=args.runs, runtime=args.runtime, xnnpack_cache=args.xnnpack_cache,
                    progress=not args.quiet, **extra)
    for stage, state in result.stages.items():
        print(f"{stage}: {state}")
    print(f"model {result.model}; baselines {', '.join(str(p) for p in result.baselines.values())}")
    if result.pushed is not None:
        print(f"on device: {(result.pushed.app + ':') if result.pushed.app else ''}{result.pushed.remote}")
    return 0

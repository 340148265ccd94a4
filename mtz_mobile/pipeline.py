"""`mtz-mobile deploy`: zip → convert (with baselines) → bench on the host → push, each stage's
output kept under one directory so that an interrupted deploy resumes where it stopped:

    OUT/zip/                          the zip directory (plan.json, weights.npz, sources/)
    OUT/model.tflite                  the zipped model, one signature per task (+ "all")
    OUT/model.baseline_TASK.tflite    each original model on its own
    OUT/model.samples.json            test images of the zip's own data for `mtz-mobile serve`'s page
    OUT/*.tflite.xnnpack_cache[.json] XNNPACK's packed weights of each model and their stamp (the
                                      default bench, --runtime compiled with --xnnpack-cache file)
    OUT/bench/                        report.json, report.md, charts
    OUT/summary.md                    the answer: errors before/after, shared %, file, latency, memory

Each stage says whether its output is current for these inputs and settings (zip_staleness,
conversion_staleness, bench_staleness: each stage's ``staleness.py`` owns its rule); deploy runs it
again when not, printing why, and always when the stage before it ran.

The settings come as the stages' own objects: ``config`` (ZipConfig), ``search`` (BudgetSearch),
``bench`` (HostSettings, None for no bench). In a notebook the zip settings may instead be given
as flat keywords (``retrain_iterations=90``), read once through ``api.models_config``.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .contract import baseline_path
from .deploy_summary import summarize, write_summary
from .errors import MTZError
from .fileio import check_output, output_lock, partial_dir
from .bench.settings import HostSettings
from .progress import Progress
from .zipper.config import BudgetSearch, ZipConfig
from .zipper.staleness import zip_staleness

MODEL_NAME = "model.tflite"
# deploy's bench unless told otherwise: CompiledModel, whose default weight cache is the stamped
# file beside each model (HostSettings.resolved_cache), the loading measured best (RESULTS, "Memory")
DEPLOY_BENCH = HostSettings(runtime="compiled")


@dataclass
class DeployResult:
    out_dir: Path
    model: Path
    baselines: dict[str, Path]
    report: dict | None
    pushed: object | None
    stages: dict[str, str] = field(default_factory=dict)  # stage → "done" | "skipped"
    summary: dict | None = None   # deploy_summary.summarize: the answer, also OUT/summary.md


def deploy(models: list[str | os.PathLike], out_dir: str | os.PathLike, data="fashion-mnist",
           names: list[str] | None = None, data_dir=None, config: ZipConfig | None = None,
           search: BudgetSearch | None = None, bench: HostSettings | None = DEPLOY_BENCH, quantize: str = "none",
           joint: bool = True, push: bool = False, serial: str | None = None, app: str | None = None,
           progress: bool = True, expected_errors=None, dry_run: bool = True, **zip_options) -> DeployResult:
    """Run (or resume) every stage; returns where each output is and which stages ran. ``config``:
    the zip's settings (default: ZipConfig's, with the references' training length read beside the
    models), or flat ``zip_options`` instead; ``search``: a budget search instead of one zip;
    ``bench``: the host bench's settings, None to skip it."""
    from . import api

    out = check_output(out_dir, directory=True)
    for m in models:
        if not Path(m).is_file():
            raise MTZError(f"model {m} not found: give the trained .keras or .onnx files to deploy")
    if bench is not None and not isinstance(bench, HostSettings):
        raise MTZError(f"bench must be HostSettings or None, not {bench!r}: e.g. bench=HostSettings(runs=20)")
    tasks = api.task_names([str(m) for m in models], names)
    config, search = _zip_settings(config, search, zip_options, models)
    with output_lock(out):
        out.mkdir(parents=True, exist_ok=True)
        bar = Progress(3 + int(bench is not None) + int(push), label="deploy", enabled=progress)
        stages = {"zip": _zip_stage(models, out / "zip", tasks, data, names, data_dir, config, search, progress,
                                    dry_run, bar, expected_errors)}
        model = out / MODEL_NAME
        stages["convert"] = _convert_stage(out / "zip", model, stages["zip"] == "done", quantize, joint,
                                           data_dir, bar)
        baselines = _baselines(model, tasks)
        _page_samples(model, out / "zip", stages["convert"] == "done", data, data_dir)
        report = None
        if bench is not None:
            stages["bench"], report = _bench_stage(out / "bench", model, baselines, stages["convert"] == "done",
                                                   bench, progress, bar)
        pushed = None
        if push:
            from .device import push_model

            bar.step("push")
            pushed = push_model(model, serial=serial, app=app)
            stages["push"] = "skipped" if pushed.skipped else "done"
        bar.step("summary: each task's test error before and after")
        summary = summarize(out, model, baselines, report, data, data_dir)
        write_summary(out, summary)
        bar.close()
    return DeployResult(out, model, baselines, report, pushed, stages, summary)


def _zip_settings(config: ZipConfig | None, search: BudgetSearch | None, zip_options: dict,
                  models) -> tuple[ZipConfig, BudgetSearch | None]:
    """The zip's config and budget search from the objects, or from flat keyword options (one or the other)."""
    from . import api

    bench_keys = sorted(set(zip_options) & set(HostSettings.__dataclass_fields__))
    if bench_keys:
        raise MTZError(f"{', '.join(bench_keys)} set the bench: give bench=HostSettings({bench_keys[0]}=...)")
    if zip_options:
        if config is not None or search is not None:
            raise MTZError("give either config/search objects or flat zip options, not both")
        search, zip_options = api.split_search(zip_options)
    config = config if config is not None else api.models_config(zip_options, [str(m) for m in models])
    return api.start_distribution(config), search


def _page_samples(model: Path, zip_dir: Path, converted: bool, data, data_dir) -> None:
    """The browser page's samples beside the model: the zip's own test images (mtz_mobile.web.samples)."""
    from .web.samples import samples_path, write_zip_samples

    if converted or not samples_path(model).is_file():
        write_zip_samples(model, zip_dir, data_dir, data if isinstance(data, dict) else None)


def _baselines(model: Path, tasks: list[str]) -> dict[str, Path]:
    return {t: baseline_path(model, t) for t in tasks}


def _zip_stage(models, zip_dir: Path, tasks: list[str], data, names, data_dir, config: ZipConfig,
               search: BudgetSearch | None, progress: bool, dry_run: bool, bar: Progress, expected_errors=None) -> str:
    from . import api  # deferred: the zipper starts TensorFlow

    if search is None:
        stale = zip_staleness(zip_dir, dict(zip(tasks, models)), data, config, data_dir)
    else:
        from .zipper.budget import search_staleness

        stale = search_staleness(zip_dir, dict(zip(tasks, models)), data, config, search, data_dir)
    if stale is None:
        bar.step("zip: complete, skipped")
        return "skipped"
    partial = partial_dir(zip_dir)
    if stale == "missing":
        bar.step("zip: resuming" if partial.exists() else "zip")
    else:
        bar.step(f"zip: {stale}, zipping again")
    api.zip_models(models, out_dir=zip_dir, data=data, names=names, data_dir=data_dir, config=config,
                   resume=partial.exists(), overwrite=stale != "missing", progress=progress,
                   expected_errors=expected_errors, dry_run=dry_run, **(asdict(search) if search else {}))
    return "done"


def _convert_stage(zip_dir: Path, model: Path, zipped: bool, quantize: str, joint: bool, data_dir,
                   bar: Progress) -> str:
    from converters import convert_zip
    from converters.staleness import conversion_staleness

    stale = "zip made again" if zipped else conversion_staleness(model, zip_dir, quantize, joint, baselines=True)
    if stale is None:
        bar.step("convert: complete, skipped")
        return "skipped"
    bar.step("convert (with baselines)" if stale in ("missing", "zip made again")
             else f"convert: {stale}, converting again")
    convert_zip(zip_dir, model, quantize=quantize, joint=joint, baselines=True, data_dir=data_dir)
    return "done"


def _bench_stage(bench_dir: Path, model: Path, baselines: dict[str, Path], converted: bool,
                 settings: HostSettings, progress: bool, bar: Progress) -> tuple[str, dict]:
    from .bench import bench, bench_staleness, read_report

    stale = "model converted again" if converted else bench_staleness(bench_dir, model, list(baselines.values()),
                                                                      settings)
    if stale is None:
        bar.step("bench: complete, skipped")
        return "skipped", read_report(bench_dir / "report.json")
    bar.step("bench (host)" if stale in ("missing", "model converted again") else f"bench: {stale}, running again")
    report = bench(model, list(baselines.values()), "host", settings, out_dir=bench_dir, progress=progress)
    return "done", report

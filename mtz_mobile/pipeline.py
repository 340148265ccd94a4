"""`mtz-mobile deploy`: zip → convert (with baselines) → bench on the host → push, each stage's
output kept under one directory so that an interrupted deploy resumes where it stopped:

    OUT/zip/                          the zip directory (plan.json, weights.npz, sources/)
    OUT/model.tflite                  the zipped model, one signature per task (+ "all")
    OUT/model.baseline_TASK.tflite    each original model on its own
    OUT/bench/                        report.json, report.md, charts

A stage whose output is complete (and made from the current inputs) is skipped.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from mtz_mobile.bench.common import Progress
from .errors import MTZError

MODEL_NAME = "model.tflite"


@dataclass
class DeployResult:
    out_dir: Path
    model: Path
    baselines: dict[str, Path]
    report: dict | None
    pushed: object | None
    stages: dict[str, str] = field(default_factory=dict)  # stage → "done" | "skipped"


def _load_zip(zip_dir: Path):
    """The finished zip directory, or None where it is missing or damaged (zip again)."""
    from mtz_mobile.zipper.plan import load_zip_dir

    try:
        return load_zip_dir(zip_dir)
    except MTZError:
        return None


def _data_specs(data, tasks: list[str]) -> list:
    """Each task's data spec as the zipper records it in plan.tasks[i].data; a malformed ``data``
    gives specs that differ from any plan's, so the zip runs and reports the mistake itself."""
    if isinstance(data, dict):
        return [getattr(data.get(t), "spec", None) for t in tasks]
    specs = [data] if isinstance(data, str) else list(data)
    return specs * len(tasks) if len(specs) == 1 else specs


def _stale_reason(plan, model_hashes: list[str], config, specs: list) -> str | None:
    """Why the saved zip was not made from these inputs, or None when it was."""
    if [t.sha256 for t in plan.tasks] != model_hashes:
        return "models changed"  # the same task names from other files, e.g. retrained references
    from mtz_mobile.zipper.config import ZipConfig

    # the zipper's own --resume check: the saved settings read back as a config, compared as JSON
    saved = ZipConfig.from_json({k: v for k, v in plan.settings.items() if k != "sparse_detected"})
    if saved.to_json() != config.to_json():
        return "zip settings changed"
    if [t.data for t in plan.tasks] != specs:
        return "data changed"
    return None


def _convert_complete(model: Path, zipped, tasks: list[str]) -> bool:
    """model.tflite and every baseline exist, load, and were converted from this zip's plan."""
    from converters.flatbuffer import load_model
    from converters.manifest import read_manifest
    from .contract import baseline_path

    paths = [model] + [baseline_path(model, t) for t in tasks]
    if not all(p.is_file() for p in paths):
        return False
    if any(p.stat().st_mtime < (zipped.path / "plan.json").stat().st_mtime for p in paths):
        return False
    try:
        manifest = read_manifest(load_model(model))
        for p in paths[1:]:
            load_model(p)
    except MTZError:
        return False
    if manifest is None:
        return False
    want = {t.name: t.sha256 for t in zipped.plan.tasks}
    return {t["name"]: t["source"]["sha256"] for t in manifest["tasks"]} == want


def _bench_complete(bench_dir: Path, model: Path) -> bool:
    from mtz_mobile.graph.keras_io import sha256_of
    from mtz_mobile.bench.report import read_report

    if not (bench_dir / "report.json").is_file():
        return False
    try:
        report = read_report(bench_dir / "report.json")
    except MTZError:
        return False
    return report["model"]["sha256"] == sha256_of(model) and all(
        (bench_dir / name).is_file() for name in [report["files"]["markdown"]] + report["files"]["charts"])


def deploy(models: list[str | os.PathLike], out_dir: str | os.PathLike, data="fashion-mnist",
           names: list[str] | None = None, data_dir=None, push: bool = False, serial: str | None = None,
           app: str | None = None, joint: bool = True, quantize: str = "none", bench: bool = True,
           threads: int = 1, runs: int = 50, runtime: str = "interpreter", xnnpack_cache: str | None = None,
           progress: bool = True, **zip_options) -> DeployResult:
    """Run (or resume) every stage; returns where each output is and which stages ran."""
    from converters import convert_zip
    from .contract import baseline_path

    from . import api
    from .bench import bench_host
    from mtz_mobile.graph.keras_io import sha256_of

    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise MTZError(f"{out} exists and is not a directory: give a directory for --out")
    for m in models:
        if not Path(m).is_file():
            raise MTZError(f"model {m} not found: give the trained .keras files to deploy")
    tasks = api.task_names([str(m) for m in models], names)
    out.mkdir(parents=True, exist_ok=True)
    zip_dir, model = out / "zip", out / MODEL_NAME
    bench_dir = out / "bench"
    bar = Progress(3 + int(bench) + int(push), enabled=progress, label="deploy")
    stages = {}

    config = zip_options["config"] if "config" in zip_options else api.make_config(**zip_options)
    saved = _load_zip(zip_dir)
    stale = None
    if saved is not None:
        saved_tasks = saved.plan.tasks
        if [t.name for t in saved_tasks] != tasks:
            raise MTZError(f"{zip_dir} holds tasks {', '.join(t.name for t in saved_tasks)}, not {', '.join(tasks)}: "
                           "use another --out or delete it")
        stale = _stale_reason(saved.plan, [sha256_of(m) for m in models], config, _data_specs(data, tasks))
    if saved is not None and stale is None:
        bar.step("zip: complete, skipped")
        stages["zip"] = "skipped"
    else:
        partial = zip_dir.with_name(zip_dir.name + ".partial")
        bar.step(f"zip: {stale}, zipping again" if stale else "zip: resuming" if partial.exists() else "zip")
        api.zip_models(models, out_dir=zip_dir, data=data, names=names, data_dir=data_dir,
                       resume=partial.exists(), overwrite=bool(stale), progress=progress,
                       **zip_options)
        stages["zip"] = "done"

    if stages["zip"] == "skipped" and _convert_complete(model, saved, tasks):
        bar.step("convert: complete, skipped")
        stages["convert"] = "skipped"
    else:
        bar.step("convert (with baselines)")
        convert_zip(zip_dir, model, quantize=quantize, joint=joint, baselines=True, data_dir=data_dir)
        stages["convert"] = "done"
    baselines = {t: baseline_path(model, t) for t in tasks}

    report = None
    if bench:
        if stages["convert"] == "skipped" and _bench_complete(bench_dir, model):
            from mtz_mobile.bench.report import read_report

            bar.step("bench: complete, skipped")
            report = read_report(bench_dir / "report.json")
            stages["bench"] = "skipped"
        else:
            bar.step("bench (host)")
            report = bench_host(model, list(baselines.values()), out_dir=bench_dir, progress=progress,
                                threads=threads, runs=runs, runtime=runtime, xnnpack_cache=xnnpack_cache)
            stages["bench"] = "done"

    pushed = None
    if push:
        from .device import push_model

        bar.step("push")
        pushed = push_model(model, serial=serial, app=app)
        stages["push"] = "skipped" if pushed.skipped else "done"
    bar.close()
    return DeployResult(out, model, baselines, report, pushed, stages)

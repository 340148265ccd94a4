"""Host benchmark of a zipped .tflite against its separate baselines, with LiteRT on this machine.

Every memory figure comes from a fresh child process (``mtz_mobile.bench.probe``) that loads
the files, runs what the stage asks and reports /proc/self/status; latency and task switching
are measured in children too, zipped and baselines interleaved under the same runtime settings.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from mtz_mobile.errors import MTZError
from mtz_mobile.fileio import check_output, output_lock
from mtz_mobile.progress import Progress

from .core import describe_model, latency_entry, latency_ratios, match_baselines, ratio, stats, storage_figures
from .memory import memory_ratios, versus_one_original
from .probe import MARKER
from .settings import HostSettings

def run_probe(request: dict, timeout_s: float) -> dict:
    """Run one measurement in a fresh Python process; its failure becomes one MTZError line."""
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parents[2])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    try:
        proc = subprocess.run([sys.executable, "-m", "mtz_mobile.bench.probe"], input=json.dumps(request),
                              capture_output=True, text=True, timeout=timeout_s, env=env)
    except subprocess.TimeoutExpired:
        raise MTZError(f"a {request['kind']} measurement ran past {timeout_s:.0f} s: use fewer --runs") from None
    for line in proc.stdout.splitlines():
        if line.startswith(MARKER):
            return json.loads(line[len(MARKER):])
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    reason = next((l for l in reversed(lines) if l.startswith("probe failed")), lines[-1] if lines else
                  f"exit status {proc.returncode}")
    raise MTZError(f"the {request['kind']} measurement failed ({reason}): check that LiteRT loads the files "
                   f"(`mtz-mobile inspect`), or try --runtime interpreter")


def _memory_plan(model: dict, baselines: list[dict]) -> list[tuple[str, str, str | None, list, list]]:
    """(variant, stage, task, files, runs) for every fresh-process memory measurement."""
    tasks, plan = model["tasks"], []
    plan.append(("zipped", "load", None, [model["path"]], []))
    for t in tasks:
        plan.append(("zipped", "task", t, [model["path"]], [[0, t]]))
    plan.append(("zipped", "all_tasks", None, [model["path"]], [[0, t] for t in tasks]))
    if model["joint_key"]:
        plan.append(("zipped", "joint", model["joint_key"], [model["path"]], [[0, model["joint_key"]]]))
    if baselines:
        files = [b["path"] for b in baselines]
        index = {b["task"]: i for i, b in enumerate(baselines)}
        plan.append(("baselines", "load", None, files, []))
        for t in tasks:
            plan.append(("baselines", "task", t, files, [[index[t], t]]))
        plan.append(("baselines", "all_tasks", None, files, [[index[t], t] for t in tasks]))
        # each original alone, serving its task: what one of today's separate deployments costs
        for t in tasks:
            plan.append(("single", "task", t, [baselines[index[t]]["path"]], [[0, t]]))
    return plan


def host_environment() -> dict:
    from importlib import metadata

    def version(name):
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    return {"kind": "host", "platform": platform.platform(), "machine": platform.machine(),
            "python": platform.python_version(), "cpu_count": os.cpu_count(),
            "litert": f"ai-edge-litert {version('ai-edge-litert')}" if version("ai-edge-litert") else None}


def measure(model_path, baselines=(), settings: HostSettings = HostSettings(), out_dir=None,
               progress: bool = True) -> dict:
    """Measure ``model_path`` against ``baselines`` on this machine and return the report dict;
    with ``out_dir``, also write report.json, report.md and the charts there (``mtz_mobile.bench.bench``
    is the entry point for every target)."""
    if not Path("/proc/self/status").exists():
        raise MTZError("host memory figures need Linux's /proc/self/status: run the host bench on Linux")
    if out_dir is not None:
        check_output(out_dir, directory=True)
    with output_lock(out_dir) if out_dir is not None else contextlib.nullcontext():
        return _bench_host(model_path, baselines, settings, out_dir, progress)


def _bench_host(model_path, baselines, settings: HostSettings, out_dir, progress: bool) -> dict:
    from .report import new_report, write_report

    model = describe_model(model_path)
    base = match_baselines(model, baselines)
    plan = _memory_plan(model, base)
    switch = bool(base) and len(model["tasks"]) >= 2
    bar = Progress(1 + len(plan) + 1 + int(switch) + int(out_dir is not None), label="bench", enabled=progress)

    report = new_report("host", settings.to_json(), host_environment(), model, base)
    bar.step("storage")
    report["storage"] = storage_figures(model, base)
    common = {"runtime": settings.runtime, "threads": settings.threads, "cache_path": settings.cache_path,
              "cache_beside": settings.resolved_cache == "file", "xnnpack_flags": settings.xnnpack_flags}
    cache_files = _prepare_cache_files(model, base, settings, common) if common["cache_beside"] else None
    report["memory"] = _measure_memory(plan, settings, common, bar)
    if cache_files is not None:
        report["memory"]["weight_cache_files"] = cache_files
    bar.step("latency: zipped and baselines interleaved")
    report["latency"] = _measure_latency(model, base, settings, common)
    if switch:
        bar.step(f"task switching: {settings.resolved_switch_steps} steps A,B,A,B… in three modes")
        report["switching"] = _measure_switching(model, base, settings, common)
    if out_dir is not None:
        bar.step(f"writing {out_dir}")
        write_report(report, out_dir)
    bar.close(f"bench: wrote {out_dir}" if out_dir is not None else None)
    return report


def cold_load(path, common: dict | None = None, timeout_s: float = 120) -> float:
    """Load ``path`` in a fresh process with its weight cache file beside it, which writes that file
    when it is absent; returns the load's seconds. ``common``: the bench's probe settings (default:
    CompiledModel, one thread)."""
    common = common or {"runtime": "compiled", "threads": 1, "cache_path": "", "cache_beside": True}
    return run_probe(dict(common, kind="memory", files=[str(path)], runs=[], repeats=1), timeout_s)["load_seconds"]


def _prepare_cache_files(model: dict, base: list[dict], settings: HostSettings, common: dict) -> list[dict]:
    from . import weight_cache

    return weight_cache.prepare([(model["path"], model["sha256"])] + [(b["path"], b["sha256"]) for b in base],
                                lambda path: cold_load(path, common, settings.timeout_s))


def _measure_memory(plan: list, settings: HostSettings, common: dict, bar: Progress) -> dict:
    measurements = []
    for variant, stage, task, files, runs in plan:
        bar.step(f"memory: {variant}, {stage}{' ' + task if task else ''} (fresh process)")
        r = run_probe(dict(common, kind="memory", files=files, runs=runs, repeats=settings.memory_repeats),
                      settings.timeout_s)
        measurements.append({"variant": variant, "stage": stage, "task": task,
                             "xnnpack_cache": settings.resolved_cache, "before": r["before"],
                             "after_load": r["after_load"], "after": r["after_runs"],
                             "load_seconds": r["load_seconds"], "benchmark_model": None})
    return {"method": "fresh process per measurement, /proc/self/status and /proc/self/smaps_rollup (kB); "
                      "'before' is taken after the runtime is imported and set up, before any model is loaded",
            "units": "kB", "measurements": measurements, "ratios": memory_ratios(measurements),
            "versus_one_original": versus_one_original(measurements)}


def _measure_latency(model: dict, base: list[dict], settings: HostSettings, common: dict) -> dict:
    keys = model["tasks"] + ([model["joint_key"]] if model["joint_key"] else [])
    variants = {"zipped": [model["path"]]}
    jobs = [["zipped", 0, k] for k in keys]
    if base:
        variants["baselines"] = [b["path"] for b in base]
        jobs += [["baselines", i, b["task"]] for i, b in enumerate(base)]
    r = run_probe(dict(common, kind="latency", variants=variants, jobs=jobs, runs=settings.runs,
                       warmup=settings.resolved_warmup, rounds=min(5, settings.runs)), settings.timeout_s)
    entries = []
    for variant, _, key in jobs:
        s = stats(r["samples"][f"{variant}/{key}"])
        entries.append(latency_entry(variant, key, model, settings.resolved_cache, "host timer (time.perf_counter_ns)",
                                     s["n"], settings.resolved_warmup, s))
    return {"units": "us", "entries": entries, "ratios": latency_ratios(entries, model)}


def _measure_switching(model: dict, base: list[dict], settings: HostSettings, common: dict) -> dict:
    r = run_probe(dict(common, kind="switch", zipped=model["path"], keys=model["tasks"],
                       baselines={b["task"]: b["path"] for b in base}, steps=settings.resolved_switch_steps),
                  settings.timeout_s)
    modes = {name: stats(samples) for name, samples in r.items()}
    z = modes["zipped_switch_signature"]["median_us"]
    return {
        "sequence": ",".join((model["tasks"] * settings.resolved_switch_steps)[1:settings.resolved_switch_steps + 1]),
        "steps": settings.resolved_switch_steps, "units": "us", "modes": modes,
        "definitions": {
            "zipped_switch_signature": "one zipped file loaded; a step calls the next task's signature",
            "separate_one_resident": "one separate file resident at a time; a step unloads it, loads the "
                                     "next task's file and runs it",
            "separate_both_resident": "every separate file loaded; a step runs the next task's file"},
        "ratios": {"separate_one_resident_over_zipped": ratio(modes["separate_one_resident"]["median_us"], z),
                   "separate_both_resident_over_zipped": ratio(modes["separate_both_resident"]["median_us"], z)}}

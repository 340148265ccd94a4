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
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mtz_mobile.errors import MTZError

from mtz_mobile.fileio import sha256_of

from mtz_mobile.fileio import check_output, output_lock
from mtz_mobile.progress import Progress

from .common import default_warmup, ratio
from .memory import memory_ratios, versus_one_original
from .probe import CACHE_SUFFIX, MARKER, RUNTIMES, TRANSIENT_INDIRECTION_FLAGS

CACHE_STATES = ("on", "off", "file")
MEMORY_CACHE_PATH = ":memory"
FILE_CACHE_PATH = "MODEL" + CACHE_SUFFIX
RUNTIME_DETAIL = {
    "interpreter": "ai_edge_litert.interpreter.Interpreter (mtz_mobile.litert_runtime.make_interpreter), "
                   "XNNPACK applied by default; this runtime has no XNNPACK weight-cache option",
    "compiled": "ai_edge_litert.compiled_model.CompiledModel on HardwareAccelerator.CPU with "
                "CpuOptions(num_threads, xnnpack_weight_cache_path, xnnpack_flags), one shared LiteRT Environment per "
                "process",
}


@dataclass
class HostSettings:
    runtime: str = "interpreter"
    threads: int = 1
    runs: int = 50
    warmup: int | None = None
    xnnpack_cache: str | None = None  # None: file for compiled, off for interpreter (see resolve)
    transient_indirection: bool = False  # compiled only: XNNPACK's TRANSIENT_INDIRECTION_BUFFER flag
    switch_steps: int | None = None
    memory_repeats: int = 3
    timeout_s: float = 600.0
    cache_chosen_by: str = field(init=False, default="default")
    cache_path: str = field(init=False, default="")

    def resolve(self) -> "HostSettings":
        if self.runtime not in RUNTIMES:
            raise MTZError(f"unknown runtime {self.runtime!r}: use one of {', '.join(RUNTIMES)}")
        for name in ("threads", "runs", "memory_repeats"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise MTZError(f"{name} must be a whole number >= 1, got {value!r}")
        if self.warmup is None:
            self.warmup = default_warmup(self.runs)
        if self.warmup < 0:
            raise MTZError(f"warmup must be >= 0, got {self.warmup}")
        if self.switch_steps is None:
            self.switch_steps = max(4, min(self.runs, 50))
        if self.switch_steps < 2:
            raise MTZError(f"switch steps must be >= 2 to alternate tasks, got {self.switch_steps}")
        if self.xnnpack_cache is None:
            # file: the best loading measured (docs/RESULTS.md, issue 16): a warm load maps the packed
            # weights from the stamped cache file instead of packing them into anonymous memory
            self.xnnpack_cache = "file" if self.runtime == "compiled" else "off"
            self.cache_chosen_by = "default"
        else:
            if self.xnnpack_cache not in CACHE_STATES:
                raise MTZError(f"--xnnpack-cache must be on, off or file, got {self.xnnpack_cache!r}")
            self.cache_chosen_by = "user"
        if self.runtime == "interpreter" and self.xnnpack_cache != "off":
            raise MTZError("the interpreter runtime cannot turn XNNPACK's weight cache on (ai-edge-litert's "
                           f"Interpreter has no such option): use --runtime compiled --xnnpack-cache {self.xnnpack_cache}")
        if self.transient_indirection and self.runtime != "compiled":
            raise MTZError("--transient-indirection sets an XNNPACK flag through CpuOptions, which only the compiled "
                           "runtime has: use --runtime compiled")
        self.cache_path = {"on": MEMORY_CACHE_PATH, "file": FILE_CACHE_PATH}.get(self.xnnpack_cache, "")
        return self

    @property
    def xnnpack_flags(self) -> int | None:
        return TRANSIENT_INDIRECTION_FLAGS if self.transient_indirection else None

    def to_json(self) -> dict:
        return {"runtime": self.runtime, "runtime_detail": RUNTIME_DETAIL[self.runtime], "threads": self.threads,
                "runs": self.runs, "warmup": self.warmup, "xnnpack": True, "xnnpack_cache": self.xnnpack_cache,
                "xnnpack_cache_path": self.cache_path or None, "xnnpack_cache_chosen_by": self.cache_chosen_by,
                "xnnpack_transient_indirection": self.transient_indirection,
                "switch_steps": self.switch_steps, "memory_repeats": self.memory_repeats}


# ---------------------------------------------------------------- the files

def describe_model(path: str | os.PathLike) -> dict:
    """Bytes, checksum, signatures, tasks and the unique weight bytes of a .tflite."""
    from converters.inspection import inspect_model

    path = Path(path)
    if not path.is_file():
        raise MTZError(f"model {path} not found: give the path of a .tflite written by `mtz-mobile convert`")
    info = inspect_model(path)
    signatures = list(info["signatures"])
    if not signatures:
        raise MTZError(f"{path} has no signatures: convert it again with `mtz-mobile convert`")
    manifest = info["manifest"]
    inspected = sum(b["bytes"] for b in info["buffers"] if b["role"] in ("weights", "bias"))
    if manifest is not None:
        tasks = [t["signature_key"] for t in manifest["tasks"]]
        joint = manifest["joint"]["signature_key"] if manifest.get("joint") else None
        weight_bytes, source = int(manifest["sharing"]["file"]["weight_bytes"]), "manifest"
    else:
        from mtz_mobile.contract import JOINT_KEY

        tasks = [k for k in signatures if k != JOINT_KEY]
        joint = JOINT_KEY if JOINT_KEY in signatures else None
        weight_bytes, source = inspected, "inspect"
    missing = [k for k in tasks + ([joint] if joint else []) if k not in signatures]
    if missing:
        raise MTZError(f"{path}'s manifest names signature(s) {', '.join(missing)} the file lacks: convert it again")
    return {"path": str(path), "file_bytes": path.stat().st_size, "sha256": sha256_of(path),
            "signatures": signatures, "tasks": tasks, "joint_key": joint, "unique_weight_bytes": weight_bytes,
            "weight_bytes_source": source, "inspected_weight_bytes": inspected, "has_manifest": manifest is not None}


def match_baselines(model: dict, baselines) -> list[dict]:
    """Each baseline must be a single-signature file whose key is one of the model's tasks,
    one file per task."""
    out, seen = [], {}
    for b in baselines or []:
        info = describe_model(b)
        keys = [k for k in info["signatures"]]
        if len(keys) != 1:
            raise MTZError(f"baseline {b} has {len(keys)} signatures ({', '.join(keys)}): give single-task files "
                           "such as OUT_STEM.baseline_TASK.tflite from `mtz-mobile convert --baselines`")
        key = keys[0]
        if key not in model["tasks"]:
            raise MTZError(f"baseline {b} runs signature {key!r}, not a task of {model['path']} "
                           f"({', '.join(model['tasks'])}): give the baselines converted with this model")
        if key in seen:
            raise MTZError(f"baselines {seen[key]} and {b} both run task {key!r}: give one file per task")
        seen[key] = b
        out.append({"task": key, "path": info["path"], "file_bytes": info["file_bytes"], "sha256": info["sha256"],
                    "signature": key, "weight_bytes": info["inspected_weight_bytes"]})
    if out and set(seen) != set(model["tasks"]):
        missing = sorted(set(model["tasks"]) - set(seen))
        raise MTZError(f"no baseline for task(s) {', '.join(missing)}: give one baseline file per task")
    return sorted(out, key=lambda b: model["tasks"].index(b["task"]))


def storage_figures(model: dict, baselines: list[dict]) -> dict:
    floor = model["unique_weight_bytes"]
    zipped = model["file_bytes"]
    out = {"zipped_file_bytes": zipped, "unique_weight_bytes": floor, "weight_bytes_source": model["weight_bytes_source"],
           "zipped_over_floor_bytes": zipped - floor, "floor_ratio": ratio(zipped, floor),
           "baselines_file_bytes": None, "baselines_weight_bytes": None, "file_ratio": None,
           "saving_bytes": None, "saving_fraction": None}
    if baselines:
        total = sum(b["file_bytes"] for b in baselines)
        out.update(baselines_file_bytes=total, baselines_weight_bytes=sum(b["weight_bytes"] for b in baselines),
                   file_ratio=ratio(zipped, total), saving_bytes=total - zipped,
                   saving_fraction=(total - zipped) / total if total else None)
    return out


# ---------------------------------------------------------------- child processes

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


def stats(samples) -> dict:
    a = np.asarray(samples, dtype=np.float64)
    if a.size == 0:
        raise MTZError("no timing samples were taken: use --runs >= 1")
    return {"n": int(a.size), "median_us": float(np.median(a)), "p90_us": float(np.percentile(a, 90)),
            "mean_us": float(a.mean()), "min_us": float(a.min()), "max_us": float(a.max())}


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


TIME_FIELDS = ("median_us", "p90_us", "mean_us", "min_us", "max_us", "init_us", "first_us")


def latency_entry(variant: str, key: str, model: dict, cache: str, source: str, runs, warmup, times: dict) -> dict:
    """One report latency entry, host or Android; a figure the source does not give is None."""
    return {"variant": variant, "signature": key, "task": key if key in model["tasks"] else None,
            "xnnpack_cache": cache, "source": source, "runs": runs, "warmup": warmup,
            **{f: times.get(f) for f in TIME_FIELDS}}


def _compared(z: dict, parts: list[dict]) -> str:
    """The statistic both sides have: the median where every side has one, else the mean."""
    return "median_us" if all(e.get("median_us") is not None for e in [z] + parts) else "mean_us"


def latency_ratios(entries: list[dict], model: dict) -> list[dict]:
    med = {(e["variant"], e["signature"], e["xnnpack_cache"]): e for e in entries}
    out = []
    for cache in sorted({e["xnnpack_cache"] for e in entries}):
        for key in model["tasks"]:
            z, b = med.get(("zipped", key, cache)), med.get(("baselines", key, cache))
            if z and b:
                f = _compared(z, [b])
                out.append({"signature": key, "xnnpack_cache": cache, "statistic": f.replace("_us", ""),
                            "zipped_us": z[f], "baselines_us": b[f], "ratio": ratio(z[f], b[f]),
                            "note": "same signature, zipped file vs its own file"})
        joint = model["joint_key"]
        z = med.get(("zipped", joint, cache)) if joint else None
        parts = [med.get(("baselines", k, cache)) for k in model["tasks"]]
        if z and all(parts):
            f = _compared(z, parts)
            total = sum(p[f] for p in parts)
            out.append({"signature": joint, "xnnpack_cache": cache, "statistic": f.replace("_us", ""),
                        "zipped_us": z[f], "baselines_us": total, "ratio": ratio(z[f], total),
                        "note": "one call of the joint signature vs one call of every baseline in turn"})
    return out


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


def bench_host(model_path, baselines=(), settings: HostSettings | None = None, out_dir=None,
               progress: bool = True, **options) -> dict:
    """Measure ``model_path`` against ``baselines`` on this machine and return the report dict;
    with ``out_dir``, also write report.json, report.md and the charts there."""
    if settings is None:
        settings = HostSettings(**options)
    elif options:
        raise MTZError("give either settings or keyword options, not both")
    settings.resolve()
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
              "cache_beside": settings.xnnpack_cache == "file", "xnnpack_flags": settings.xnnpack_flags}
    cache_files = _prepare_cache_files(model, base, settings, common) if common["cache_beside"] else None
    report["memory"] = _measure_memory(plan, settings, common, bar)
    if cache_files is not None:
        report["memory"]["weight_cache_files"] = cache_files
    bar.step("latency: zipped and baselines interleaved")
    report["latency"] = _measure_latency(model, base, settings, common)
    if switch:
        bar.step(f"task switching: {settings.switch_steps} steps A,B,A,B… in three modes")
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
                             "xnnpack_cache": settings.xnnpack_cache, "before": r["before"],
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
                       warmup=settings.warmup, rounds=min(5, settings.runs)), settings.timeout_s)
    entries = []
    for variant, _, key in jobs:
        s = stats(r["samples"][f"{variant}/{key}"])
        entries.append(latency_entry(variant, key, model, settings.xnnpack_cache, "host timer (time.perf_counter_ns)",
                                     s["n"], settings.warmup, s))
    return {"units": "us", "entries": entries, "ratios": latency_ratios(entries, model)}


def _measure_switching(model: dict, base: list[dict], settings: HostSettings, common: dict) -> dict:
    r = run_probe(dict(common, kind="switch", zipped=model["path"], keys=model["tasks"],
                       baselines={b["task"]: b["path"] for b in base}, steps=settings.switch_steps),
                  settings.timeout_s)
    modes = {name: stats(samples) for name, samples in r.items()}
    z = modes["zipped_switch_signature"]["median_us"]
    return {
        "sequence": ",".join((model["tasks"] * settings.switch_steps)[1:settings.switch_steps + 1]),
        "steps": settings.switch_steps, "units": "us", "modes": modes,
        "definitions": {
            "zipped_switch_signature": "one zipped file loaded; a step calls the next task's signature",
            "separate_one_resident": "one separate file resident at a time; a step unloads it, loads the "
                                     "next task's file and runs it",
            "separate_both_resident": "every separate file loaded; a step runs the next task's file"},
        "ratios": {"separate_one_resident_over_zipped": ratio(modes["separate_one_resident"]["median_us"], z),
                   "separate_both_resident_over_zipped": ratio(modes["separate_both_resident"]["median_us"], z)}}

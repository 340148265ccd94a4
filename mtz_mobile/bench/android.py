"""Android bench: LiteRT's arm64 ``benchmark_model`` over adb, one run per (file, signature,
weight-cache setting), its output parsed into the same report as the host bench.

The lines parsed (LiteRT tflite/tools/benchmark/benchmark_model.cc; older TensorFlow Lite
releases printed the variants noted):

    Inference timings in us: Init: …, First inference: …, Warmup (avg): …, Inference (avg): …
    Average inference timings in us: Warmup: …, Init: …, Inference: …   (older; "no stats:" in the oldest)
    Memory footprint delta from the start of the tool (MB): init=… overall=…
    Peak memory footprint (MB): init=… overall=…                         (older name of the line above)
    Overall peak memory footprint (MB) via periodic monitoring: …        (--report_peak_memory_footprint)
    count=… first=… curr=… min=… max=… avg=… std=… [p5=… median=… p95=…] (the timed runs' statistics)
    -> Signature Key: …                                                  (--list_signatures)

Weight-cache states: off (no flag), on (``--xnnpack_weight_cache_file_path=:memory``), file (a cache
file on the device, one per file and signature: deleted first, built by a one-run cold start, then
the measured run loads it warm; ``report["android"]["cache_loads"]`` compares the two Init times).
"""

from __future__ import annotations

import contextlib
import posixpath
import re
import shlex
from pathlib import Path

from mtz_mobile.contract import XNNPACK_CACHE_SUFFIX
from mtz_mobile.errors import MTZError
from mtz_mobile.fileio import check_output, output_lock, sha256_of
from mtz_mobile.progress import Progress

from .core import describe_model, latency_entry, latency_ratios, match_baselines, ratio, storage_figures
from .settings import CACHE_FLAG, DEVICE_DIR, MEMORY_CACHE_PATH, AndroidSettings

EM_AARCH64 = 183

_NUM = r"([-+]?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)"
RE_TIMINGS = re.compile(r"Inference timings in us: Init: " + _NUM + r", First inference: " + _NUM +
                        r", Warmup \(avg\): " + _NUM + r", Inference \(avg\): " + _NUM)
RE_AVERAGE = re.compile(r"Average inference timings in us: Warmup: " + _NUM + r", Init: " + _NUM +
                        r", (?:Inference|no stats): " + _NUM)
RE_DELTA = re.compile(r"Memory footprint delta from the start of the tool \(MB\): init=" + _NUM + r" overall=" + _NUM)
RE_OLD_PEAK = re.compile(r"(?<!Overall )Peak memory footprint \(MB\): init=" + _NUM + r" overall=" + _NUM)
RE_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring: " + _NUM)
RE_COUNT = re.compile(r"count=(\d+) first=" + _NUM + r" curr=" + _NUM + r" min=" + _NUM + r" max=" + _NUM +
                      r" avg=" + _NUM + r" std=" + _NUM + r"(?: p5=" + _NUM + r" median=" + _NUM + r" p95=" + _NUM + r")?")
RE_VMRSS = re.compile(r"- VmRSS\s*:\s*" + _NUM + r" MB")
RE_ANON = re.compile(r"\+ RssAnnon\s*:\s*" + _NUM + r" MB")
RE_FILE = re.compile(r"\+ RssFile \+ RssShmem\s*:\s*" + _NUM + r" MB")
RE_SIZE = re.compile(r"The input model file size \(MB\): " + _NUM)
RE_SIGNATURE = re.compile(r"-> Signature Key: (\S+)")
RE_ERROR = re.compile(r"(?:ERROR|E/tflite[^:]*): (.+)")


def parse_benchmark_output(text: str) -> dict:
    """The figures of one benchmark_model run; a run without a timing line fails with the
    tool's own error line."""
    out = {"format": None, "init_us": None, "first_us": None, "warmup_avg_us": None, "inference_avg_us": None,
           "count": None, "min_us": None, "max_us": None, "std_us": None, "median_us": None, "p5_us": None,
           "p95_us": None, "init_mb": None, "overall_mb": None, "peak_mb": None, "memory_line": None,
           "end_vmrss_mb": None, "end_rss_anon_mb": None, "end_rss_file_mb": None, "model_size_mb": None}
    m = RE_TIMINGS.search(text)
    if m:
        out.update(format="modern", init_us=float(m[1]), first_us=float(m[2]), warmup_avg_us=float(m[3]),
                   inference_avg_us=float(m[4]))
    else:
        m = RE_AVERAGE.search(text)
        if m:
            out.update(format="average-timings", warmup_avg_us=float(m[1]), init_us=float(m[2]),
                       inference_avg_us=float(m[3]))
    if out["format"] is None:
        errors = [e.group(1).strip() for e in RE_ERROR.finditer(text)]
        lines = [l.strip() for l in text.splitlines() if l.strip()]
        reason = errors[0] if errors else (lines[-1] if lines else "no output")
        raise MTZError(f"benchmark_model printed no inference timings ({reason[:160]}): check the flags and that "
                       "the binary matches the model's ops")
    counts = list(RE_COUNT.finditer(text))
    if counts:  # the last statistics line is the timed runs (the one before it is the warm-up)
        c = counts[-1]
        out.update(count=int(c[1]), min_us=float(c[4]), max_us=float(c[5]), std_us=float(c[7]))
        if c[8] is not None:
            out.update(p5_us=float(c[8]), median_us=float(c[9]), p95_us=float(c[10]))
    m = RE_DELTA.search(text)
    if m:
        out.update(init_mb=float(m[1]), overall_mb=float(m[2]), memory_line="delta")
    else:
        m = RE_OLD_PEAK.search(text)
        if m:
            out.update(init_mb=float(m[1]), overall_mb=float(m[2]), memory_line="peak-footprint-old")
    for key, regex in (("peak_mb", RE_PEAK), ("end_vmrss_mb", RE_VMRSS), ("end_rss_anon_mb", RE_ANON),
                       ("end_rss_file_mb", RE_FILE), ("model_size_mb", RE_SIZE)):
        m = regex.search(text)
        if m:
            out[key] = float(m[1])
    return out


def parse_signature_list(text: str) -> list[str]:
    return [m.group(1) for m in RE_SIGNATURE.finditer(text)]


def check_benchmark_binary(path) -> Path:
    if path is None:
        raise MTZError("Android mode needs LiteRT's arm64 benchmark_model: give --benchmark-binary PATH (build it "
                       "with `bazel build -c opt --config=android_arm64 //tflite/tools/benchmark:benchmark_model` "
                       "or download LiteRT's prebuilt android_aarch64 benchmark_model)")
    path = Path(path)
    if not path.is_file():
        raise MTZError(f"benchmark binary {path} not found: give the path of LiteRT's arm64 benchmark_model")
    with open(path, "rb") as f:
        head = f.read(20)
    if len(head) < 20 or head[:4] != b"\x7fELF":
        raise MTZError(f"{path} is not an ELF executable: give LiteRT's Android arm64 benchmark_model binary")
    machine = int.from_bytes(head[18:20], "little" if head[5] == 1 else "big")
    if head[4] != 2 or machine != EM_AARCH64:
        raise MTZError(f"{path} is not a 64-bit ARM (aarch64) executable (ELF machine {machine}): give the "
                       "android_aarch64 build of benchmark_model")
    return path


def cache_path_for(cache: str, remote_graph: str, key: str) -> str | None:
    """The --xnnpack_weight_cache_file_path of one (file, signature) in a cache state. A file per
    signature: benchmark_model applies the delegate per run, and whether a cache built for one
    signature serves another cannot be checked on a device here, so none is shared."""
    if cache == "file":
        return f"{DEVICE_DIR}/{posixpath.basename(remote_graph)}.{key}{XNNPACK_CACHE_SUFFIX}"
    return MEMORY_CACHE_PATH if cache == "on" else None


def benchmark_command(binary: str, graph: str, key: str, threads: int, runs: int, warmup: int,
                      cache_path: str | None = None) -> str:
    flags = [f"--graph={graph}", f"--signature_to_run_for={key}", f"--num_threads={threads}",
             f"--num_runs={runs}", f"--warmup_runs={warmup}", "--use_xnnpack=true",
             "--report_peak_memory_footprint=true"]
    if cache_path is not None:
        flags.append(CACHE_FLAG.format(path=cache_path))
    return " ".join([shlex.quote(binary)] + [shlex.quote(f) for f in flags])


def measure(model_path, baselines=(), settings: AndroidSettings = AndroidSettings(), out_dir=None,
                  progress: bool = True) -> dict:
    """Run benchmark_model on the device for every task signature (and ``all``) of the zipped
    file and for each baseline, in each XNNPACK weight-cache state of ``settings.caches``; return the
    report (``mtz_mobile.bench.bench`` is the entry point for every target)."""
    binary = check_benchmark_binary(settings.benchmark_binary)
    model = describe_model(model_path)
    base = match_baselines(model, baselines)
    if out_dir is not None:
        check_output(out_dir, directory=True)
    with output_lock(out_dir) if out_dir is not None else contextlib.nullcontext():
        return _bench_android(model, base, binary, settings, out_dir, progress)


def _bench_android(model: dict, base: list[dict], binary: Path, settings: AndroidSettings, out_dir,
                   progress: bool) -> dict:
    from mtz_mobile.device import Adb, check_abi, device_info

    from .report import new_report, write_report

    caches, timeout_s = settings.caches, settings.timeout_s
    adb = Adb.connect(settings.serial, timeout_s=timeout_s)
    info = device_info(adb)
    check_abi(info)
    keys = model["tasks"] + ([model["joint_key"]] if model["joint_key"] else [])
    jobs = [("zipped", model["path"], k) for k in keys] + [("baselines", b["path"], b["task"]) for b in base]
    files = [model["path"]] + [b["path"] for b in base]
    bar = Progress(2 + len(files) + 1 + len(jobs) * len(caches) + int(out_dir is not None), label="bench android",
                   enabled=progress)
    bar.step(f"device {info['model']} ({info['serial']}, {info['abi']})")
    device_binary = f"{DEVICE_DIR}/benchmark_model"
    remote = _push_files(adb, binary, device_binary, files, bar)
    listed = _list_signatures(adb, device_binary, remote[model["path"]], keys, bar, timeout_s)

    environment = dict(info, benchmark_binary={"path": str(binary), "sha256": sha256_of(binary),
                                               "device_path": device_binary})
    report = new_report("android", settings.to_json(), environment, model, base)
    report["storage"] = storage_figures(model, base)
    done = _run_jobs(adb, device_binary, remote, jobs, settings, model, bar)
    report["memory"] = {"method": "LiteRT benchmark_model: 'Memory footprint delta from the start of the tool' "
                                  "(init/overall) and 'Overall peak memory footprint via periodic monitoring'",
                        "units": "MB", "measurements": done["measurements"],
                        "ratios": _memory_ratios(done["measurements"], model, caches)}
    report["latency"] = {"units": "us", "entries": done["entries"], "ratios": latency_ratios(done["entries"], model)}
    report["android"] = {"device_dir": DEVICE_DIR, "listed_signatures": listed or None, "runs": done["runs"],
                         "cache_loads": done["cache_loads"]}
    if out_dir is not None:
        bar.step(f"writing {out_dir}")
        write_report(report, out_dir)
    bar.close(f"bench: wrote {out_dir}" if out_dir is not None else None)
    return report


def _run_jobs(adb, device_binary: str, remote: dict, jobs: list, settings: AndroidSettings, model: dict,
              bar: Progress) -> dict:
    """Every (file, signature) in every cache state. Only the measured run of a job goes into the
    memory and latency figures; a file-state job's cold run is kept in runs and cache_loads."""
    out = {"runs": [], "measurements": [], "entries": [], "cache_loads": []}
    for cache in settings.caches:
        for variant, path, key in jobs:
            bar.step(f"benchmark_model: {variant} {Path(path).name} signature {key}, weight cache {cache}"
                     + (" (cold build, then warm)" if cache == "file" else ""))
            phases = _run_job(adb, device_binary, remote[path], key, settings, cache)
            for phase, command, parsed in phases:
                out["runs"].append({"variant": variant, "file": path, "signature": key, "xnnpack_cache": cache,
                                    "phase": phase, "command": command, "parsed": parsed})
            parsed = phases[-1][2]
            stage = "joint" if key == model["joint_key"] else "task"
            figures = {k: parsed[k] for k in ("init_mb", "overall_mb", "peak_mb")}
            out["measurements"].append({"variant": variant, "stage": stage, "task": key, "xnnpack_cache": cache,
                                        "before": None, "after_load": None, "after": None, "load_seconds": None,
                                        "benchmark_model": figures})
            times = dict(parsed, mean_us=parsed["inference_avg_us"], p90_us=None)
            out["entries"].append(latency_entry(variant, key, model, cache,
                                                f"benchmark_model ({parsed['format']} output)", parsed["count"],
                                                settings.resolved_warmup, times))
            if cache == "file":
                cold, warm = phases[0][2]["init_us"], parsed["init_us"]
                out["cache_loads"].append({"variant": variant, "signature": key,
                                           "cache_file": cache_path_for(cache, remote[path], key),
                                           "cold_init_us": cold, "warm_init_us": warm, "ratio": ratio(cold, warm)})
    return out


def _run_job(adb, device_binary: str, graph: str, key: str, settings: AndroidSettings,
             cache: str) -> list[tuple[str, str, dict]]:
    """(phase, command, parsed) of each benchmark_model run of one job, the measured run last. In
    the file state the cache is removed first, so that the cold run builds it from this model (a
    file left by another model would be served as it is: LiteRT does not check it)."""
    path = cache_path_for(cache, graph, key)
    plan = [("measured", settings.runs, settings.resolved_warmup)]
    timeout_s = settings.timeout_s
    if cache == "file":
        adb.shell(f"rm -f {shlex.quote(path)}", timeout_s=timeout_s)
        plan.insert(0, ("cold", 1, 0))
    out = []
    for phase, runs, warmup in plan:
        command = benchmark_command(device_binary, graph, key, settings.threads, runs, warmup, path)
        _, text = adb.shell(command, check=False, timeout_s=timeout_s)
        out.append((phase, command, parse_benchmark_output(text)))
    return out


def _push_files(adb, binary: Path, device_binary: str, files: list[str], bar: Progress) -> dict[str, str]:
    """Push benchmark_model and the model files; returns each file's path on the device."""
    from mtz_mobile.device import push_file

    bar.step("push benchmark_model")
    push_file(adb, binary, device_binary, mode="755")
    remote = {}
    for f in files:
        bar.step(f"push {Path(f).name}")
        remote[f] = push_file(adb, f, f"{DEVICE_DIR}/{Path(f).name}").remote
    return remote


def _list_signatures(adb, device_binary: str, remote_model: str, keys: list[str], bar: Progress,
                     timeout_s: float) -> list[str]:
    bar.step("list signatures")
    _, listing = adb.shell(f"{shlex.quote(device_binary)} --graph={shlex.quote(remote_model)} "
                           "--list_signatures=true", check=False, timeout_s=timeout_s)
    listed = parse_signature_list(listing)
    if listed and not set(keys) <= set(listed):
        raise MTZError(f"benchmark_model lists signatures {', '.join(listed)} but the manifest names "
                       f"{', '.join(keys)}: push the model again or convert it again")
    return listed


def _memory_ratios(measurements: list[dict], model: dict, caches: tuple) -> list[dict]:
    ratios = []
    by = {(m["variant"], m["task"], m["xnnpack_cache"]): m["benchmark_model"] for m in measurements}
    for cache in caches:
        for key in model["tasks"]:
            z, b = by.get(("zipped", key, cache)), by.get(("baselines", key, cache))
            if not (z and b):
                continue
            for metric in ("peak_mb", "overall_mb", "init_mb"):
                ratios.append({"stage": "task", "task": key, "metric": metric, "xnnpack_cache": cache,
                               "zipped": z[metric], "baselines": b[metric], "ratio": ratio(z[metric], b[metric])})
    return ratios
